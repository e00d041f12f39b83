"""ansible_check's reading of the event stream, on event files in the callback plugin's format
(the real ansible-playbook runs are in test_ansible_apply.py)."""
from __future__ import annotations

import json

import pytest

from autoupdate.adapters.ansible_run import PlaybookRun, read_events
from autoupdate.detect.ansible_check import AnsibleCheckDetector
from autoupdate.adapters.ansible_run import AnsibleOptions
from autoupdate.model import ChangeClass

H, D = ChangeClass.HOT, ChangeClass.DRAIN


def task(host, name, status, tags=(), changed=None, msg="", ignored=False):
    rec = {"event": "task", "host": host, "task": name, "status": status, "tags": list(tags),
           "role": "", "play": "p", "msg": msg, "ignored": ignored}
    rec["changed"] = status == "changed" if changed is None and status in ("ok", "changed") else changed
    return rec


def stats(**hosts):
    return {"event": "stats", "hosts": {h: {"ok": 1, "failures": f, "unreachable": u, "changed": 0}
                                        for h, (f, u) in hosts.items()}}


CASES = [
    ("hot and drain by tag",
     [task("n1", "motd", "changed", ["hotchange"]), task("n2", "kernel", "changed", ["drainchange"]),
      task("n3", "motd", "ok", ["hotchange"]), stats(n1=(0, 0), n2=(0, 0), n3=(0, 0))],
     "drain", {"n1": H, "n2": D}),
    ("untagged change is drain",
     [task("n1", "x", "changed", ["other"]), stats(n1=(0, 0))], "drain", {"n1": D}),
    ("no_log hides changed: counts as changed",
     [task("n1", "secret", "ok", ["hotchange"], changed=None) | {"changed": None}, stats(n1=(0, 0))],
     "drain", {"n1": H}),
    ("ignored failure is not a failure",
     [task("n1", "probe", "failed", ["hotchange"], msg="nope", ignored=True), stats(n1=(0, 0))], "drain", {}),
    ("unreachable reported as drain",
     [task("n4", "motd", "unreachable", msg="ssh refused"), stats(n4=(0, 1))], "drain", {"n4": D}),
    ("check failure reported as drain",
     [task("n2", "cmd", "failed", msg="no such file"), stats(n2=(1, 0))], "drain", {"n2": D}),
    ("unreachable: error", [task("n4", "motd", "unreachable", msg="x"), stats(n4=(0, 1))], "error",
     "ERROR: check incomplete on n4"),
    ("run stopped early", [task("n1", "motd", "changed", ["hotchange"])], "drain", "ERROR: did not finish"),
    ("host outside the inventory", [stats(n1=(0, 0))], "drain", {}),
]


@pytest.mark.parametrize("name,records,unreachable,expected", CASES, ids=[c[0] for c in CASES])
def test_check_verdict_from_events(tmp_path, name, records, unreachable, expected):
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"event": "task", "host"')  # cut line
    hosts, saw_stats = read_events(path)
    run = PlaybookRun(0 if saw_stats else 4, hosts, 1.0, "ERROR! something", saw_stats)
    verdict = AnsibleCheckDetector(AnsibleOptions(), unreachable=unreachable).verdict(run, ("n1", "n2", "n3", "n4"))
    if isinstance(expected, str):
        assert verdict.is_error and expected.removeprefix("ERROR: ") in verdict.error, verdict
    else:
        assert not verdict.is_error, verdict.error
        assert dict(verdict.classes) == expected
        notes = "\n".join(verdict.notes)
        for node in expected:
            assert node in notes  # every classed node is explained
        if "unreachable" in name:
            assert "unreachable, not checked" in notes and "ssh refused" in notes
