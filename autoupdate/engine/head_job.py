"""Give way to the job at the head of the queue (drain_strategy: reservation).

Slurm's backfill plans the first pending job on the nodes that are up, keeping clear of their
reservations. A node that autoupdate drains or reboots drops out of that plan, even for ten
minutes, and so does one whose maintenance slot overlaps the job's time limit. When that moves
the job's planned start, backfill fills the gap with jobs that end before the new start, and
the wide job waits many hours more (bench/: KTH, a 60-node job planned 1 h ahead waited 14 h).

So the slots of our nodes that job counts on move out of its way, to after its time limit
(the engine adds one slot length; Slurm still runs jobs there that end before), when all of
these hold:
- it needs them (its spare nodes, more than it needs, still go: canaries first);
- taking them would delay it by more than its own time limit, the most that waiting can cost
  the rollout on those nodes;
- the rollout cannot end before then anyway: one of its nodes is busy until later;
- it is not only our slots opening now that keep it from starting (those nodes are on their
  way out: they go first, it waits a slot or two).
Decided again every tick: once it has started, the nodes it did not take get their slots.
"""
from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import dataclass
from typing import Collection, Mapping

from ..model import ChangeClass, ClusterSnapshot, NodeBase, NodeInfo, NodePhase, NodeRecord, PendingJob, Reservation
from .planner import order


@dataclass(frozen=True)
class GiveWay:
    job: str
    until: float  # the head job's planned start + its time limit
    why: str
    nodes: frozenset[str]  # ours that wait until then


_UP = frozenset(NodeBase) - {NodeBase.DOWN, NodeBase.UNKNOWN}
_OVER = frozenset(p for p in NodePhase if p.terminal)
_WAITING = (NodePhase.PENDING, NodePhase.DRAINING)  # ours, not out of service yet


def schedulable(info: NodeInfo) -> bool:
    """May the scheduler plan a job on this node (reservations aside)?"""
    if not info.flags and not info.unknown_state:  # the common case, asked of every node
        return info.base in _UP
    return info.state_known and info.responding and not info.drained and not info.rebooting


@dataclass
class _Nodes:
    """The nodes a job may run on, read once per tick."""

    free: list[tuple[float, str]]  # when each is free by its jobs' limits (now if idle), unsorted
    theirs: dict[str, list[Reservation]]  # someone else's reservations not over yet, per node


def _scan(snapshot: ClusterSnapshot, job: PendingJob) -> _Nodes:
    now, part, busy = snapshot.taken_at, job.partition, snapshot.busy_until
    theirs: dict[str, list[Reservation]] = {}
    for r in snapshot.reservations:
        if r.end_time > now and not r.ours:
            for n in r.nodes:
                theirs.setdefault(n, []).append(r)
    free = [(busy.get(name, now), name) for name, info in snapshot.nodes.items()
            if (not part or part in info.partitions) and schedulable(info)]
    return _Nodes(free, theirs)


def _clear(t: float, limit: float, rs: list[Reservation]) -> bool:
    return all(r.start_time >= t + limit or r.end_time <= t for r in rs)


def _start(nodes: _Nodes, job: PendingJob, without: Collection[str] = ()) -> tuple[float, list[str]]:
    """planned_start() on nodes read once."""
    if not nodes.theirs:  # the common case: when its job.nodes-th node is free (no sort of every node)
        soonest = [f for f, n in heapq.nsmallest(job.nodes + len(without), nodes.free) if n not in without]
        if not 0 < job.nodes <= len(soonest):
            return math.inf, []
        t = soonest[job.nodes - 1]
        return t, [n for f, n in sorted(x for x in nodes.free if x[0] <= t and x[1] not in without)]
    free = sorted(nodes.free)
    plain = [(f, n) for f, n in free if n not in nodes.theirs and n not in without]
    fenced = [(f, n, nodes.theirs[n]) for f, n in free if n in nodes.theirs and n not in without]
    ends = [f for f, _ in plain]
    for t in sorted({*ends, *(f for f, _, _ in fenced), *(r.end_time for *_, rs in fenced for r in rs)}):
        fits = [n for f, n, rs in fenced if f <= t and _clear(t, job.time_limit, rs)]
        count = bisect.bisect_right(ends, t)
        if count + len(fits) >= job.nodes:
            return t, [n for _, n in plain[:count]] + fits
    return math.inf, []


def planned_start(snapshot: ClusterSnapshot, job: PendingJob, without: Collection[str] = ()) -> tuple[float, list[str]]:
    """When `job` can start by the running jobs' time limits, on nodes no one else's
    reservation holds during its limit (our own slots left out: they can move), and the nodes
    free for it then; (inf, []) if not by the last job end. `without`: nodes taken out."""
    return _start(_scan(snapshot, job), job, without)


def _later(snapshot: ClusterSnapshot, records: Mapping[str, NodeRecord], t: float) -> bool:
    """Is one of the rollout's DRAIN nodes busy until t or later? Then the rollout cannot end
    before t anyway, and waiting until then costs it nothing."""
    busy = snapshot.busy_until
    return any(busy.get(n, 0.0) >= t and r.klass >= ChangeClass.DRAIN and r.phase not in _OVER
               for n, r in records.items())


def give_way(snapshot: ClusterSnapshot, records: Mapping[str, NodeRecord], committed: float = 0.0) -> GiveWay | None:
    """Which of our waiting nodes keep clear of the head job, and until when; None: none.
    `committed`: slots opening before then are under way (slots.plan's horizon)."""
    if not snapshot.pending:
        return None
    job = snapshot.pending[0]
    nodes = _scan(snapshot, job)
    start, free = _start(nodes, job)
    ours = {n: records[n] for n in free  # DRAIN nodes of ours in service (free ones are), waiting for a slot
            if n in records and records[n].klass >= ChangeClass.DRAIN and records[n].phase in _WAITING}
    until = start + job.time_limit
    if not ours or not _later(snapshot, records, until):
        return None
    # Its spare nodes go first, in the planner's order (canaries first, then the soonest free).
    counted = [r.node for r in order(ours.values(), snapshot)]
    keep = frozenset(counted[max(0, len(free) - job.nodes):])
    # Waiting costs the rollout at most the job's time limit on these nodes: worth it only if
    # taking them would delay the job by more than that.
    if not keep or _start(nodes, job, keep)[0] - start <= job.time_limit:
        return None
    # Only our slots opening now keep it from starting: they go first, it waits a slot or two.
    if sum(_clear(start, job.time_limit, [r for r in snapshot.reservations_on(n) if r.ours and r.start_time < committed])
           for n in free) < job.nodes:
        return None
    return GiveWay(job.job_id, until, f"giving way to job {job.job_id} ({job.nodes} nodes)", keep)
