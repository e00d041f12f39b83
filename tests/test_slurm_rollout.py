"""Issue 3's scenarios: the real `autoupdate run` loop on a real git repository against the real
Slurm rig (4 slurmd), rebooting through `scontrol reboot` (the rig's RebootProgram boots what the
applier staged) and verifying what each node booted before resuming it."""
from __future__ import annotations

import time

import pytest
import yaml

from autoupdate.adapters.slurm_parse import text_time
from autoupdate.model import NodePhase
from rig.rollout import RolloutHarness, StateSampler, kill

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

HALTED = 3  # autoupdate run --exit-when-done: the rollout halted


def started_at(history: list[dict]) -> dict[str, float]:
    """When each node first left PENDING (its drain, or a HOT apply)."""
    out: dict[str, float] = {}
    for row in history:
        if row["node"] and row.get("from_phase") == "pending" and row.get("to_phase") in ("draining", "applying"):
            out.setdefault(row["node"], row["at"])
    return out


def finished_at(history: list[dict]) -> dict[str, float]:
    return {row["node"]: row["at"] for row in history if row["node"] and row.get("to_phase") == "done"}


def test_drain_change_canary_first_within_budget_and_jobs_complete(tmp_path, slurm_rig):
    rig = slurm_rig
    h = RolloutHarness(tmp_path, rig)
    h.baseline()
    boots = {n: rig.node_info(n)["BootTime"] for n in rig.nodes}
    job = rig.submit(["sleep", "14"], nodes="node003", time_limit="2")  # still running after the canary
    rig.wait_job(job, {"RUNNING"})
    sha = h.commit("kernel/version", "2", "new kernel")
    with StateSampler(rig) as sampler:
        code = h.run()
    assert code == 0, h.tail()
    assert rig.job_state(job) == "COMPLETED"  # drained around it, never killed
    recs = h.records()
    for node in rig.nodes:
        assert recs[node].phase is NodePhase.DONE and recs[node].target == sha
        assert rig.booted(node) == sha
        assert rig.node_info(node)["BootTime"] != boots[node]
    rig.wait_nodes_state({"IDLE"}, timeout=15)  # (a resumed node is briefly NOT_RESPONDING)
    assert sampler.ever("node003", "MIXED+DRAIN")  # it was draining while its job ran
    assert sampler.out_of_service() <= 2  # rollout.max_unavailable
    history = h.history()
    start, done = started_at(history), finished_at(history)
    canary = rig.nodes[0]
    assert all(start[n] >= done[canary] for n in rig.nodes[1:]), (start, done)


def test_hot_change_is_applied_without_draining(tmp_path, slurm_rig):
    rig = slurm_rig
    h = RolloutHarness(tmp_path, rig)
    h.baseline()
    boots = {n: rig.node_info(n)["BootTime"] for n in rig.nodes}
    job = rig.submit(["sleep", "20"], nodes="node002", time_limit="2")
    rig.wait_job(job, {"RUNNING"})
    sha = h.commit("motd/text", "hello", "new motd")
    with StateSampler(rig) as sampler:
        code = h.run(60)
    assert code == 0, h.tail()
    recs = h.records()
    for node in rig.nodes:
        assert recs[node].phase is NodePhase.DONE and rig.booted(node) == sha
        # No reboot. Slurm derives BootTime from slurmd's uptime each time it registers: +-1 s.
        assert abs(text_time(rig.node_info(node)["BootTime"]) - text_time(boots[node])) <= 2, node
    assert sampler.out_of_service() == 0  # never drained
    assert rig.job_state(job) == "RUNNING"  # the job went on meanwhile


def test_node_drained_by_a_human_is_never_touched(tmp_path, slurm_rig):
    rig = slurm_rig
    human = "node004"
    rig.scontrol("update", f"nodename={human}", "state=drain", "reason=bad DIMM, ticket 42")
    h = RolloutHarness(tmp_path, rig)
    h.baseline()
    reboots_before = len(rig.reboot_log())
    sha = h.commit("kernel/version", "3", "kernel")
    service = h.start()
    try:
        h.wait_records(lambda r: all(r.get(n) and r[n].phase is NodePhase.DONE
                                     for n in rig.nodes if n != human), what="the other nodes done")
        time.sleep(2)  # a few more ticks: still nothing done to the human's node
    finally:
        kill(service)
    info = rig.node_info(human)
    assert info["State"] == "IDLE+DRAIN" and info["Reason"].startswith("bad DIMM, ticket 42")
    assert rig.booted(human) == "initial"
    assert not any(l.endswith(human) for l in rig.reboot_log()[reboots_before:])
    assert h.records()[human].phase is not NodePhase.DONE
    assert all(rig.booted(n) == sha for n in rig.nodes if n != human)


def test_node_that_never_comes_back_is_retried_left_drained_and_the_rollout_halts(tmp_path, slurm_rig):
    rig = slurm_rig
    lost = "node002"
    rig.set_never_back(lost)
    for node in ("node003", "node004"):  # busy: they come after the idle node002
        rig.submit(["sleep", "120"], nodes=node, time_limit="3")
    h = RolloutHarness(tmp_path, rig, rollout={"max_unavailable": 1},
                       reboot={"strategy": "slurm", "timeout": 4})
    h.baseline()
    h.commit("kernel/version", "4", "kernel that one node does not survive")
    code = h.run(90)
    assert code == HALTED, h.tail()
    rec = h.records()[lost]
    assert rec.phase is NodePhase.FAILED and rec.attempts == 2
    assert "reboot" in rec.last_error and "timed out" in rec.last_error
    info = rig.node_info(lost)
    assert "DRAIN" in info["State"] and info["Reason"].startswith("autoupdate:")
    reboots = [l for l in rig.reboot_log() if l.endswith(f"RebootProgram {lost}")]
    assert len(reboots) >= 1
    # halted at the failure budget: the busy nodes were never drained, their jobs still run
    states = rig.node_states()
    assert states["node003"] == states["node004"] == "MIXED"
    assert h.records()["node001"].phase is NodePhase.DONE  # the canary had passed


def test_sigkill_while_draining_and_rebooting_then_restart_finishes_cleanly(tmp_path, slurm_rig):
    rig = slurm_rig
    h = RolloutHarness(tmp_path, rig, nodes={"canaries": ""}, rollout={"canary_count": 0, "max_unavailable": 4})
    h.baseline()
    job = rig.submit(["sleep", "15"], nodes="node004", time_limit="2")
    rig.wait_job(job, {"RUNNING"})
    sha = h.commit("kernel/version", "5", "kernel")
    service = h.start()
    try:
        h.wait_records(lambda r: any(x.phase is NodePhase.REBOOTING and x.action_done for x in r.values())
                       and r.get("node004") and r["node004"].phase is NodePhase.DRAINING,
                       timeout=60, what="one node rebooting while node004 drains")
    finally:
        kill(service)  # SIGKILL: no chance to clean up
    states = rig.node_states()
    assert any("DRAIN" in s for s in states.values())  # it died holding nodes
    assert h.run() == 0, h.tail()
    recs = h.records()
    for node in rig.nodes:
        assert recs[node].phase is NodePhase.DONE and rig.booted(node) == sha
    rig.wait_nodes_state({"IDLE"}, timeout=15)  # nothing left drained
    assert rig.job_state(job) == "COMPLETED"


def test_pause_stops_new_drains_and_resume_continues(tmp_path, slurm_rig):
    rig = slurm_rig
    h = RolloutHarness(tmp_path, rig, rollout={"max_unavailable": 1})
    h.baseline()
    sha = h.commit("kernel/version", "6", "kernel")
    service = h.start()
    try:
        h.wait_records(lambda r: r.get(rig.nodes[0]) and r[rig.nodes[0]].phase is not NodePhase.PENDING,
                       what="the canary started")
        assert h.cli("pause", "--reason", "testing pause").returncode == 0
        time.sleep(1.5)  # a tick or two to take it in
        h.wait_records(lambda r: not any(x.phase.out_of_service for x in r.values()),
                       timeout=60, what="work in flight to finish")
        started = {n for n, r in h.records().items() if r.phase is not NodePhase.PENDING}
        time.sleep(4)  # several ticks while paused
        assert {n for n, r in h.records().items() if r.phase is not NodePhase.PENDING} == started
        assert started != set(rig.nodes)
        rig.wait_nodes_state({"IDLE"}, timeout=15)  # nothing held while paused
        assert h.cli("resume").returncode == 0
        assert service.wait(120) == 0, h.tail()
    finally:
        if service.poll() is None:
            kill(service)
    recs = h.records()
    assert all(recs[n].phase is NodePhase.DONE and rig.booted(n) == sha for n in rig.nodes)


def test_reservation_strategy_lets_jobs_finish_and_removes_its_reservations(tmp_path, slurm_rig):
    rig = slurm_rig
    h = RolloutHarness(tmp_path, rig, nodes={"canaries": ""},
                       rollout={"canary_count": 0, "max_unavailable": 4, "drain_strategy": "reservation",
                                "reservation_seconds": 600})
    h.baseline()
    job = rig.submit(["sleep", "8"], nodes="node002", time_limit="1")
    rig.wait_job(job, {"RUNNING"})
    sha = h.commit("kernel/version", "7", "kernel")
    seen: set[str] = set()
    service = h.start()
    try:
        deadline = time.monotonic() + 90
        while service.poll() is None and time.monotonic() < deadline:
            out = rig.run(["scontrol", "-o", "show", "reservation"], check=False).stdout
            seen |= {w.split("=", 1)[1] for w in out.split() if w.startswith("ReservationName=")}
            time.sleep(0.3)
        assert service.wait(30) == 0, h.tail()
    finally:
        if service.poll() is None:
            kill(service)
    assert rig.job_state(job) == "COMPLETED"
    assert seen and all(name.startswith("autoupdate") for name in seen)  # it used reservations
    assert "No reservations" in rig.scontrol("-o", "show", "reservation")  # and removed them all
    recs = h.records()
    assert all(recs[n].phase is NodePhase.DONE and rig.booted(n) == sha for n in rig.nodes)
    rig.wait_nodes_state({"IDLE"}, timeout=15)


def test_reservation_strategy_slots_the_waves_while_the_canary_runs_and_opens_them_after_the_soak(
        tmp_path, slurm_rig):
    rig = slurm_rig
    soak = 4.0
    h = RolloutHarness(tmp_path, rig, rollout={"canary_count": 1, "soak_seconds": soak, "max_unavailable": 4,
                                               "drain_strategy": "reservation", "reservation_seconds": 600})
    h.baseline()
    canary, waves = rig.nodes[0], rig.nodes[1:]
    sha = h.commit("kernel/version", "8", "kernel")
    seen: list[tuple[float, set[str]]] = []  # (when, nodes holding an autoupdate reservation)
    service = h.start()
    try:
        deadline = time.monotonic() + 90
        while service.poll() is None and time.monotonic() < deadline:
            out = rig.run(["scontrol", "-o", "show", "reservation"], check=False).stdout
            seen.append((time.time(), {line.split("Nodes=", 1)[1].split()[0] for line in out.splitlines()
                                       if "ReservationName=autoupdate" in line}))
            time.sleep(0.2)
        assert service.wait(30) == 0, h.tail()
    finally:
        if service.poll() is None:
            kill(service)
    history = h.history()
    canary_done = finished_at(history)[canary]
    drained = {row["node"]: row["at"] for row in history if row.get("to_phase") == "drained"}
    # Slurm held every wave node in a reservation before the canary was through...
    assert any(set(waves) <= nodes for at, nodes in seen if at < canary_done), seen[:20]
    # ...and none of them was taken before the canary passed and soaked.
    assert all(drained[n] >= canary_done + soak - 0.5 for n in waves), (canary_done, drained)
    assert "No reservations" in rig.scontrol("-o", "show", "reservation")
    recs = h.records()
    assert all(recs[n].phase is NodePhase.DONE and rig.booted(n) == sha for n in rig.nodes)


def test_reservation_strategy_gives_way_to_a_wide_job_waiting_for_nodes(tmp_path, slurm_rig):
    """A 3-node job waits for three short jobs; the rollout cannot end before a longer job on the
    fourth node anyway. The slots of the three move out of the wide job's way: it starts as soon
    as the short jobs end, and only then are its nodes drained (head_job.py)."""
    rig = slurm_rig
    h = RolloutHarness(tmp_path, rig, nodes={"canaries": ""},
                       rollout={"canary_count": 0, "max_unavailable": 4, "drain_strategy": "reservation",
                                "reservation_seconds": 60})
    h.baseline()
    wave, last = rig.nodes[:3], rig.nodes[3]
    short = [rig.submit(["sleep", "15"], nodes=n, time_limit="1", exclusive=True) for n in wave]
    long = rig.submit(["sleep", "50"], nodes=last, time_limit="4", exclusive=True)
    for job in [*short, long]:
        rig.wait_job(job, {"RUNNING"})
    wide = rig.submit(["sleep", "5"], nodes=wave, time_limit="1", exclusive=True)
    sha = h.commit("kernel/version", "9", "kernel")
    assert h.run(150) == 0, h.tail()
    states = {j: rig.wait_job(j, {"COMPLETED", "FAILED", "CANCELLED", "NODE_FAIL", "TIMEOUT"})
              for j in [*short, long, wide]}
    assert set(states.values()) == {"COMPLETED"}, (states, wide, h.tail())  # none killed
    wide_start = text_time(rig.job_info(wide)["StartTime"])
    drained = {row["node"]: row["at"] for row in h.history() if row.get("to_phase") == "drained"}
    assert wide_start is not None and all(drained[n] >= wide_start for n in wave), (wide_start, drained)
    recs = h.records()
    assert all(recs[n].phase is NodePhase.DONE and rig.booted(n) == sha for n in rig.nodes)
    assert "No reservations" in rig.scontrol("-o", "show", "reservation")


def test_a_node_back_from_its_reboot_is_noticed_when_due_not_at_the_next_poll(tmp_path, slurm_rig):
    # A 15 s poll, one node at a time. The canary's reboot teaches how long a reboot takes here
    # (from Slurm's BootTime); each wave node is then looked at when it is due back and every
    # second after: noticed within seconds of its new BootTime, not up to 15 s later.
    rig = slurm_rig
    h = RolloutHarness(tmp_path, rig, rollout={"canary_count": 1, "soak_seconds": 0, "max_unavailable": 1})
    h.baseline()
    config = yaml.safe_load(h.config.read_text())
    config["control"].update(poll_interval=15, reboot_poll_interval=1)
    h.config.write_text(yaml.safe_dump(config))
    sha = h.commit("kernel/version", "9", "kernel")
    assert h.run(150) == 0, h.tail()
    back = {row["node"]: row["at"] for row in h.history()
            if row.get("from_phase") == "rebooting" and row.get("to_phase") == "verifying"}
    booted = {n: text_time(rig.node_info(n)["BootTime"]) for n in rig.nodes}
    late = {n: round(back[n] - booted[n], 1) for n in rig.nodes[1:]}
    assert all(-1 <= s <= 4 for s in late.values()), late  # BootTime: whole seconds, either way
    recs = h.records()
    assert all(recs[n].phase is NodePhase.DONE and rig.booted(n) == sha for n in rig.nodes)
