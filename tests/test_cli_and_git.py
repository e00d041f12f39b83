"""The CLI in-process and the real git source against real repositories."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import git
import pytest
import yaml
from click.testing import CliRunner

from autoupdate.adapters.git_source import GitSource
from autoupdate.cli import cli
from autoupdate.ports import SourceError


def make_repo(root: Path) -> tuple[Path, git.Repo]:
    bare = root / "cfg.git"
    git.Repo.init(bare, bare=True, initial_branch="main")
    work = git.Repo.init(root / "work", initial_branch="main")
    with work.config_writer() as cw:
        cw.set_value("user", "name", "t")
        cw.set_value("user", "email", "t@example.org")
    work.create_remote("origin", str(bare))
    commit(work, {"roles/ntp/tasks/main.yml": "- debug: msg=1\n"}, "initial")
    return bare, work


def commit(work: git.Repo, files: dict[str, str], msg: str, push: bool = True) -> str:
    for path, text in files.items():
        p = Path(work.working_tree_dir) / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    work.index.add(list(files))
    sha = work.index.commit(msg).hexsha
    if push:
        work.remotes.origin.push("+main:main")
    return sha


def write_config(tmp_path: Path, bare: Path, **sections) -> Path:
    data = {"repository": {"url": str(bare)}, "cluster": {"backend": "sim", "sim": {
        "partitions": {"a": "n[01-04]", "b": "n[05-08]"}, "jobs_per_node": 0.5,
        "reboot_seconds": 60, "job_seconds": [60, 600], "speed": 500}},
        "apply": {"backend": "sim"}, "reboot": {"strategy": "sim"},
        "control": {"state_dir": str(tmp_path / "state"), "poll_interval": 0.05, "log_level": "error"}}
    data.update(sections)
    path = tmp_path / "au.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_git_source_fetch_diff_read_checkout(tmp_path):
    bare, work = make_repo(tmp_path)
    src = GitSource(str(bare), "main", tmp_path / "clone")
    first = src.fetch()
    second = commit(work, {"roles/ntp/tasks/main.yml": "- debug: msg=2\n", "docs/x.md": "hi"}, "two")
    assert src.fetch().sha == second
    assert src.changed_paths(first.sha, second) == ["docs/x.md", "roles/ntp/tasks/main.yml"]
    assert src.is_ancestor(first.sha, second) and not src.is_ancestor(second, first.sha)
    assert src.read(second, "docs/x.md") == b"hi" and src.read(first.sha, "docs/x.md") is None
    tree = src.checkout(second)
    assert (tree / "roles/ntp/tasks/main.yml").read_text() == "- debug: msg=2\n"
    assert "roles/ntp/tasks/main.yml" in src.changed_paths(None, first.sha)


def test_git_source_force_push_and_missing_commit(tmp_path):
    bare, work = make_repo(tmp_path)
    src = GitSource(str(bare), "main", tmp_path / "clone")
    first = src.fetch().sha
    second = commit(work, {"a": "1"}, "two")
    src.fetch()
    work.git.reset("--hard", first)
    third = commit(work, {"b": "1"}, "rewritten")  # force-push
    assert src.fetch().sha == third
    assert not src.is_ancestor(second, third)
    with pytest.raises(SourceError, match="not found"):
        src.revision("0" * 40)
    assert not src.exists("0" * 40)


@pytest.mark.parametrize("url,branch,message", [
    ("/nonexistent/repo.git", "main", "cannot clone /nonexistent/repo.git"),
    (None, "nope", "cannot fetch nope"),
])
def test_git_source_errors_are_one_line(tmp_path, url, branch, message):
    bare, _ = make_repo(tmp_path)
    src = GitSource(url or str(bare), branch, tmp_path / "clone")
    with pytest.raises(SourceError) as exc:
        src.fetch()
    assert message in str(exc.value) and "\n" not in str(exc.value)


@pytest.fixture
def auth_server():
    """A real HTTP server that wants credentials for everything (401), as a private git host does."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


# A token in the repository URL never reaches a message (logs, Slack); git never asks on a terminal.
@pytest.mark.parametrize("url, shown", [
    ("http://alice:s3cretpw@{host}/x.git", "cannot clone http://alice:***@{host}/x.git: "),
    ("http://ghp_s3cretpw@{host}/x.git", "cannot clone http://***@{host}/x.git: "),
    ("http://{host}/x.git", "cannot clone http://{host}/x.git: "),  # no credentials: fails, no prompt
    ("fetch http://alice:s3cretpw@{host}/x.git", "cannot fetch main from http://alice:***@{host}/x.git: "),
])
def test_git_source_errors_never_show_a_token(tmp_path, auth_server, url, shown):
    workdir = tmp_path / "clone"
    if url.startswith("fetch "):  # cloned before; the configured URL changed since
        bare, _ = make_repo(tmp_path)
        GitSource(str(bare), "main", workdir).fetch()
        url = url.removeprefix("fetch ")
    src = GitSource(url.format(host=auth_server), "main", workdir, timeout=20)
    with pytest.raises(SourceError) as exc:
        src.fetch()
    message = str(exc.value)
    assert message.startswith(shown.format(host=auth_server)) and "s3cretpw" not in message, message
    assert "\n" not in message


def test_git_never_asks_for_credentials_on_the_admins_terminal(tmp_path, auth_server):
    """`autoupdate plan` run by hand has a terminal: git would ask it for a user name and hold the
    command until the fetch timeout. Here a real terminal (a pty) is the controlling one."""
    import os
    import pty
    import select
    import sys
    import time
    master, slave = pty.openpty()
    name = os.ttyname(slave)
    os.close(slave)
    script = ("import os, sys; os.setsid(); fd = os.open(sys.argv[1], os.O_RDWR); "  # the pty becomes /dev/tty
              "from autoupdate.adapters.git_source import GitSource; from autoupdate.ports import SourceError\n"
              "try: GitSource(sys.argv[2], 'main', sys.argv[3], timeout=8).fetch()\n"
              "except SourceError as e: print('ERROR', e)")
    proc = subprocess.Popen([sys.executable, "-c", script, name, f"http://{auth_server}/x.git", str(tmp_path / "c")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, deadline = b"", time.monotonic() + 60  # a prompting git is killed by the fetch timeout (8 s)
    while proc.poll() is None and time.monotonic() < deadline:
        if select.select([master], [], [], 0.2)[0]:
            try:
                seen += os.read(master, 1024)
            except OSError:  # EIO while no process has the terminal open
                time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
    out, err = proc.communicate(timeout=30)
    os.close(master)
    assert b"Username" not in seen, seen
    assert out.startswith(f"ERROR cannot clone http://{auth_server}/x.git: "), (out, err)


@pytest.mark.parametrize("text, expected", [
    ("https://alice:s3cret@h/x.git", "https://alice:***@h/x.git"),
    ("https://oauth2:glpat-A_b.c~d@gitlab.example.org:8443/g/r.git", "https://oauth2:***@gitlab.example.org:8443/g/r.git"),
    ("https://ghp_abc123@github.com/o/r.git", "https://***@github.com/o/r.git"),
    ("ssh://git@h/x.git", "ssh://git@h/x.git"),
    ("ssh://u:pw@h/x", "ssh://u:***@h/x"),
    ("git@github.com:o/r.git", "git@github.com:o/r.git"),
    ("/srv/git/x.git", "/srv/git/x.git"),
    ("fatal: from https://u:p@h/r and http://v:q@k/", "fatal: from https://u:***@h/r and http://v:***@k/"),
])
def test_without_password(text, expected):
    from autoupdate.adapters.git_source import without_password
    assert without_password(text) == expected


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_check_config_ok_and_errors(tmp_path):
    bare, _ = make_repo(tmp_path)
    good = write_config(tmp_path, bare)
    res = invoke("check-config", str(good))
    assert res.exit_code == 0 and "ok" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("repository: {url: x}\nrollout: {max_attempts: 0, typo: 1}\nnodes: {canaries: 'n[1-'}\n")
    res = invoke("check-config", str(bad))
    assert res.exit_code == 2
    for path in ("rollout.max_attempts", "rollout.typo", "nodes.canaries"):
        assert path in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("text,message", [
    ("repository: [unclosed", "invalid YAML"),
    (None, "cannot read"),
    (b"repository: {url: '\xff'}\n", "cannot read: not UTF-8 text (byte 20)"),
])
def test_check_config_unreadable(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    if text is not None:
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    res = invoke("check-config", str(path))
    assert res.exit_code == 2 and message in res.output and res.output.count("\n") == 1


def test_blacklist_overlap_refuses_to_start_naming_the_nodes(tmp_path):
    bare, _ = make_repo(tmp_path)
    cfg = write_config(tmp_path, bare, nodes={"blacklist": "n[01-03]", "canaries": "n[02-03],n05"})
    res = subprocess.run(["autoupdate", "-c", str(cfg), "run"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "n[02-03] in the blacklist and in the canaries" in res.stderr and "Traceback" not in res.stderr


def test_pause_resume_and_status(tmp_path):
    bare, work = make_repo(tmp_path)
    cfg = str(write_config(tmp_path, bare))
    res = invoke("-c", cfg, "status")
    assert res.exit_code == 2 and "no state yet" in res.output
    assert invoke("-c", cfg, "run", "--exit-when-done").exit_code == 0  # baseline only
    assert "paused" in invoke("-c", cfg, "pause", "--reason", "fixing the playbook").output
    res = invoke("-c", cfg, "status")
    assert "yes, since" in res.output and "fixing the playbook" in res.output
    import json
    data = json.loads(invoke("-c", cfg, "status", "--json").output)
    assert data["paused"] and data["paused_reason"] == "fixing the playbook"
    assert invoke("-c", cfg, "resume").output.strip() == "resumed"
    assert json.loads(invoke("-c", cfg, "status", "--json").output)["paused"] is False


@pytest.mark.parametrize("where", ["before the command", "after the command", "after, overriding before"])
def test_config_option_before_or_after_the_command(tmp_path, where):
    bare, _ = make_repo(tmp_path)
    cfg = str(write_config(tmp_path, bare))
    wrong = str(tmp_path / "missing.yaml")
    argv = {"before the command": [["-c", cfg, "pause", "--reason", "r"], ["-c", cfg, "status", "--json"]],
            "after the command": [["pause", "-c", cfg, "--reason", "r"], ["status", "--json", "--config", cfg]],
            "after, overriding before": [["-c", wrong, "pause", "-c", cfg], ["--config", wrong, "status", "-c", cfg]],
            }[where]
    res = invoke(*argv[0])
    assert res.exit_code == 0 and "paused" in res.output, res.output
    res = invoke(*argv[1])  # no state yet: named after this configuration's state_dir
    assert res.exit_code == 2 and f"no state yet in {tmp_path}" in res.output, res.output
    assert invoke("run", "--exit-when-done", "-c", cfg).exit_code == 0  # baseline only
    assert json.loads(invoke("status", "--json", "-c", cfg).output)["paused"] is True


def test_run_rolls_out_a_real_commit_and_history_shows_it(tmp_path):
    bare, work = make_repo(tmp_path)
    cfg = str(write_config(tmp_path, bare, nodes={"canaries": "n01"},
                           rollout={"soak_seconds": 0, "max_unavailable": 2}))
    assert invoke("-c", cfg, "run", "--exit-when-done").exit_code == 0
    sha = commit(work, {"roles/ntp/tasks/main.yml": "- debug: msg=3\n"}, "ntp change")
    plan = invoke("-c", cfg, "plan", "--json")
    import json
    data = json.loads(plan.output)
    assert data["head"] == sha and {r["class"] for r in data["nodes"]} == {"drain"}
    assert [r["node"] for r in data["nodes"] if r["order"] == 1][0] == "n01"  # the canary first
    res = subprocess.run(["autoupdate", "-c", cfg, "run", "--exit-when-done", "--max-seconds", "60"],
                         capture_output=True, text=True, timeout=90)
    assert res.returncode == 0, res.stderr[-2000:]
    hist = json.loads(invoke("-c", cfg, "history", "--json", "-n", "1000").output)
    assert hist["rollouts"][0]["target"] == sha and hist["rollouts"][0]["state"] == "done"
    assert any(t["to_phase"] == "rebooting" and t["node"] == "n01" for t in hist["transitions"])


def test_run_with_unknown_backend_is_one_line(tmp_path):
    bare, _ = make_repo(tmp_path)
    cfg = write_config(tmp_path, bare, cluster={"backend": "pyslurm"})
    res = subprocess.run(["autoupdate", "-c", str(cfg), "run"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "pyslurm" in res.stderr and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, culprit", [
    (["demo", "--nodes", "0"], "--nodes"),
    (["demo", "--nodes", "100000000"], "--nodes"),
    (["demo", "--speed", "0"], "--speed"),
    (["demo", "--speed", "-5"], "--speed"),
    (["history", "-n", "-5"], "--limit"),
    (["history", "-n", "0"], "--limit"),
    (["nodes", "--phase", "bogus"], "--phase"),
])
def test_bad_option_values_are_one_error_naming_the_option(argv, culprit):
    res = CliRunner().invoke(cli, argv)
    assert res.exit_code == 2 and culprit in res.output and "Traceback" not in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


@pytest.mark.parametrize("state", ["a file where the directory should be", "not a database"])
@pytest.mark.parametrize("command", [["run", "--exit-when-done"], ["status"], ["nodes"], ["history"], ["plan"],
                                     ["retry", "n01"]])
def test_an_unusable_state_database_is_one_line(tmp_path, state, command):
    bare, _ = make_repo(tmp_path)
    cfg = write_config(tmp_path, bare)
    if state == "not a database":
        (tmp_path / "state").mkdir()
        (tmp_path / "state" / "state.db").write_text("not sqlite " * 20)
    else:
        (tmp_path / "state").write_text("")
    res = CliRunner().invoke(cli, ["-c", str(cfg), *command])
    assert not isinstance(res.exception, Exception), res.exception  # SystemExit(2) only: no traceback
    assert res.exit_code == 2, res.output
    # Readers find no database where there is no directory; `run` cannot create one there, nor
    # `plan` its clone of the repository.
    expected = f"autoupdate: cannot open the state database {tmp_path}/state/state.db: "
    if state.startswith("a file"):
        expected = {"run": expected, "plan": f"autoupdate: cannot create {tmp_path}/state: "}.get(
            command[0], f"autoupdate: no state yet in {tmp_path}/state")
    line = res.output.strip()
    assert line.startswith(expected) and "\n" not in line, res.output


def test_demo_rolls_every_node_and_kills_nothing():
    from autoupdate.demo import run_demo
    summary = run_demo(nodes=16, speed=4000, quiet=True)
    assert summary["updated"] == summary["nodes"] == 16
    assert summary["jobs_killed"] == 0 and summary["rollout_state"] == "done"
    assert summary["canaries"] == ["node001", "node002"] or len(summary["canaries"]) == 2
    assert summary["wall_seconds"] < 60
