"""The "external" detector: a real executable answering JSON (argv, no shell, timeout)."""
from __future__ import annotations

import stat
import sys

import pytest

from autoupdate.detect.external import ExternalDetector
from autoupdate.model import ChangeClass

from ansible_support import CliSource, ConfigRepo, context

H, D = ChangeClass.HOT, ChangeClass.DRAIN
MANAGED = ("n1", "n2", "n3", "n4")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ext")
    r = ConfigRepo(tmp / "repo")
    old = r.commit({"a.txt": "1\n"})
    new = r.commit({"a.txt": "2\n"})
    return CliSource(r, tmp / "trees"), old, new, tmp


def _script(tmp, name: str, body: str) -> str:
    path = tmp / name
    path.write_text(f"#!{sys.executable}\nimport json, os, sys, time\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


CASES = [
    # id, script body, expected classes or "ERROR: fragment"
    ("ok", 'print(json.dumps({"status": "ok", "reason": "kernel bump", "hot": "n[1-2]", "drain": "n2,n9", "good": "n3"}))',
     {"n1": H, "n2": D, "n3": ChangeClass.GOOD}),
    ("ok list form", 'print(json.dumps({"status": "ok", "drain": ["n4"]}))', {"n4": D}),
    ("status error", 'print(json.dumps({"status": "error", "reason": "image not built yet"}))',
     "ERROR: image not built yet"),
    ("invalid json", 'print("all good!")', "ERROR: invalid JSON"),
    ("not an object", 'print("[1, 2]")', "ERROR: not an object"),
    ("unknown status", 'print(json.dumps({"status": "maybe"}))', "ERROR: status 'maybe'"),
    ("unknown key", 'print(json.dumps({"status": "ok", "hots": "n1"}))', "ERROR: unknown key(s): hots"),
    ("bad hostlist", 'print(json.dumps({"status": "ok", "hot": "n[1-"}))', "ERROR: bad 'hot' list"),
    ("non-zero exit", 'print("boom", file=sys.stderr); sys.exit(3)', "ERROR: exited 3: boom"),
    ("timeout", 'time.sleep(10)', "ERROR: timed out"),
    ("gets its arguments",
     'old, new, repo = sys.argv[1:4]\n'
     'ok = len(old) == len(new) == 40 and os.path.isdir(repo) and os.environ["AUTOUPDATE_MANAGED"] == "n[1-4]"\n'
     'print(json.dumps({"status": "ok" if ok else "error", "reason": repr(sys.argv), "hot": "n1"}))', {"n1": H}),
]


@pytest.mark.parametrize("name,body,expected", CASES, ids=[c[0] for c in CASES])
def test_external_answers(repo, name, body, expected):
    source, old, new, tmp = repo
    prog = _script(tmp, name.replace(" ", "_") + ".py", body)
    verdict = ExternalDetector([prog], name="site-check", timeout=1.5).detect(context(source, old, new, MANAGED))
    if isinstance(expected, str):
        assert verdict.is_error, verdict
        assert expected.removeprefix("ERROR: ") in verdict.error
        assert verdict.error.startswith(prog)  # names the culprit
    else:
        assert not verdict.is_error, verdict.error
        assert dict(verdict.classes) == expected
        assert "n9" not in verdict.classes  # unmanaged: ignored


def test_placeholders_instead_of_appended_arguments(repo):
    source, old, new, tmp = repo
    prog = _script(tmp, "ph.py", 'print(json.dumps({"status": "ok", "reason": " ".join(sys.argv[1:]), "hot": "n2"}))')
    verdict = ExternalDetector([prog, "--new={new}", "--old", "{old}"]).detect(context(source, old, new, MANAGED))
    assert verdict.notes[0] == f"--new={new} --old {old}"
    assert dict(verdict.classes) == {"n2": H}


def test_missing_program_is_error(repo):
    source, old, new, _ = repo
    verdict = ExternalDetector(["/nonexistent/decide"]).detect(context(source, old, new, MANAGED))
    assert verdict.is_error and "/nonexistent/decide" in verdict.error and "not found" in verdict.error
