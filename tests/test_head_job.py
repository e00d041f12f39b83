"""Giving way to the job at the head of the queue (engine/head_job.py), table-driven: when the
head job can start, which of our waiting nodes keep out of its way and until when; then the
whole engine on the simulated cluster. now = 1000 s; the head job wants 2 nodes for 3000 s
unless a case says otherwise."""
from __future__ import annotations

import math

import pytest

from autoupdate.cli import status_data
from autoupdate.engine.head_job import give_way, planned_start
from autoupdate.engine.slots import plan, reservation_name
from autoupdate.model import (ChangeClass as C, ClusterSnapshot, Job, NodeBase, NodeInfo, NodePhase as P, NodeRecord,
                              PendingJob, Reservation)
from autoupdate.safety import Budget
from autoupdate.sim.cluster import SimJob
from enginekit import Kit

NOW, LIMIT = 1000.0, 3000.0
HEAD = PendingJob("99", 2, LIMIT)


def snapshot(jobs=None, down=(), drained=(), resv=(), pending=(HEAD,), nodes=("a", "b", "c", "d"), parts=None):
    """jobs: node -> end of its job by its time limit; resv: (name, node, start, end)."""
    jobs = jobs or {}

    def info(n):
        base = NodeBase.DOWN if n in down else NodeBase.ALLOCATED if n in jobs else NodeBase.IDLE
        flags = frozenset({"DRAIN"}) if n in drained else frozenset()
        return NodeInfo(n, base, flags, (parts or {}).get(n, ("p",)), "autoupdate: x" if n in drained else "")
    return ClusterSnapshot(NOW, {n: info(n) for n in nodes},
                           tuple(Job(f"j{n}", (n,), 0, end) for n, end in jobs.items()),
                           tuple(Reservation(name, (n,), s, e) for name, n, s, e in resv), tuple(pending))


@pytest.mark.parametrize("case,snap,start,free", [
    ("enough idle nodes: now, on them",
     snapshot({"c": NOW + 500, "d": NOW + 500}), NOW, ["a", "b"]),
    ("not enough: when the second node's job ends by its limit",
     snapshot({"a": NOW + 500, "b": NOW + 800, "c": NOW + 900, "d": NOW + 900}), NOW + 800, ["a", "b"]),
    ("down and drained nodes do not count",
     snapshot({"c": NOW + 500, "d": NOW + 700}, down=["a"], drained=["b"]), NOW + 700, ["c", "d"]),
    ("someone else's reservation during the limit fences a node off until it ends",
     snapshot({"c": NOW + 500, "d": NOW + 9000}, resv=[("maint", "a", NOW + 100, NOW + 2000)]),
     NOW + 500, ["b", "c"]),
    ("... and lets it in again once over",
     snapshot({"b": NOW + 2500, "c": NOW + 9000, "d": NOW + 9000}, resv=[("maint", "a", NOW + 100, NOW + 2000)]),
     NOW + 2500, ["b", "a"]),
    ("our own slots are left out: they move",
     snapshot({"c": NOW + 500, "d": NOW + 500}, resv=[(reservation_name("a"), "a", NOW + 100, NOW + 400)]),
     NOW, ["a", "b"]),
    ("only the nodes of its partition",
     snapshot({"a": NOW + 500}, pending=[PendingJob("99", 2, LIMIT, "q")], parts={"a": ("q",), "b": ("q",)}),
     NOW + 500, ["b", "a"]),
    ("never enough nodes: never",
     snapshot(down=["a", "b", "c"]), math.inf, []),
])
def test_planned_start(case, snap, start, free):
    assert planned_start(snap, snap.pending[0]) == (start, free), case


def rec(node, phase=P.PENDING, klass=C.DRAIN, canary=False):
    return NodeRecord(node, phase, "t" * 40, 1, klass, since=NOW - 100, canary=canary)


LATE = NOW + 9000  # a node whose job ends after the head job would: the rollout waits for it anyway
SOON = NOW + 500
LENGTH = 300.0
COMMITTED = NOW + 60  # slots opening before then are under way


@pytest.mark.parametrize("case,snap,records,keep", [
    ("the head job counts on our waiting nodes: they keep out of its way until it ends by its limit",
     snapshot({"a": SOON, "b": SOON, "d": LATE}, pending=[PendingJob("99", 3, LIMIT)]),
     ["a", "b", "c", "d"], {"a", "b", "c"}),
    ("its spare nodes go (canaries first)",
     snapshot({"a": SOON, "b": SOON, "c": SOON, "d": LATE}), [rec("a"), rec("b"), rec("c", canary=True), "d"],
     {"a", "b"}),
    ("a node with a slot not opened yet moves too; drained ones are out already",
     snapshot({"a": SOON, "c": SOON, "d": LATE}, drained=["b"]), [rec("a", P.DRAINING), rec("b", P.DRAINING), "c", "d"],
     {"a", "c"}),
    ("only our slots opening now keep it from starting: they go first (it waits a slot or two)",
     snapshot({"d": LATE}, resv=[(reservation_name(n), n, NOW, NOW + LENGTH) for n in "abc"]),
     [rec("a", P.DRAINING), rec("b", P.DRAINING), rec("c", P.DRAINING), "d"], set()),
    ("our slots ahead, in its way but not under way yet: they move",
     snapshot({"a": SOON, "b": SOON, "d": LATE}, resv=[(reservation_name(n), n, SOON, SOON + LENGTH) for n in "ab"]),
     [rec("a", P.DRAINING), rec("b", P.DRAINING), "c", "d"], {"a", "b"}),
    ("... once its slots are out of its way they stay there, even as its start draws near",
     snapshot({"a": NOW + 100, "b": NOW + 100, "d": LATE},
              resv=[(reservation_name(n), n, NOW + 100 + LIMIT, LATE) for n in "ab"]),
     [rec("a", P.DRAINING), rec("b", P.DRAINING), "c", "d"], {"a", "b"}),
    ("taking them delays the job less than its own limit (other nodes free up soon): the rollout goes",
     snapshot({"a": SOON, "b": SOON, "c": SOON + 100, "e": SOON + 200, "d": LATE}, nodes=("a", "b", "c", "d", "e")),
     ["a", "b", "d"], set()),
    ("... but more than that: they wait",
     snapshot({"a": SOON, "b": SOON, "c": SOON + 100, "e": LATE, "d": LATE}, nodes=("a", "b", "c", "d", "e")),
     ["a", "b", "d"], {"a", "b"}),
    ("waiting would make the rollout later (the head job ends after every node of ours is free): none",
     snapshot({"a": SOON, "b": SOON, "c": SOON, "d": SOON + 100}), ["a", "b", "c", "d"], set()),
    ("live (HOT) changes take no node out: not in its way",
     snapshot({"a": SOON, "b": SOON, "d": LATE}), [rec("a", klass=C.HOT), rec("b", klass=C.HOT), "d"], set()),
    ("no job waiting: none",
     snapshot({"a": SOON, "b": SOON, "d": LATE}, pending=[]), ["a", "b", "c", "d"], set()),
])
def test_give_way(case, snap, records, keep):
    records = [r if isinstance(r, NodeRecord) else rec(r) for r in records]
    way = give_way(snap, {r.node: r for r in records}, COMMITTED)
    assert (way.nodes if way else set()) == keep, case
    if way:
        job = snap.pending[0]
        assert way.until == planned_start(snap, job)[0] + job.time_limit, case
        assert f"giving way to job {job.job_id}" in way.why, case


def test_a_slot_in_the_head_jobs_way_moves_even_when_not_about_to_open():
    snap = snapshot({"a": NOW + 500, "b": NOW + 500, "d": LATE})
    waiting = [rec("a", P.DRAINING), rec("b", P.DRAINING)]
    records = {r.node: r for r in waiting}
    until = NOW + LIMIT
    got = plan([], waiting, records, snap, Budget({"p": 2}, {}), {"a": NOW + 500, "b": NOW + 500}, 300.0, 60.0,
               away={"a": (until, "giving way")})
    assert got.reserve == {"a": until}  # b is not in its way: its slot stays
    assert "giving way" in got.waiting["a"]


@pytest.mark.parametrize("case,last_job_end,head_first", [
    ("waiting costs the rollout nothing (a job elsewhere runs longer): the head job starts first", 6000, True),
    ("waiting would make the rollout later: the rollout goes first", 700, False),
])
def test_the_engine_gives_way_to_a_wide_job_only_when_it_costs_no_time(tmp_path, case, last_job_end, head_first):
    kit = Kit(tmp_path, config={"nodes": {"canaries": ""},
                                "rollout": {"drain_strategy": "reservation", "reservation_seconds": 300}},
              jobs={**{f"n0{i}": 600 for i in range(1, 8)}, "n08": last_job_end})
    kit.engine.fetch()
    t0 = kit.clock.now()
    wide = SimJob(kit.cluster.new_job_id(), 7, 1500, 1800, t0)
    kit.cluster.submit(wide)
    target = kit.commit({"drain/k": "2"})
    kit.step()
    way = status_data(kit.settings)["giving_way"]  # what `autoupdate status` shows
    if head_first:
        assert way["nodes"] == [f"n0{i}" for i in range(1, 8)] and f"job {wide.job_id}" in way["why"], way
        assert way["until"] == t0 + 600 + 1800, way  # its planned start + its time limit
    else:
        assert way == {}, way
    out_before_it_started, said = set(), set()

    def watch():
        if wide.start is None:
            out_before_it_started.update(n for n, s in kit.cluster.nodes.items() if s.drained or s.reboot_until)
        said.update(kit.engine.last_report.waiting.values())

    kit.run_until(lambda: kit.rollout_state() == "done", each=watch)
    assert all(kit.running(n) == target for n in kit.cluster.nodes), case
    assert kit.cluster.stats.jobs_killed == 0, case
    its_nodes = {f"n0{i}" for i in range(1, 8)}
    if head_first:  # it starts as soon as its nodes' jobs end, none of them taken out before
        assert wide.start - t0 <= 610 and not out_before_it_started & its_nodes, case
        assert any(f"giving way to job {wide.job_id}" in why for why in said), said
    else:  # its nodes are rebooted first, and it waits for them
        assert wide.start - t0 > 610 and out_before_it_started & its_nodes, case
        assert not any("giving way" in why for why in said), case
