"""The Prometheus endpoint: scraped over HTTP; a busy port is a log line, not a crash."""
from __future__ import annotations

import socket
import urllib.request

import pytest
from structlog.testing import capture_logs

from autoupdate.metrics import Metrics
from autoupdate.model import ChangeClass, Event, NodePhase, NodeRecord, Rollout, RolloutState
from autoupdate.progress import duration, summarise


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def rec(node, phase, rid=1) -> NodeRecord:
    return NodeRecord(node=node, phase=phase, target="a" * 40, rollout_id=rid, klass=ChangeClass.DRAIN)


def test_scrape_after_update():
    m = Metrics()
    port = free_port()
    assert m.start(f"127.0.0.1:{port}")
    try:
        m.update(records=[rec("n1", NodePhase.DONE), rec("n2", NodePhase.DRAINING), rec("n3", NodePhase.DONE)],
                 rollouts=[Rollout(1, "a" * 40, RolloutState.WAVES, 0, 0), Rollout(0, "b" * 40, RolloutState.HALTED, 0, 0)],
                 paused=True, tick_ok=True, now=1234.5, eta_seconds=60, read_seconds=0.25)
        m.notify(Event("node.failed", "x", nodes=("n9",)))
        m.notify(Event("node.attempt_failed", "x", nodes=("n8",)))
        m.notify(Event("node.attempt_failed", "x", nodes=("n8",)))
        got = scrape(port)
    finally:
        m.stop()
    assert got['autoupdate_nodes{phase="done"}'] == 2
    assert got['autoupdate_nodes{phase="draining"}'] == 1
    assert got['autoupdate_nodes{phase="failed"}'] == 0
    assert got['autoupdate_rollouts{state="waves"}'] == 1
    assert got['autoupdate_rollouts{state="halted"}'] == 1
    assert got['autoupdate_node_failures_total{kind="final"}'] == 1
    assert got['autoupdate_node_failures_total{kind="attempt"}'] == 2
    assert got["autoupdate_last_successful_tick_timestamp_seconds"] == 1234.5
    assert got["autoupdate_paused"] == 1
    assert got["autoupdate_rollout_eta_seconds"] == 60
    assert got["autoupdate_cluster_read_seconds"] == 0.25
    assert got['autoupdate_rollout_info{rollout="1",state="waves",target="aaaaaaaaaaaa"}'] == 1


def test_failed_tick_does_not_move_last_success():
    m = Metrics()
    m.update(records=[], rollouts=[], paused=False, tick_ok=True, now=100.0)
    m.update(records=[], rollouts=[], paused=False, tick_ok=False, now=200.0)
    assert m.registry.get_sample_value("autoupdate_last_successful_tick_timestamp_seconds") == 100.0
    assert m.registry.get_sample_value("autoupdate_ticks_total", {"result": "error"}) == 1


def test_port_in_use_is_a_log_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with capture_logs() as logs:
            assert Metrics().start(f"127.0.0.1:{port}") is False
    assert logs[0]["event"] == "metrics endpoint not started; carrying on without it"


def test_off_by_default():
    assert Metrics().start("") is False


@pytest.mark.parametrize("done,total,elapsed,eta", [
    (0, 4, 100, None), (1, 4, 100, 300), (2, 4, 100, 100), (4, 4, 100, 0.0),
])
def test_eta(done, total, elapsed, eta):
    records = [rec(f"n{i}", NodePhase.DONE if i < done else NodePhase.PENDING) for i in range(total)]
    records.append(rec("other", NodePhase.DRAINING, rid=7))  # another rollout: not counted
    p = summarise(Rollout(1, "a" * 40, RolloutState.WAVES, created_at=1000, updated_at=1000), records, 1000 + elapsed)
    assert p.total == total and p.eta_seconds == eta


@pytest.mark.parametrize("seconds,text", [(5, "5s"), (600, "10 min"), (7200, "2h 00m"), (200000, "2d 7h")])
def test_duration(seconds, text):
    assert duration(seconds) == text
