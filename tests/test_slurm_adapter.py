"""Contract tests of the workload-manager adapters on the real Slurm test cluster (tests/rig).

The same tests run for every way of reading Slurm: the commands with JSON output, the commands
with text output, and pyslurm (skipped where pyslurm cannot be imported).
"""
from __future__ import annotations

import time

import pytest

from autoupdate import proc
from autoupdate.adapters.slurm import SlurmRebooter, SlurmWorkloadManager
from autoupdate.model import REASON_PREFIX, ChangeClass, NodeBase, NodePhase, NodeRecord
from autoupdate.ports import WorkloadManager, WorkloadManagerError

pytestmark = pytest.mark.slurm

BACKENDS = ["json", "text", "pyslurm"]


def make_wm(kind: str, rig, **kw):
    if kind == "pyslurm":
        from autoupdate.adapters import pyslurm_wm
        if not pyslurm_wm.available():
            pytest.skip(f"pyslurm not importable ({pyslurm_wm.import_error()}): it cannot be built "
                        "against this machine's Slurm 22.05 (pyslurm 25.11 needs libslurm 25.11)")
        return pyslurm_wm.PyslurmWorkloadManager(**kw)
    return SlurmWorkloadManager(slurm_conf=str(rig.conf), use_json="yes" if kind == "json" else "no", **kw)


@pytest.fixture(params=BACKENDS)
def wm(request, slurm_rig):
    return make_wm(request.param, slurm_rig)


def wait_for(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_snapshot_reads_every_node_with_a_constant_number_of_commands(wm, slurm_rig):
    assert isinstance(wm, WorkloadManager)
    wm.snapshot()  # the first one also reads the Slurm version
    proc.CALLS.clear()
    snap = wm.snapshot()
    assert sorted(snap.nodes) == slurm_rig.nodes
    for info in snap.nodes.values():
        assert info.base is NodeBase.IDLE and not info.flags and info.state_known
        assert info.partitions == ("batch",)
        assert info.boot_time and abs(info.boot_time - time.time()) < 3600
    # pyslurm runs no commands at all; text output needs a second squeue for the pending jobs
    assert sum(proc.CALLS.values()) == (0 if not isinstance(wm, SlurmWorkloadManager) else 3 if wm.json_mode() else 4)


def test_jobs_are_listed_with_nodes_and_expected_end(wm, slurm_rig):
    job = slurm_rig.submit(["sleep", "30"], nodes="node002,node003", time_limit="3")
    slurm_rig.wait_job(job, {"RUNNING"})
    snap = wm.snapshot()
    (j,) = [j for j in snap.jobs if j.job_id == job]
    assert j.nodes == ("node002", "node003")
    assert j.end_time - j.start_time == pytest.approx(180, abs=1)
    assert snap.busy("node002") and not snap.busy("node001")
    assert snap.idle_at("node003") == j.end_time


def test_jobs_waiting_for_nodes_are_listed_held_ones_are_not(wm, slurm_rig):
    """The head job autoupdate gives way to (engine/head_job.py): what it needs, for how long."""
    busy = slurm_rig.submit(["sleep", "60"], nodes=slurm_rig.nodes[0], time_limit="2", exclusive=True)
    slurm_rig.wait_job(busy, {"RUNNING"})
    wide = slurm_rig.submit("true", nodes=slurm_rig.nodes, time_limit="7", exclusive=True)
    held = slurm_rig.submit("true", nodes=slurm_rig.nodes, time_limit="3", exclusive=True)
    slurm_rig.run(["scontrol", "hold", held])
    pending = wait_for(lambda: wm.snapshot().pending, what="a job waiting for nodes")
    assert [(p.job_id, p.nodes, p.time_limit, p.partition) for p in pending] == \
        [(wide, len(slurm_rig.nodes), 420.0, "batch")]


def test_drain_and_resume_a_list_in_one_command_job_runs_to_completion(wm, slurm_rig):
    job = slurm_rig.submit(["sleep", "3"], nodes="node002", time_limit="2")
    slurm_rig.wait_job(job, {"RUNNING"})
    reason = f"{REASON_PREFIX} 0123456789ab drain rollout 7"
    proc.CALLS.clear()
    wm.drain(["node001", "node002"], reason)
    assert sum(proc.CALLS.values()) <= 1
    snap = wm.snapshot()
    assert snap.nodes["node001"].describe() == "IDLE+DRAIN+DRAINED"
    assert snap.nodes["node002"].describe() == "MIXED+DRAIN+DRAINING"
    assert all(snap.nodes[n].drained_by_autoupdate and snap.nodes[n].reason == reason
               for n in ("node001", "node002"))
    assert slurm_rig.wait_job(job, {"COMPLETED", "CANCELLED", "FAILED", "NODE_FAIL"}) == "COMPLETED"
    wait_for(lambda: wm.snapshot().nodes["node002"].describe() == "IDLE+DRAIN+DRAINED", what="drained")
    wm.resume(["node001", "node002", "node003"])  # node003 is not drained: must not fail
    snap = wait_for(lambda: (s := wm.snapshot()) and all(i.base is NodeBase.IDLE and not i.flags
                                                          for i in s.nodes.values()) and s, what="idle")
    assert not any(i.reason for i in snap.nodes.values())


def test_human_drain_is_seen_as_not_ours(wm, slurm_rig):
    slurm_rig.scontrol("update", "nodename=node004", "state=drain", "reason=bad dimm, ticket 42")
    info = wm.snapshot().nodes["node004"]
    assert info.drained and not info.drained_by_autoupdate
    assert (info.reason, info.reason_user) == ("bad dimm, ticket 42", "root")


def test_a_reason_and_a_job_name_that_are_not_utf8_are_read(wm, slurm_rig):
    """Typed in a Latin-1 terminal: the raw byte reaches Slurm and comes back in every read."""
    latin1 = b"caf\xe9".decode("utf-8", "surrogateescape")  # argv carries it as the byte 0xe9
    slurm_rig.scontrol("update", "nodename=node004", "state=drain", f"reason=disk {latin1}")
    job = slurm_rig.submit(["sleep", "30"], nodes="node002", time_limit="2", name=f"run-{latin1}")
    slurm_rig.wait_job(job, {"RUNNING"})
    snap = wm.snapshot()
    info = snap.nodes["node004"]
    assert info.drained and not info.drained_by_autoupdate and info.reason.startswith("disk caf"), info.reason
    assert [j.nodes for j in snap.jobs if j.job_id == job] == [("node002",)]


@pytest.mark.parametrize("nextstate", ["DOWN", "RESUME"])
def test_reboot_through_slurm_then_verify_then_resume(wm, slurm_rig, nextstate):
    """What the engine does: drain, reboot (RebootProgram boots the staged image), poll until
    back, verify, resume. nextstate=DOWN keeps the node out of service until resume."""
    wm.reboot_nextstate = nextstate
    node = "node003"
    slurm_rig.stage(node, "commit-2")
    wm.drain([node], f"{REASON_PREFIX} c0ffee drain rollout 1")
    before = wm.snapshot()
    rec = NodeRecord(node=node, phase=NodePhase.REBOOTING, target="c0ffee" * 6, rollout_id=1,
                     klass=ChangeClass.DRAIN, since=time.time(), action_done=True,
                     boot_time_before=before.nodes[node].boot_time)
    time.sleep(1.1)  # boot times have a 1 s resolution
    rebooter = SlurmRebooter(wm, timeout=30)
    rebooter.start(rec, before)
    seen = set()

    def back():
        snap = wm.snapshot()
        seen.add(snap.nodes[node].describe())
        status = rebooter.poll(rec, snap, time.time())
        assert status.state != "failed", status.message
        return status.state == "done"
    wait_for(back, timeout=30, what="reboot done")
    assert slurm_rig.booted(node) == "commit-2"
    assert any("REBOOT" in s for s in seen)
    info = wm.snapshot().nodes[node]
    assert info.boot_time > before.nodes[node].boot_time
    if nextstate == "DOWN":
        # held out of service, drained with autoupdate's reason, until the engine resumes it
        # (a drain of a DOWN node shows IDLE+DRAIN or DOWN+DRAIN until slurmctld pings it)
        assert info.describe() in ("IDLE+DRAIN+DRAINED", "DOWN+DRAIN+DRAINED") and info.drained_by_autoupdate
        assert info.reason.startswith(REASON_PREFIX) and "reboot issued" not in info.reason
        wm.resume([node])
    wait_for(lambda: wm.snapshot().nodes[node].describe() == "IDLE", what="node IDLE")


def test_reboot_of_a_node_that_never_comes_back_times_out_drained(wm, slurm_rig):
    node = "node004"
    slurm_rig.set_never_back(node)
    wm.drain([node], f"{REASON_PREFIX} c0ffee drain rollout 1")
    snap = wm.snapshot()
    rec = NodeRecord(node=node, phase=NodePhase.REBOOTING, target="c0ffee" * 6, rollout_id=1,
                     klass=ChangeClass.DRAIN, since=time.time(), action_done=True,
                     boot_time_before=snap.nodes[node].boot_time)
    rebooter = SlurmRebooter(wm, timeout=3)
    rebooter.start(rec, snap)
    wait_for(lambda: slurm_rig.reboot_log() and not slurm_rig.slurmd_running(node), what="node down")
    status = wait_for(lambda: (s := rebooter.poll(rec, wm.snapshot(), time.time())).state != "in_progress" and s,
                      timeout=10, what="reboot verdict")
    assert status.state == "failed" and "timed out" in status.message
    info = wm.snapshot().nodes[node]
    assert info.drained_by_autoupdate and not info.responding


def test_maintenance_reservation_at_a_time_and_removal(wm, slurm_rig):
    now = time.time()
    wm.reserve("autoupdate-node001-1", "node001", now + 600, "autoupdate: test")
    wm.reserve("autoupdate-node001-1", "node001", now + 900, "autoupdate: test")  # moved, not doubled
    wm.reserve("autoupdate-node002-1", "node002", now, "autoupdate: test")
    snap = wait_for(lambda: (s := wm.snapshot()) and "RESERVED" in s.nodes["node002"].flags and s,
                    what="reservation active")
    resv = {r.name: r for r in snap.reservations}
    assert sorted(resv) == ["autoupdate-node001-1", "autoupdate-node002-1"]
    r1 = resv["autoupdate-node001-1"]
    assert r1.ours and r1.nodes == ("node001",) and "MAINT" in r1.flags
    assert r1.start_time == pytest.approx(now + 900, abs=2)
    assert snap.nodes["node002"].describe() == "IDLE+MAINTENANCE+RESERVED"
    assert snap.foreign_reservations("node002") == []
    # a job that fits before the reservation still runs on node001; node002 takes none
    job = slurm_rig.submit(["true"], nodes="node001", time_limit="1")
    assert slurm_rig.wait_job(job, {"COMPLETED", "FAILED", "CANCELLED"}) == "COMPLETED"
    wm.unreserve("autoupdate-node001-1")
    wm.unreserve("autoupdate-node002-1")
    wm.unreserve("autoupdate-node002-1")  # already gone: fine
    assert wm.snapshot().reservations == ()


def test_refusals_are_one_clear_error(wm, slurm_rig):
    with pytest.raises(WorkloadManagerError) as exc:
        wm.drain(["nosuchnode"], f"{REASON_PREFIX} x")
    assert "\n" not in str(exc.value) and str(exc.value)


def test_unreachable_slurm_is_an_error_not_an_empty_cluster(slurm_rig, tmp_path):
    conf = tmp_path / "slurm.conf"
    conf.write_text(slurm_rig.conf.read_text().replace(f"SlurmctldPort={slurm_rig.ctl_port}", "SlurmctldPort=9"))
    for mode in ("yes", "no"):
        wm = SlurmWorkloadManager(slurm_conf=str(conf), use_json=mode, timeout=1.5)
        with pytest.raises(WorkloadManagerError) as exc:
            wm.snapshot()
        assert "slurm" in str(exc.value)


def test_missing_commands_are_one_clear_error(tmp_path):
    wm = SlurmWorkloadManager(bin_dir=str(tmp_path))
    with pytest.raises(WorkloadManagerError, match="command not found"):
        wm.snapshot()


def test_choosing_pyslurm_without_pyslurm_is_one_clear_error(tmp_path):
    from autoupdate.adapters import pyslurm_wm
    from autoupdate.config import parse_config
    from autoupdate.registry import build
    from autoupdate.wiring import Deps
    if pyslurm_wm.available():
        pytest.skip("pyslurm is installed here")
    settings = parse_config({"cluster": {"backend": "pyslurm"}, "repository": {"url": str(tmp_path)}})
    with pytest.raises(WorkloadManagerError) as exc:
        build("workload_manager", "pyslurm", settings, Deps(settings))
    assert "pyslurm cannot be imported" in str(exc.value) and "cluster.backend" in str(exc.value)


def test_slurm_backend_from_settings(tmp_path):
    from autoupdate.config import parse_config
    from autoupdate.wiring import Deps
    settings = parse_config({"cluster": {"backend": "slurm", "slurm": {
        "slurm_conf": "/x/slurm.conf", "use_json": "no", "reboot_nextstate": "RESUME"}},
        "repository": {"url": str(tmp_path)}, "reboot": {"strategy": "slurm", "timeout": 77}})
    deps = Deps(settings)
    wm, rebooter = deps.workload_manager, deps.rebooter
    assert isinstance(wm, SlurmWorkloadManager) and isinstance(rebooter, SlurmRebooter)
    assert (wm.env, wm.use_json, wm.reboot_nextstate) == ({"SLURM_CONF": "/x/slurm.conf"}, "no", "RESUME")
    assert rebooter.wm is wm and rebooter.timeout == 77
