"""status / nodes / history / retry / skip, checked in-process (click's CliRunner) against the
state a real (simulated) rollout left behind: one node never comes back from its reboot."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from autoupdate.cli import cli
from autoupdate.config import load_config
from autoupdate.daemon import Service
from autoupdate.model import NodePhase
from autoupdate.store import Store
from rig.service import Setup

KERNEL = "roles/kernel/tasks/main.yml"


@pytest.fixture(scope="module")
def rolled(tmp_path_factory):
    """A finished rollout over 8 simulated nodes in which node05 failed for good."""
    root = tmp_path_factory.mktemp("cli")
    setup = Setup(root, cluster={"backend": "sim", "sim": {
        "partitions": {"batch": "node[01-04]", "gpu": "node[05-08]"}, "reboot_seconds": 60,
        "job_seconds": [60, 300], "jobs_per_node": 0.5, "speed": 600, "seed": 7, "fail_nodes": "node05"}},
        rollout={"canary_count": 1, "soak_seconds": 0, "max_unavailable": "50%", "max_attempts": 1},
        reboot={"strategy": "sim", "timeout": 600},
        windows={"drain": {"timezone": "Europe/Berlin",
                           "open": [{"days": "daily", "start": "00:00", "end": "24:00"}]}})
    Service(load_config(setup.config_path), str(setup.config_path)).run(exit_when_done=True, max_seconds=20)
    setup.commit(KERNEL, "kernel 6\n", "new kernel")
    Service(load_config(setup.config_path), str(setup.config_path)).run(exit_when_done=True, max_seconds=60)
    return setup


def invoke(setup: Setup, *args: str):
    return CliRunner().invoke(cli, ["--config", str(setup.config_path), *args], catch_exceptions=False)


def test_status_table(rolled):
    out = invoke(rolled, "status")
    assert out.exit_code == 0, out.output
    text = out.output
    for needle in ("head", "rollout", "'new kernel'", "paused", "no", "nodes", "done 7", "failed 1",
                   "progress", "8/8 finished", "drain window", "open", "hot window", "failed", "node05"):
        assert needle in text, (needle, text)


def test_status_json(rolled):
    out = invoke(rolled, "status", "--json")
    data = json.loads(out.output)
    assert data["rollout"]["summary"] == "new kernel"
    assert data["phases"] == {"done": 7, "failed": 1}
    assert data["progress"]["total"] == 8 and data["progress"]["failed"] == 1
    assert data["progress"]["eta_seconds"] == 0.0
    assert data["windows"]["drain"]["state"] == "open" and data["windows"]["hot"]["state"] == "open"
    assert [n for n, _ in data["failed"]] == ["node05"]
    assert data["paused"] is False


def test_status_shows_nodes_giving_way_to_the_head_job(rolled):
    """What the engine records while it gives way (engine/head_job.py), as status shows it."""
    store = Store(rolled.root / "state" / "state.db")
    way = {"why": "giving way to job 42 (3 nodes, planned to start in 600s)", "until": 1.7e9,
           "nodes": ["node01", "node02", "node03"]}
    try:
        store.set_meta("giving_way", json.dumps(way))
        assert json.loads(invoke(rolled, "status", "--json").output)["giving_way"] == way
        text = invoke(rolled, "status").output
        assert "giving way" in text and "node[01-03]: giving way to job 42" in text, text
    finally:
        store.set_meta("giving_way", "{}")
        store.close()
    assert "giving way" not in invoke(rolled, "status").output


def test_status_shows_pause_and_closed_window(rolled, tmp_path):
    invoke(rolled, "pause", "--reason", "kernel bug")
    try:
        data = json.loads(invoke(rolled, "status", "--json").output)
        assert data["paused"] is True and data["paused_reason"] == "kernel bug" and data["paused_since"]
        assert "kernel bug" in invoke(rolled, "status").output
    finally:
        invoke(rolled, "resume")
    # A drain window that never opens today: the status says when it opens.
    cfg = rolled.changed(windows={"timezone": "UTC", "drain": {"blackout": ["2000-01-01..2099-12-31"]}})
    other = tmp_path / "closed.yaml"
    import yaml
    other.write_text(yaml.safe_dump(cfg))
    out = CliRunner().invoke(cli, ["--config", str(other), "status", "--json"])
    assert json.loads(out.output)["windows"]["drain"] == {"state": "closed", "next_open": None}


def test_nodes(rolled):
    rows = json.loads(invoke(rolled, "nodes", "--json").output)
    assert len(rows) == 8
    failed = [r for r in rows if r["phase"] == "failed"]
    assert [r["node"] for r in failed] == ["node05"] and failed[0]["last_error"]
    assert json.loads(invoke(rolled, "nodes", "node[01-02]", "--json").output)[0]["node"] == "node01"
    only = json.loads(invoke(rolled, "nodes", "--phase", "failed", "--json").output)
    assert [r["node"] for r in only] == ["node05"]
    table = invoke(rolled, "nodes").output
    assert "node05" in table and "failed" in table and "yes" in table  # node01 is the canary


def test_history(rolled):
    data = json.loads(invoke(rolled, "history", "--json", "--node", "node05").output)
    assert [r["summary"] for r in data["rollouts"]][:1] == ["new kernel"]
    to = [t["to_phase"] for t in data["transitions"]]
    assert "failed" in to and "draining" in to
    assert {t["node"] for t in data["transitions"]} == {"node05"}
    assert "node05" in invoke(rolled, "history").output


def test_retry_and_skip_are_queued_for_the_service(rolled):
    out = invoke(rolled, "retry", "node[01,05]")
    assert out.exit_code == 0
    assert "retry queued for node05" in out.output
    assert "node01: not failed (done), left alone" in out.output
    nothing = invoke(rolled, "skip", "node01", "--json")
    assert nothing.exit_code == 1
    assert json.loads(nothing.output) == {"action": "skip", "queued": [], "not_failed": {"node01": "done"}}
    bad = invoke(rolled, "retry", "node[01")
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    # The service carries the request out at its next tick.
    service = Service(load_config(rolled.config_path), str(rolled.config_path))
    try:
        service.supervision.before_tick(service)
        rec = service.store.record("node05")
        assert rec.phase is NodePhase.RETRY_WAIT and rec.attempts == 0
        assert not list((rolled.root / "state" / "requests").glob("*.json"))
        # And a skip of a failed node.
        service.engine._transition(rec, NodePhase.FAILED, service.engine.clock.now(), "failed again (test)")
    finally:
        service.engine.shutdown()
        service.store.close()
    assert invoke(rolled, "skip", "node05").exit_code == 0
    service = Service(load_config(rolled.config_path), str(rolled.config_path))
    try:
        service.supervision.before_tick(service)
        assert service.store.record("node05").phase is NodePhase.SKIPPED
    finally:
        service.engine.shutdown()
        service.store.close()
