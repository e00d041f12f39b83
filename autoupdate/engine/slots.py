"""Maintenance slots: the `reservation` drain strategy (rollout.drain_strategy: reservation).

Instead of draining a node at once (it then sits idle while its last jobs finish), each DRAIN
node gets a one-node maintenance reservation that starts when its running jobs end by their
time limits. Until then the node stays in service: the scheduler still runs jobs on it that end
before the slot (Slurm will not start a job that overlaps a maintenance reservation), and it
does not count against max_unavailable. Slots are planned so that at most max_unavailable
nodes per partition are out at any time, each slot `reservation_seconds` long; a node whose
jobs end early is pulled forward to now when the budget has room; a slot about to open while
the budget is full (a reboot ran long) is pushed back.

A `hold` says a node may not open its slot before some time (the canaries and their soak are
not through yet, the rollout is paused, the DRAIN window is closed): its slot goes no earlier,
and one about to open is pushed back. Slots are placed for the waves while the canaries run, so
that Slurm does not start long jobs on those nodes in the meantime.
"""
from __future__ import annotations

import bisect
import heapq
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from ..model import ChangeClass, ClusterSnapshot, NodePhase, NodeRecord
from ..safety import Budget, slot_starts
from .planner import order

RESERVATION_PREFIX = "autoupdate-"


def reservation_name(node: str) -> str:
    return f"{RESERVATION_PREFIX}{node}"


our_slots = slot_starts  # node -> start of autoupdate's maintenance reservation on it


@dataclass
class SlotPlan:
    reserve: dict[str, float] = field(default_factory=dict)  # node -> (new) slot start
    drain_now: list[str] = field(default_factory=list)  # slot is now and the node is empty
    waiting: dict[str, str] = field(default_factory=dict)


Hold = Callable[[NodeRecord], "tuple[float, str] | None"]  # (not before, why) or None: no hold


def with_away(hold: Hold | None, away: Mapping[str, tuple[float, str]]) -> Hold | None:
    """`hold`, and for the nodes in `away` (node -> (not before, why)) the later of the two."""
    if not away:
        return hold

    def held(rec: NodeRecord) -> tuple[float, str] | None:
        h, a = hold(rec) if hold else None, away.get(rec.node)
        return a if a and (h is None or h[0] < a[0]) else h
    return held


def plan(candidates: Sequence[NodeRecord], waiting: Sequence[NodeRecord], records: Mapping[str, NodeRecord],
         snapshot: ClusterSnapshot, budget: Budget, slots: Mapping[str, float], length: float,
         horizon: float, hold: Hold | None = None, away: Mapping[str, tuple[float, str]] | None = None) -> SlotPlan:
    """Slots for new candidates, moves for nodes waiting for theirs.

    `budget` counts the nodes out of service now (waiting nodes are in service). `horizon`: a
    slot opening within it is committed (the next tick may come too late to move it), so it
    must fit the budget as the cluster is now, counting every node now out as staying out.
    `hold(record)`: (time, why) before which that node's slot may not open, or None (hold None:
    nothing holds any node, the common case at 10,000 nodes). `away`: node -> (time, why), a
    hold on a few nodes that also moves their slots not about to open (the head job's nodes,
    see head_job.py: a later slot is in its way too).
    """
    away = away or {}
    p = _Planner(records, snapshot, budget, slots, length, horizon, with_away(hold, away))
    replan = p.held_back(slots.items() if hold else [(n, slots[n]) for n in away if n in slots], away)
    p.pull_forward()
    if candidates or replan:  # else nothing to place (most ticks): no units to build
        p.place([*candidates, *replan], {r.node for r in replan})
    for rec in waiting if p.hold else ():  # the others: the engine says when their slot opens
        held = p.hold(rec)
        if held and rec.node in p.future and rec.node not in p.result.reserve:
            p.result.waiting.setdefault(rec.node, f"maintenance slot at {p.future[rec.node]:.0f} ({held[1]})")
    return p.result


class _Planner:
    """One plan(): the budget as it fills, and the slots still to open (`future`)."""

    def __init__(self, records: Mapping[str, NodeRecord], snapshot: ClusterSnapshot, budget: Budget,
                 slots: Mapping[str, float], length: float, horizon: float, hold: Hold | None) -> None:
        self.records, self.snapshot, self.budget, self.slots = records, snapshot, budget, slots
        self.length, self.horizon, self.hold = length, horizon, hold
        self.now = now = snapshot.taken_at
        self.out = dict(budget.used)
        self.result = SlotPlan()
        draining = NodePhase.DRAINING
        self.future = {n: s for n, s in slots.items() if s > now and n in records and records[n].phase is draining}

    def parts(self, node: str) -> tuple[str, ...]:
        return self.snapshot.nodes[node].partitions

    def room(self, node: str) -> bool:
        out, limits = self.out, self.budget.limits
        return all(out.get(p, 0) + 1 <= limits.get(p, 0) for p in self.parts(node))

    def take(self, node: str) -> None:
        for p in self.parts(node):
            self.out[p] = self.out.get(p, 0) + 1

    def not_before(self, node: str) -> float:
        held = self.hold(self.records[node]) if self.hold else None
        return held[0] if held else self.now

    def held_back(self, held_slots, away: Mapping[str, tuple[float, str]]) -> list[NodeRecord]:
        """1. A held slot about to open (or open, its node not drained yet) is planned again from
        the end of its hold, with the new nodes (returned). The others must fit as things are
        now, else they move back."""
        now, horizon, future, result = self.now, self.horizon, self.future, self.result
        replan: list[NodeRecord] = []
        for node, s in held_slots:
            r, info = self.records.get(node), self.snapshot.nodes.get(node)
            if r is None or r.phase is not NodePhase.DRAINING or info is None or info.drained \
                    or s > now + horizon and node not in away:
                continue
            held = self.hold(r)
            if held and held[0] > now and (s <= now + horizon or s < held[0]):
                future.pop(node, None)
                replan.append(r)
                result.waiting[node] = f"{held[1]}: slot moved back"
        for node in sorted((n for n, s in future.items() if s <= now + horizon), key=future.get):
            if self.room(node):
                self.take(node)
            else:
                result.reserve[node] = future[node] = now + horizon + 1
                result.waiting[node] = "budget full when its slot opens: slot moved back"
        return replan

    def pull_forward(self) -> None:
        """2. Jobs ended early: pull the slot forward to when the node is empty now (its jobs
        ended; or the short ones Slurm started before the slot end sooner), if [t, t+length)
        has room."""
        now, horizon, length, future, snapshot = self.now, self.horizon, self.length, self.future, self.snapshot
        busy, not_before = snapshot.busy_until, self.not_before if self.hold else None
        movable = []  # (when the node is empty, node), for slots that could open sooner
        for n, s in future.items():  # every slot, every tick: kept to plain lookups
            if s > now + horizon:
                t = busy.get(n, now)
                if not_before:
                    t = max(t, not_before(n))
                if t < s - horizon:
                    movable.append((t, n))
        if not movable:
            return
        starts: dict[str, list[float]] = defaultdict(list)  # per partition, sorted
        nodes = snapshot.nodes
        for n, s in future.items():
            for p in nodes[n].partitions:
                starts[p].append(s)
        for lst in starts.values():
            lst.sort()

        def overlapping(p: str, t: float) -> int:
            """Slots in partition p that overlap [t, t+length) (all slots are `length` long)."""
            lst = starts[p]
            return bisect.bisect_left(lst, t + length) - bisect.bisect_right(lst, t - length)

        limits = self.budget.limits
        for t, node in sorted(movable):
            s = future[node]
            if t >= s - horizon or (t <= now and snapshot.busy(node)):
                continue  # no longer sooner (an earlier move), or jobs overdue on it: leave it
            ps = self.parts(node)
            for p in ps:  # the node's own slot does not count against it
                starts[p].pop(bisect.bisect_left(starts[p], s))
            now_out = self.out if t < now + length else {}  # out now: assume out until one slot from now
            if all(now_out.get(p, 0) + overlapping(p, t) + 1 <= limits.get(p, 0) for p in ps):
                s = future[node] = t
                self.result.reserve[node] = t
                if t <= now:
                    self.take(node)
                    del future[node]
                    self.result.drain_now.append(node)
                    continue
            for p in ps:
                bisect.insort(starts[p], s)

    def place(self, todo: list[NodeRecord], replanned: set[str]) -> None:
        """3. New nodes: list scheduling on `limit` units per partition, each unit free from the
        end of what it holds (nodes out now: their expected return; slots: their end)."""
        now, horizon, length, snapshot, result = self.now, self.horizon, self.length, self.snapshot, self.result
        units = {p: [now] * max(0, limit) for p, limit in self.budget.limits.items()}
        ours: dict[str, int] = {}  # per partition: our nodes out now
        for n, r in self.records.items():
            if r.phase.out_of_service and r.klass >= ChangeClass.DRAIN and n not in self.future \
                    and n not in replanned:
                for p in self.parts(n) if n in snapshot.nodes else ():
                    _occupy(units[p], max(now + horizon, self.slots.get(n, r.since) + length))
                    ours[p] = ours.get(p, 0) + 1
        for n, s in self.future.items():
            for p in self.parts(n):
                _occupy(units[p], s + length)
        for p, used in self.budget.used.items():  # out for other reasons: those units are gone
            for _ in range(max(0, used - ours.get(p, 0))):
                if units[p]:
                    heapq.heappop(units[p])
        for rec in order(todo, snapshot):
            ps = self.parts(rec.node)
            if any(not units.get(p) for p in ps):
                full = ",".join(p for p in ps if not units.get(p))
                result.waiting.setdefault(rec.node, f"capacity budget full in {full}")
                if rec.node in replanned:  # its slot must not open: out of the way, as far as the hold says
                    result.reserve[rec.node] = max(self.not_before(rec.node), now + horizon + 1)
                continue
            ready = max(now, snapshot.idle_at(rec.node), self.not_before(rec.node))
            start = max([ready] + [units[p][0] for p in ps])
            if start <= now + horizon:
                if self.room(rec.node):
                    self.take(rec.node)
                else:
                    start = now + horizon + 1
            for p in ps:
                heapq.heapreplace(units[p], max(units[p][0], start + length))
            result.reserve[rec.node] = start
            if start <= now and not snapshot.busy(rec.node):
                result.drain_now.append(rec.node)


def _occupy(unit_heap: list[float], until: float) -> None:
    """The earliest-free unit is busy until `until` (or later, if it already was)."""
    if unit_heap:
        heapq.heapreplace(unit_heap, max(unit_heap[0], until))
