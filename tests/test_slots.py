"""Maintenance slots (drain_strategy: reservation), table-driven: where slots go, when they are
pulled forward, pushed back, or left alone. now = 1000 s, slots 900 s long, horizon 60 s,
budget 2 per partition unless a case says otherwise."""
from __future__ import annotations

from dataclasses import replace

import pytest

from autoupdate.engine.rollout import waves_start
from autoupdate.engine.slots import plan
from autoupdate.model import (ChangeClass as C, ClusterSnapshot, Job, NodeBase, NodeInfo, NodePhase as P, NodeRecord,
                              Rollout, RolloutState as R)
from autoupdate.safety import Budget

NOW, LENGTH, HORIZON, SOAK = 1000.0, 900.0, 60.0, 600.0


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


HOLD = NOW + 3000  # e.g. when the canaries and their soak are through


@pytest.mark.parametrize("case,jobs,pending,slots,held,limit,reserve", [
    ("a held slot about to open is planned again from the end of its hold",
     {}, [], {"a": NOW + 30}, ["a"], 2, {"a": HOLD}),
    ("held slots planned again are spread over the budget",
     {}, [], {"a": NOW + 30, "b": NOW + 40}, ["a", "b"], 1, {"a": HOLD, "b": HOLD + LENGTH}),
    ("an open slot on an empty node not drained yet moves back too",
     {}, [], {"a": NOW - 10}, ["a"], 2, {"a": HOLD}),
    ("no budget at all: a held slot still moves out of the way",
     {}, [], {"a": NOW + 30}, ["a"], 0, {"a": HOLD}),
    ("a new held node's slot starts when the hold ends",
     {}, ["a"], {}, ["a"], 2, {"a": HOLD}),
    ("... or after its jobs, if they end later",
     {"a": HOLD + 500}, ["a"], {}, ["a"], 2, {"a": HOLD + 500}),
    ("a slot is pulled forward no further than the hold",
     {}, [], {"a": NOW + 5000}, ["a"], 2, {"a": HOLD}),
    ("a slot not held opens as planned",
     {}, [], {"a": NOW + 30}, ["b"], 2, {}),
])
def test_slot_plan_with_holds(case, jobs, pending, slots, held, limit, reserve):
    snap = snapshot(jobs)
    waiting = [rec(n, P.DRAINING, done=True) for n in slots]
    records = {r.node: r for r in [rec(n) for n in pending] + waiting}
    got = plan([records[n] for n in pending], waiting, records, snap, Budget({"p": limit}, {}), slots, LENGTH,
               HORIZON, hold=lambda r: (HOLD, "waiting for the canaries") if r.node in held else None)
    assert got.reserve == reserve, case
    assert got.drain_now == [], case
    for n in held:
        assert "waiting for the canaries" in got.waiting.get(n, "waiting for the canaries"), case


def canary(node, phase, since=NOW - 100):
    return replace(rec(node, phase), canary=True, since=since)


@pytest.mark.parametrize("case,state,records,slots,expected", [
    ("canary idle, not started yet: one slot, then the soak", R.CANARY, [canary("a", P.PENDING)], {},
     NOW + LENGTH + SOAK),
    ("canary busy: after its job", R.CANARY, [canary("c", P.PENDING)], {}, NOW + 1900 + LENGTH + SOAK),
    ("canary with a slot: after its slot", R.CANARY, [canary("a", P.DRAINING)], {"a": NOW + 400},
     NOW + 400 + LENGTH + SOAK),
    ("canary rebooting for a while: one slot length after it went out", R.CANARY,
     [canary("a", P.REBOOTING, since=NOW - 600)], {}, NOW - 600 + LENGTH + SOAK),
    ("the latest canary decides", R.CANARY, [canary("a", P.PENDING), canary("c", P.PENDING)], {},
     NOW + 1900 + LENGTH + SOAK),
    ("finished canaries do not count", R.CANARY, [canary("a", P.DONE), canary("b", P.PENDING)], {},
     NOW + LENGTH + SOAK),
    ("soaking: the soak's end", R.SOAK, [canary("a", P.DONE)], {}, NOW + 42),
    ("waves: now", R.WAVES, [canary("a", P.DONE)], {}, NOW),
])
def test_waves_start(case, state, records, slots, expected):
    rollout = Rollout(1, "t" * 40, state, NOW - 500, NOW - 500, soak_until=NOW + 42)
    got = waves_start(rollout, records, snapshot({"c": NOW + 1900}), slots, LENGTH, SOAK, NOW)
    assert got == expected, case
