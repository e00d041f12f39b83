"""Maintenance slots (drain_strategy: reservation), table-driven: where slots go, when they are
pulled forward, pushed back, or left alone. now = 1000 s, slots 900 s long, horizon 60 s,
budget 2 per partition unless a case says otherwise."""
from __future__ import annotations

import pytest

from autoupdate.engine.slots import plan
from autoupdate.model import ChangeClass as C, ClusterSnapshot, Job, NodeBase, NodeInfo, NodePhase as P, NodeRecord
from autoupdate.safety import Budget

NOW, LENGTH, HORIZON = 1000.0, 900.0, 60.0


def snapshot(jobs: dict[str, float], nodes=("a", "b", "c", "d"), down=()):
    """jobs: node -> end of its job by its time limit."""
    infos = {n: NodeInfo(n, NodeBase.DOWN if n in down else NodeBase.ALLOCATED if n in jobs else NodeBase.IDLE,
                         frozenset({"DRAIN"}) if n in down else frozenset(), ("p",),
                         "autoupdate: x" if n in down else "") for n in nodes}
    return ClusterSnapshot(NOW, infos, tuple(Job(f"j{n}", (n,), 0, end) for n, end in jobs.items()))


def rec(node, phase=P.PENDING, done=False):
    return NodeRecord(node, phase, "t" * 40, 1, C.DRAIN, since=NOW - 100, action_done=done)


@pytest.mark.parametrize("case,jobs,pending,slots,used,limit,reserve,drain_now", [
    ("idle nodes within the budget go now",
     {}, ["a", "b"], {}, 0, 2, {"a": NOW, "b": NOW}, ["a", "b"]),
    ("over the budget: the next slot starts when one ends",
     {}, ["a", "b", "c"], {}, 0, 2, {"a": NOW, "b": NOW, "c": NOW + LENGTH}, ["a", "b"]),
    ("a busy node's slot is after its job's time limit",
     {"a": NOW + 5000}, ["a"], {}, 0, 2, {"a": NOW + 5000}, []),
    ("waiting slot, jobs ended early, budget room: pulled to now",
     {}, [], {"a": NOW + 5000}, 0, 2, {"a": NOW}, ["a"]),
    ("waiting slot, jobs ended early, budget full now: stays",
     {}, [], {"a": NOW + 5000}, 2, 2, {}, []),
    ("waiting slot, the short job Slurm started before it ends sooner: pulled to that end",
     {"a": NOW + 2000}, [], {"a": NOW + 5000}, 0, 2, {"a": NOW + 2000}, []),
    ("pulled forward only where no other slots fill the budget then",
     {"a": NOW + 2000, "b": NOW + 2100, "c": NOW + 1900}, [], {"a": NOW + 5000, "b": NOW + 2100, "c": NOW + 1900},
     0, 2, {}, []),
    ("... and is once one of them is out of the way",
     {"a": NOW + 2000, "b": NOW + 2100, "c": NOW + 9000}, [], {"a": NOW + 5000, "b": NOW + 2100, "c": NOW + 9000},
     0, 2, {"a": NOW + 2000}, []),
    ("hardly earlier (within the horizon): left alone",
     {"a": NOW + 4970}, [], {"a": NOW + 5000}, 0, 2, {}, []),
    ("a slot about to open while the budget is full is pushed back",
     {"a": NOW + 30}, [], {"a": NOW + 30}, 1, 1, {"a": NOW + HORIZON + 1}, []),
])
def test_slot_plan(case, jobs, pending, slots, used, limit, reserve, drain_now):
    snap = snapshot(jobs)
    waiting = [rec(n, P.DRAINING, done=True) for n in slots]
    records = {r.node: r for r in [rec(n) for n in pending] + waiting}
    budget = Budget({"p": limit}, {"p": used} if used else {})
    got = plan([records[n] for n in pending], waiting, records, snap, budget, slots, LENGTH, HORIZON)
    assert got.reserve == reserve, case
    assert sorted(got.drain_now) == drain_now, case
