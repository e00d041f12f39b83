"""Slurm output parsers, on output captured from the real 22.05 test cluster (tests/data/slurm/,
taken by tests/rig in the states named by each file's prefix) and on hand-written edge cases."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from autoupdate.adapters import slurm_parse as sp
from autoupdate.adapters.slurm import SlurmRebooter, strip_reboot_suffix
from autoupdate.model import ChangeClass, ClusterSnapshot, NodeBase, NodeInfo, NodePhase, NodeRecord, PendingJob
from autoupdate.rebooting import booted, down_after_reboot

DATA = Path(__file__).parent / "data" / "slurm"
CAPTURES = ["drain", "rebootdown", "rebootissued", "resv", "odd", "neverback"]


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    """The captures were taken on a UTC machine; Slurm's text times are local time."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def read(name: str) -> str:
    return (DATA / name).read_text()


@pytest.mark.parametrize("text,base,flags,unknown", [
    ("IDLE", NodeBase.IDLE, set(), False),
    ("idle", NodeBase.IDLE, set(), False),
    ("MIXED+DRAIN", NodeBase.MIXED, {"DRAIN", "DRAINING"}, False),
    ("ALLOCATED+DRAIN", NodeBase.ALLOCATED, {"DRAIN", "DRAINING"}, False),
    ("IDLE+DRAIN", NodeBase.IDLE, {"DRAIN", "DRAINED"}, False),
    ("draining", NodeBase.MIXED, {"DRAIN", "DRAINING"}, False),
    ("drained*", NodeBase.IDLE, {"DRAIN", "DRAINED", "NOT_RESPONDING"}, False),
    ("IDLE+DRAIN+REBOOT_REQUESTED", NodeBase.IDLE, {"DRAIN", "DRAINED", "REBOOT_REQUESTED"}, False),
    ("DOWN+DRAIN+REBOOT_ISSUED", NodeBase.DOWN, {"DRAIN", "DRAINED", "REBOOT_ISSUED"}, False),
    ("IDLE+NOT_RESPONDING", NodeBase.IDLE, {"NOT_RESPONDING"}, False),
    ("DOWN*", NodeBase.DOWN, {"NOT_RESPONDING"}, False),
    ("IDLE+MAINTENANCE+RESERVED", NodeBase.IDLE, {"MAINTENANCE", "RESERVED"}, False),
    ("maint", NodeBase.UNKNOWN, {"MAINTENANCE"}, True),  # a flag alone: no base state
    ("MIXED+FAIL", NodeBase.MIXED, {"FAIL"}, False),
    ("ALLOCATED+COMPLETING", NodeBase.ALLOCATED, {"COMPLETING"}, False),
    ("COMPLETING", NodeBase.COMPLETING, {"COMPLETING"}, False),
    ("IDLE+CLOUD+POWERED_DOWN", NodeBase.IDLE, {"CLOUD", "POWERED_DOWN"}, False),
    ("idle~", NodeBase.IDLE, {"POWERED_DOWN"}, False),
    ("IDLE+POWERING_UP", NodeBase.IDLE, {"POWERING_UP"}, False),
    ("IDLE+POWER_DOWN", NodeBase.IDLE, {"POWER_DOWN"}, False),
    ("IDLE+PLANNED", NodeBase.IDLE, {"PLANNED"}, False),
    ("FUTURE", NodeBase.FUTURE, set(), False),
    ("UNKNOWN", NodeBase.UNKNOWN, set(), False),
    ("IDLE+INVALID_REG", NodeBase.IDLE, {"INVALID_REG"}, False),
    ("IDLE+DYNAMIC_FUTURE", NodeBase.IDLE, {"DYNAMIC_FUTURE"}, True),  # not in KNOWN_FLAGS
    ("IDLE+POWER_DRAIN", NodeBase.IDLE, {"POWER_DRAIN"}, True),
    ("BLORP", NodeBase.UNKNOWN, {"BLORP"}, True),
    ("", NodeBase.UNKNOWN, set(), True),
])
def test_classify_state(text, base, flags, unknown):
    got_base, got_flags, raw = sp.classify_state(sp.split_state_text(text), text)
    assert got_base is base
    assert set(got_flags) == flags
    assert bool(raw) is unknown
    info = NodeInfo("n1", got_base, got_flags, unknown_state=raw)
    if unknown:
        assert not info.state_known  # the engine will not touch it


@pytest.mark.parametrize("capture", CAPTURES)
def test_json_and_text_agree_on_captured_output(capture):
    by_json = sp.nodes_from_json(read(f"{capture}.sinfo.json"))
    by_text = sp.nodes_from_text(read(f"{capture}.scontrol.txt"))
    assert sorted(by_json) == sorted(by_text) == ["node001", "node002", "node003", "node004"]
    for name in by_json:
        j, t = by_json[name], by_text[name]
        assert (j.base, j.flags, j.reason, j.reason_user, j.boot_time, j.partitions, j.extra) == \
               (t.base, t.flags, t.reason, t.reason_user, t.boot_time, t.partitions, t.extra), name
        assert j.state_known and t.state_known
        assert j.boot_time and j.boot_time > 1.7e9


@pytest.mark.parametrize("capture,node,state,reason,user,extra", [
    ("drain", "node001", "IDLE", "", "", ""),
    ("drain", "node002", "MIXED+DRAIN+DRAINING", "autoupdate: 0123456789ab drain rollout 1", "root", ""),
    ("drain", "node003", "IDLE+DRAIN+DRAINED", "human: bad dimm = replace", "root", ""),
    ("drain", "node004", "IDLE", "", "", "image=abc123"),
    ("rebootissued", "node004", "DOWN+DRAIN+DRAINED+REBOOT_ISSUED",
     "autoupdate: abc reboot : reboot issued", "root", "image=abc123"),
    ("rebootdown", "node001", "DOWN", "autoupdate: abc reboot : reboot issued : reboot complete", "root", ""),
    ("resv", "node004", "IDLE+MAINTENANCE+RESERVED", "", "", "image=abc123"),
    ("resv", "node002", "MIXED", "", "", ""),
    ("odd", "node001", "IDLE+NOT_RESPONDING", "", "", ""),
    ("odd", "node002", "MIXED+FAIL", "human fail", "root", ""),
    ("odd", "node003", "DOWN+NOT_RESPONDING",
     "autoupdate: abc reboot : reboot issued : reboot timed out", "root", ""),
    ("neverback", "node003", "DOWN+DRAIN+DRAINED+REBOOT_ISSUED",
     "autoupdate: abc reboot : reboot issued", "root", ""),
])
def test_captured_node_states(capture, node, state, reason, user, extra):
    for info in (sp.nodes_from_json(read(f"{capture}.sinfo.json"))[node],
                 sp.nodes_from_text(read(f"{capture}.scontrol.txt"))[node]):
        assert info.describe() == state
        assert (info.reason, info.reason_user, info.extra) == (reason, user, extra)
        assert info.partitions == ("batch",)


def test_captured_jobs_json_and_text():
    now = 1795242770.0
    by_json = sp.queue_from_json(read("resv.squeue.json"), now)[0]
    by_text = sp.jobs_from_text(read("resv.squeue.txt"), now)
    assert by_json == by_text  # completed jobs 1 and 2 are left out
    (job,) = by_json
    assert (job.job_id, job.nodes, job.name, job.user) == ("3", ("node002",), "we|ird name", "root")
    assert job.end_time - job.start_time == 60  # a 1-minute time limit


def test_captured_reservations():
    resv = {r.name: r for r in sp.reservations_from_text(read("resv.resv.txt"))}
    assert sorted(resv) == ["autoupdate-node002-1", "autoupdate-node004-1"]
    r = resv["autoupdate-node004-1"]
    assert r.nodes == ("node004",) and r.ours and {"MAINT", "IGNORE_JOBS"} <= r.flags
    assert r.end_time - r.start_time == 3600
    assert sp.reservations_from_text("No reservations in the system\n") == []


def test_newer_json_shapes():
    """23.02+ (scontrol --json show nodes, squeue --json v0.0.40+): state lists, number objects."""
    nodes = json.dumps({"nodes": [{
        "name": "gpu01", "state": ["MIXED", "DRAIN", "REBOOT_REQUESTED"],
        "boot_time": {"set": True, "infinite": False, "number": 1700000000},
        "partitions": ["gpu", "all"], "reason": "autoupdate: x", "reason_set_by_user": "root",
        "features": "a100,ib", "active_features": "a100,ib", "extra": "image=v2"}], "errors": []})
    info = sp.nodes_from_json(nodes, "scontrol --json show nodes")["gpu01"]
    assert info.describe() == "MIXED+DRAIN+DRAINING+REBOOT_REQUESTED"
    assert info.boot_time == 1700000000 and info.partitions == ("gpu", "all")
    assert info.features == ("a100", "ib") and info.extra == "image=v2"
    jobs = json.dumps({"jobs": [
        {"job_id": 7, "job_state": ["RUNNING"], "nodes": "gpu[01-03]",
         "start_time": {"set": True, "number": 1000}, "end_time": {"set": True, "number": 4600},
         "time_limit": {"set": True, "infinite": False, "number": 60}, "name": "x", "user_name": "u"},
        {"job_id": 8, "job_state": ["RUNNING"], "nodes": "gpu04",
         "start_time": {"set": True, "number": 1000}, "end_time": {"set": False, "number": 0},
         "time_limit": {"set": False, "infinite": True, "number": 0}},
        {"job_id": 9, "job_state": ["PENDING"], "nodes": ""}]})
    j7, j8 = sp.queue_from_json(jobs, now=2000)[0]
    assert j7.nodes == ("gpu01", "gpu02", "gpu03") and j7.end_time == 4600
    assert j8.end_time > 2000 + 365 * 86400  # no time limit: not idle any time soon


# (id, priority, nodes, time limit in minutes, partition, reason): the pending jobs below.
PENDING_JOBS = [("11", 100, 4, 60, "batch", "Priority"), ("12", 900, 60, 90, "batch", "Resources"),
                ("13", 5000, 2, 10, "batch", "Dependency"), ("14", 800, 8, None, "a,b",
                                                               "ReqNodeNotAvail, Reserved for maintenance"),
                ("15", 9000, 1, 5, "batch", "JobHeldUser"), ("16", 50, 2, 30, "batch", "None")]
WAITING = (PendingJob("12", 60, 5400.0, "batch"), PendingJob("14", 8, sp.UNLIMITED_SECONDS, ""),
           PendingJob("11", 4, 3600.0, "batch"), PendingJob("16", 2, 1800.0, "batch"))


@pytest.mark.parametrize("form,parse", [
    ("22.05 json", lambda: sp.queue_from_json(json.dumps({"jobs": [
        {"job_id": int(i), "job_state": "PENDING", "priority": p, "node_count": n, "time_limit": lim,
         "partition": part, "state_reason": why, "nodes": ""} for i, p, n, lim, part, why in PENDING_JOBS]}), 0)[1]),
    ("23.02+ json", lambda: sp.queue_from_json(json.dumps({"jobs": [
        {"job_id": int(i), "job_state": ["PENDING"], "priority": {"set": True, "number": p},
         "node_count": {"set": True, "number": n},
         "time_limit": {"set": lim is not None, "infinite": lim is None, "number": lim or 0},
         "partition": part, "state_reason": why} for i, p, n, lim, part, why in PENDING_JOBS]}), 0)[1]),
    ("squeue -o text", lambda: sp.pending_from_text("\n".join(
        f"{i}|{p}|{n}|{'UNLIMITED' if lim is None else lim}|{part}|{why}" for i, p, n, lim, part, why in PENDING_JOBS))),
])
def test_jobs_waiting_for_nodes_highest_priority_first(form, parse):
    """Held jobs and those waiting on a dependency are not waiting for nodes; one just submitted
    (no reason yet) is."""
    assert parse() == WAITING, form


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", '{"meta": {}}',
                                  '{"errors": [{"error": "Unable to contact slurm controller"}], "nodes": []}'])
def test_bad_json_is_one_clear_error(text):
    with pytest.raises(sp.SlurmParseError):
        sp.nodes_from_json(text)


@pytest.mark.parametrize("parse,text", [(sp.nodes_from_text, "garbage without fields"),
                                        (lambda t: sp.jobs_from_text(t, 0), "1|RUNNING|x"),
                                        (sp.pending_from_text, "12|900|60")])
def test_bad_text_is_one_clear_error(parse, text):
    with pytest.raises(sp.SlurmParseError):
        parse(text)


@pytest.mark.parametrize("text,seconds", [
    ("5:00", 300), ("1:00:00", 3600), ("1-00:00:00", 86400), ("2-03", 2 * 86400 + 3 * 3600),
    ("30", 1800), ("UNLIMITED", float("inf")), ("N/A", None), ("", None),
])
def test_duration(text, seconds):
    assert sp.duration(text) == seconds


def test_version():
    assert sp.slurm_version("slurm-wlm 22.05.8") == (22, 5)
    assert sp.slurm_version("slurm 25.11.0") == (25, 11)
    assert sp.slurm_version("") == (0, 0)


@pytest.mark.parametrize("reason,stripped", [
    ("autoupdate: abc reboot : reboot issued : reboot complete", "autoupdate: abc reboot"),
    ("autoupdate: abc reboot : reboot issued", "autoupdate: abc reboot"),
    ("autoupdate: abc reboot", "autoupdate: abc reboot"),
])
def test_strip_reboot_suffix(reason, stripped):
    assert strip_reboot_suffix(reason) == stripped


# --- rebooting.booted and the slurm rebooter on captured states --------------------------------

def _record(node: str, boot_before: float | None, since: float = 0.0) -> NodeRecord:
    return NodeRecord(node=node, phase=NodePhase.REBOOTING, target="f" * 40, rollout_id=3,
                      klass=ChangeClass.DRAIN, since=since, boot_time_before=boot_before, action_done=True)


@pytest.mark.parametrize("capture,node,boot_before,back", [
    ("rebootdown", "node001", 1795242637, True),   # nextstate=DOWN: came back DOWN, our reason
    ("rebootdown", "node001", 1795242660, False),  # same boot time: not rebooted
    ("rebootissued", "node004", 1795242637, False),  # REBOOT_ISSUED: in progress
    ("odd", "node003", 1795242637, False),  # reboot timed out, not responding
    ("odd", "node001", None, False),  # NOT_RESPONDING
    ("drain", "node003", None, True),  # a plain drained node, no boot time to compare
])
def test_booted_on_captures(capture, node, boot_before, back):
    snap = ClusterSnapshot(0, sp.nodes_from_json(read(f"{capture}.sinfo.json")))
    assert (booted(_record(node, boot_before), snap) is None) is back


class FakeWM:
    def __init__(self):
        self.calls = []

    def drain(self, nodes, reason):
        self.calls.append(("drain", tuple(nodes), reason))

    def reboot(self, nodes, reason):
        self.calls.append(("reboot", tuple(nodes), reason))


@pytest.mark.parametrize("check_boot_time,state", [(True, "in_progress"), (False, "done")])
def test_rebooter_honours_verify_boot_time(check_boot_time, state):
    snap = ClusterSnapshot(0, sp.nodes_from_json(read("rebootdown.sinfo.json")))
    rec = _record("node001", 1795242660)  # the boot time it reports now: "not rebooted"
    assert SlurmRebooter(FakeWM(), 60, check_boot_time).poll(rec, snap, now=1).state == state


def test_rebooter_redrains_a_node_back_down():
    wm = FakeWM()
    snap = ClusterSnapshot(0, sp.nodes_from_json(read("rebootdown.sinfo.json")))
    assert down_after_reboot(snap.nodes["node001"])
    status = SlurmRebooter(wm, timeout=60).poll(_record("node001", 1795242637), snap, now=10)
    assert status.state == "done"
    assert wm.calls == [("drain", ("node001",), "autoupdate: abc reboot")]


@pytest.mark.parametrize("now,state,drains", [(30, "in_progress", 0), (90, "failed", 1)])
def test_rebooter_times_out_and_keeps_the_node_drained(now, state, drains):
    wm = FakeWM()
    snap = ClusterSnapshot(0, sp.nodes_from_json(read("odd.sinfo.json")))  # node003: timed out, DOWN
    status = SlurmRebooter(wm, timeout=60).poll(_record("node003", 1795242638, since=0), snap, now=now)
    assert status.state == state
    assert len([c for c in wm.calls if c[0] == "drain"]) == drains
    if drains:
        assert wm.calls[0][2] == "autoupdate: abc reboot"


def test_rebooter_start_skips_a_node_already_rebooting():
    wm = FakeWM()
    snap = ClusterSnapshot(0, sp.nodes_from_json(read("neverback.sinfo.json")))
    SlurmRebooter(wm, 60).start(_record("node003", None), snap)
    SlurmRebooter(wm, 60).start(_record("node001", None), snap)
    assert wm.calls == [("reboot", ("node001",), "autoupdate: ffffffffffff reboot rollout 3")]


@pytest.mark.parametrize("tail,reason,user,extra", [
    ("Reason=a b=c [d] [root@2026-11-21T06:31:16] Extra=x y", "a b=c [d]", "root", "x y"),
    ("Reason=plain [slurm@Unknown]", "plain", "slurm", ""),
    ("Extra=image=v1 Reason=ends here [bob@2026-01-01T00:00:00]", "ends here", "bob", "image=v1"),
])
def test_text_reason_is_free_text(tail, reason, user, extra):
    info = sp.node_from_text(f"NodeName=n1 Arch=x86_64 OS=Linux 6.1 #1 SMP State=IDLE+DRAIN Partitions=a,b {tail}")
    assert (info.reason, info.reason_user, info.extra) == (reason, user, extra)
    assert info.partitions == ("a", "b") and info.describe() == "IDLE+DRAIN+DRAINED"


def test_reservations_json_23_02_shape():
    text = json.dumps({"reservations": [{
        "name": "autoupdate-gpu01-3", "node_list": "gpu[01-02]", "flags": ["MAINT", "IGNORE_JOBS"],
        "start_time": {"set": True, "number": 1000}, "end_time": {"set": True, "number": 4600},
        "users": "root"}], "errors": []})
    (r,) = sp.reservations_from_json(text)
    assert (r.name, r.nodes, r.start_time, r.end_time, r.users) == \
           ("autoupdate-gpu01-3", ("gpu01", "gpu02"), 1000, 4600, ("root",))
    assert r.ours and "MAINT" in r.flags


def test_unknown_node_states_are_logged_when_they_change_not_every_tick():
    from structlog.testing import capture_logs

    from autoupdate.adapters.slurm import SlurmWorkloadManager
    wm = SlurmWorkloadManager()
    seen = [{"n1": "WEIRD"}, {"n1": "WEIRD"}, {"n1": "WEIRD", "n2": "ODD"}, {"n1": "WEIRD", "n2": "ODD"}, {}, {}]
    with capture_logs() as logs:
        for unknown in seen:
            wm._note_unknown(unknown)
    assert [(e["event"], e.get("nodes")) for e in logs] == [
        ("unknown node states: not touched", "n1"), ("unknown node states: not touched", "n[1-2]"),
        ("every node's state is known again", None)]


@pytest.mark.parametrize("text, local", [
    ("2026-11-21T06:32:39", (2026, 11, 21, 6, 32, 39)),
    (" 2026-03-29T02:30:00 ", (2026, 3, 29, 2, 30, 0)),  # local time as mktime reads it (DST gap too)
    ("Unknown", None), ("None", None), ("N/A", None), ("(null)", None), ("0", None), ("", None), (None, None),
    ("2026-11-21", None),  # not Slurm's form: unknown, not midnight
    ("2026-11-21T06:32:39+01:00", None),
    ("2026-13-01T00:00:00", None),
    ("yesterday", None),
])
def test_text_time(text, local):
    import time as _time
    from autoupdate.adapters.slurm_parse import text_time
    expected = None if local is None else _time.mktime((*local, 0, 0, -1))
    assert text_time(text) == expected


def test_read_scale_benchmark_parses_every_node_and_job():
    # bench/read_scale.py at a small size: its synthetic outputs parse to the counts it built
    # (it asserts that), in both forms. Figures at 10,000 nodes: README, Large queues.
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "bench" / "read_scale.py"), "--nodes", "20", "--running", "30",
                          "--pending", "5", "--repeat", "1"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "20 nodes, 30 running + 5 pending jobs (5 waiting for nodes)" in out.stdout
    assert "JSON read in all" in out.stdout and "text read in all" in out.stdout
    bad = subprocess.run([sys.executable, str(root / "bench" / "read_scale.py"), "--nodes", "0"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "error: --nodes" in bad.stderr and "Traceback" not in bad.stderr
