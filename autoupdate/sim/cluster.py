"""A simulated Slurm cluster: nodes (with cores) in partitions, jobs that run to their end, a
queue that a pluggable batch scheduler (FCFS, or EASY backfill: sim/scheduler.py) starts on free
nodes, drains, reboots that take time, nodes that fail to come back, maintenance reservations.
It implements the WorkloadManager port, so the engine cannot tell it from Slurm.

Time is whatever the clock says; the cluster catches up lazily on every call, event by event
(job ends, boots, reservation starts, arrivals) from a heap, keeping running counts (free cores,
nodes out of service) so that replaying weeks of a real trace stays cheap.
"""
from __future__ import annotations

import copy
import heapq
import itertools
import math
import random
import threading
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from ..model import ClusterSnapshot, Job, NodeBase, NodeInfo, NodeRecord, PendingJob, Reservation
from ..nodeset import expand
from ..ports import ApplyResult, RebootStatus, WorkloadManagerError
from ..rebooting import booted
from .scheduler import FCFS


@dataclass
class SimJob:
    job_id: str
    size: int  # nodes (whole nodes, used when procs is 0)
    runtime: float  # how long it really runs
    limit: float  # requested time limit (>= runtime)
    submit: float
    nodes: tuple[str, ...] = ()
    start: float | None = None
    killed: bool = False
    procs: int = 0  # cores wanted, packed onto nodes; 0: `size` whole nodes
    alloc: dict[str, int] = field(default_factory=dict)  # node -> cores used there

    def view(self) -> Job:
        """What the workload manager shows of this running job (built once: snapshots are hot)."""
        v = self.__dict__.get("_view")
        if v is None or v.start_time != self.start or v.nodes != self.nodes:
            v = self.__dict__["_view"] = Job(self.job_id, self.nodes, self.start, self.limit_end)
        return v

    @property
    def end(self) -> float:
        return self.start + self.runtime  # type: ignore[operator]

    @property
    def limit_end(self) -> float:
        return self.start + self.limit  # type: ignore[operator]


@dataclass
class SimNode:
    name: str
    partitions: tuple[str, ...]
    boot_time: float
    drained: bool = False
    reason: str = ""
    reason_user: str = ""
    reboot_until: float | None = None  # rebooting until then
    reboot_asap: bool = False  # reboot requested once idle
    dead: bool = False  # never came back
    running: str = ""  # revision the node booted / runs
    staged: str = ""  # revision applied, active after the next boot
    cores: int = 1
    jobs: dict[str, int] = field(default_factory=dict)  # job id -> cores it uses here
    used: int = 0

    @property
    def job(self) -> str | None:
        """One job on the node (None: idle); setting it places a whole-node job by hand."""
        return next(iter(self.jobs), None)

    @job.setter
    def job(self, job_id: str | None) -> None:
        self.jobs = {} if job_id is None else {job_id: self.cores}
        self.used = sum(self.jobs.values())

    @property
    def usable(self) -> bool:
        """May the scheduler start jobs here (reservations aside)?"""
        return not (self.drained or self.dead or self.reboot_until is not None or self.reboot_asap)


@dataclass
class Stats:
    jobs_started: int = 0
    jobs_completed: int = 0
    jobs_killed: int = 0
    reboots: int = 0
    max_out_of_service: int = 0
    out_of_service_seconds: float = 0.0  # node-seconds rebooting, or drained/reserved and idle
    busy_core_seconds: float = 0.0
    timeline: list[tuple[float, int]] = field(default_factory=list)


class _JobTable(dict):
    """cluster.jobs. A job put in by hand (tests place jobs on chosen nodes) is registered."""

    on_set = None

    def __setitem__(self, key, job) -> None:
        super().__setitem__(key, job)
        if self.on_set is not None:
            self.on_set(job)

    def __deepcopy__(self, memo):
        new = _JobTable()
        memo[id(self)] = new
        dict.update(new, {k: copy.deepcopy(v, memo) for k, v in self.items()})
        new.on_set = copy.deepcopy(self.on_set, memo)
        return new


class SimCluster:
    def __init__(self, partitions: Mapping[str, Sequence[str]], clock, *, reboot_seconds: float = 300.0,
                 fail_nodes: Iterable[str] = (), revision: str = "", workload: "Workload | None" = None,
                 scheduler=None, cores_per_node: int = 1, reservation_seconds: float | None = None):
        self.clock = clock
        self.reboot_seconds = reboot_seconds
        self.reservation_seconds = reservation_seconds  # length of reserve() without an end (None: until removed)
        self.fail_nodes = set(fail_nodes)
        self.scheduler = scheduler or FCFS()
        self.cores_per_node = cores_per_node
        self._lock = threading.RLock()
        now = clock.now()
        parts: dict[str, list[str]] = {}
        for p, nodes in partitions.items():
            for n in nodes:
                parts.setdefault(n, []).append(p)
        self.nodes = {n: SimNode(n, tuple(ps), boot_time=now - 86400, running=revision, staged=revision,
                                 cores=cores_per_node)
                      for n, ps in sorted(parts.items())}
        self.jobs: dict[str, SimJob] = _JobTable()
        self.jobs.on_set = self._placed
        self.queue: list[SimJob] = []
        self.reservations: dict[str, Reservation] = {}
        self._resv_by_node: dict[str, list[Reservation]] = {}
        self.stats = Stats()
        self.workload = workload
        self.job_starts: dict[str, float] | None = None  # set to {} to record every job's start
        self._ids = itertools.count(1)
        self._t = now
        self._events: list[tuple[float, int, str, str]] = []
        self._seq = itertools.count()
        self._avail: dict[str, int] = {}  # usable nodes with free cores -> free cores
        self.free_cores = 0
        self._oos: set[str] = set()
        self._busy_cores = 0
        self._infos: dict[str, NodeInfo] = {}  # node views for snapshots; dropped when the node changes
        self._views: dict[str, Job] = {}  # running jobs as snapshots show them
        self._dirty = True
        self.unreadable = False  # tests: make snapshot() fail like an unreachable slurmctld
        self.calls = 0
        for node in self.nodes.values():
            self._refresh(node)
        if workload is not None:
            for job in workload.initial(self, now):
                self.submit(job)
        self._schedule(now)

    # --- copying (benchmarks fork one warmed-up cluster per strategy) -------------------------
    def __getstate__(self):
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def fork(self, clock) -> "SimCluster":
        with self._lock:
            twin = copy.deepcopy(self)
        twin.clock = clock
        return twin

    # --- workload -----------------------------------------------------------------------------
    def new_job_id(self) -> str:
        return str(next(self._ids))

    def submit(self, job: SimJob) -> None:
        with self._lock:
            self.queue.append(job)
            self._dirty = True

    def cores_needed(self, job: SimJob) -> int:
        return job.procs or job.size * self.cores_per_node

    def releasable_cores(self, job: SimJob) -> int:
        """Cores this job gives back to the scheduler when it ends."""
        return sum(c for n, c in job.alloc.items() if self.nodes[n].usable)

    def _resv_ok(self, node: str, t: float, until: float) -> bool:
        return not any(r.start_time < until and r.end_time > t for r in self._resv_by_node.get(node, ()))

    def allocate(self, job: SimJob, t: float) -> dict[str, int] | None:
        """Where the job could start now (node -> cores), or None. A job may not overlap a
        maintenance reservation on any of its nodes."""
        need = self.cores_needed(job)
        if need > self.free_cores:
            return None
        until = t + job.limit
        ok = (lambda n: True) if not self._resv_by_node else (lambda n: self._resv_ok(n, t, until))
        if not job.procs:
            whole = [n for n in sorted(self._avail) if self._avail[n] == self.nodes[n].cores and ok(n)]
            if len(whole) < job.size:
                return None
            return {n: self.nodes[n].cores for n in whole[:job.size]}
        alloc: dict[str, int] = {}
        got = 0
        for n in sorted(self._avail, key=lambda n: (self._avail[n], n)):  # fill part-used nodes first
            if not ok(n):
                continue
            take = min(self._avail[n], need - got)
            alloc[n] = take
            got += take
            if got == need:
                return alloc
        return None

    def earliest_start(self, job: SimJob, t: float, candidates: int = 64) -> tuple[float, int]:
        """When `job` could start by the running jobs' time limits, on nodes that no maintenance
        reservation holds for its whole time limit (as Slurm's backfill plans it), and the cores
        spare then; (inf, 0) if not within the first `candidates` job or reservation ends."""
        need, whole = self.cores_needed(job), not job.procs
        times = sorted({t} | {j.limit_end for j in self.jobs.values() if j.limit_end > t}
                       | {r.end_time for r in self.reservations.values() if t < r.end_time < math.inf})
        usable = [n for n in self.nodes.values() if n.usable]
        for at in times[:candidates]:
            spare = 0
            for n in usable:
                if not self._resv_ok(n.name, at, at + job.limit):
                    continue
                free = n.cores - sum(c for j, c in n.jobs.items() if self.jobs[j].limit_end > at)
                spare += (n.cores if free == n.cores else 0) if whole else free
            if spare >= need:
                return at, spare - need
        return math.inf, 0

    def reservations_ahead(self, t: float) -> bool:
        return any(r.end_time > t for r in self.reservations.values())

    def start_job(self, job: SimJob, alloc: dict[str, int], t: float) -> None:
        job.start, job.nodes, job.alloc = t, tuple(alloc), dict(alloc)
        dict.__setitem__(self.jobs, job.job_id, job)
        self._views[job.job_id] = job.view()
        for n, c in alloc.items():
            node = self.nodes[n]
            node.jobs[job.job_id] = c
            node.used += c
            self._refresh(node)
        self._busy_cores += sum(alloc.values())
        self._push(job.end, "end", job.job_id)
        self.stats.jobs_started += 1
        if self.job_starts is not None:
            self.job_starts[job.job_id] = t

    def _placed(self, job: SimJob) -> None:
        """A job put straight into `jobs` (tests): it holds its nodes wholly until it ends."""
        if not job.alloc:
            job.alloc = {n: self.nodes[n].cores for n in job.nodes}
        for n, c in job.alloc.items():
            node = self.nodes[n]
            node.jobs[job.job_id] = c
            node.used = sum(node.jobs.values())
            self._refresh(node)
        self._busy_cores += sum(job.alloc.values())
        self._views[job.job_id] = job.view()
        self._push(job.end, "end", job.job_id)

    def _schedule(self, t: float) -> None:
        if self._dirty:
            self._dirty = False
            self.scheduler.schedule(self, t)

    # --- events -------------------------------------------------------------------------------
    def _push(self, t: float, kind: str, key: str) -> None:
        heapq.heappush(self._events, (t, next(self._seq), kind, key))

    def _next_event(self) -> float | None:
        t = self._events[0][0] if self._events else None
        nxt = getattr(self.workload, "next_time", None)
        arrival = nxt() if nxt is not None else None
        if arrival is not None and (t is None or arrival < t):
            t = arrival
        return t

    def _advance(self, now: float) -> None:
        """Replay everything that happened between the last call and now, in time order."""
        while True:
            t = self._next_event()
            if t is None or t > now:
                break
            self._account(t)
            while self._events and self._events[0][0] <= t:
                _, _, kind, key = heapq.heappop(self._events)
                self._handle(kind, key, t)
            if self.workload is not None:
                for job in self.workload.arrivals(self, t):
                    self.submit(job)
            self._schedule(t)
        self._account(now)
        self._schedule(now)

    def _handle(self, kind: str, key: str, t: float) -> None:
        if kind == "end":
            job = self.jobs.get(key)
            if job is not None and job.end <= t:
                self._end_job(job, t)
        elif kind == "boot":
            node = self.nodes[key]
            if node.reboot_until is not None and node.reboot_until <= t:
                self._boot(node, t)
        elif kind == "resv":  # a reservation on this node starts or ends (Slurm then deletes it)
            for r in [r for r in self._resv_by_node.get(key, ()) if r.end_time <= t]:
                self.unreserve(r.name)
            self._refresh(self.nodes[key])

    def _account(self, t: float) -> None:
        dt = max(0.0, t - self._t)
        self.stats.out_of_service_seconds += len(self._oos) * dt
        self.stats.busy_core_seconds += self._busy_cores * dt
        self._t = max(self._t, t)

    def _reserved_now(self, node: str) -> bool:
        return any(r.start_time <= self._t < r.end_time for r in self._resv_by_node.get(node, ()))

    def _out_of_service(self, n: SimNode) -> bool:
        return n.dead or n.reboot_until is not None or (not n.jobs and (n.drained or self._reserved_now(n.name)))

    def _refresh(self, node: SimNode) -> None:
        """Bring the running counts up to date after anything changed on this node."""
        free = node.cores - node.used if node.usable else 0
        old = self._avail.pop(node.name, 0)
        if free > 0:
            self._avail[node.name] = free
        self.free_cores += free - old
        self._infos.pop(node.name, None)
        out = self._out_of_service(node)
        if out != (node.name in self._oos):
            (self._oos.add if out else self._oos.discard)(node.name)
            count = len(self._oos)
            self.stats.max_out_of_service = max(self.stats.max_out_of_service, count)
            tl = self.stats.timeline
            if tl and tl[-1][0] == self._t:
                tl[-1] = (self._t, count)
            else:
                tl.append((self._t, count))
        self._dirty = True

    @property
    def out_of_service(self) -> int:
        return len(self._oos)

    def _end_job(self, job: SimJob, t: float) -> None:
        dict.__delitem__(self.jobs, job.job_id)
        self._views.pop(job.job_id, None)
        self._busy_cores -= sum(job.alloc.values())
        for n, c in job.alloc.items():
            node = self.nodes[n]
            node.jobs.pop(job.job_id, None)
            node.used -= c
            if node.reboot_asap and not node.jobs:
                self._start_reboot(node, t)
            self._refresh(node)
        self.stats.jobs_completed += 1

    def _start_reboot(self, node: SimNode, t: float) -> None:
        for job_id in list(node.jobs):  # would kill a job: count it, the tests assert it never happens
            job = self.jobs[job_id]
            dict.__delitem__(self.jobs, job_id)
            self._views.pop(job_id, None)
            job.killed = True
            self.stats.jobs_killed += 1
            self._busy_cores -= sum(job.alloc.values())
            for n, c in job.alloc.items():
                other = self.nodes[n]
                other.jobs.pop(job_id, None)
                other.used -= c
                self._refresh(other)
        node.reboot_asap = False
        node.reboot_until = t + self.reboot_seconds
        self._push(node.reboot_until, "boot", node.name)
        self.stats.reboots += 1
        self._refresh(node)

    def _boot(self, node: SimNode, t: float) -> None:
        node.reboot_until = None
        if node.name in self.fail_nodes:
            node.dead = True
        else:
            node.boot_time = t
            node.running = node.staged
        self._refresh(node)

    # --- WorkloadManager ----------------------------------------------------------------------
    def snapshot(self) -> ClusterSnapshot:
        with self._lock:
            self.calls += 1
            if self.unreadable:
                raise WorkloadManagerError("simulated slurmctld is not answering")
            now = self.clock.now()
            self._advance(now)
            cache = self._infos
            if len(cache) < len(self.nodes):  # rebuild only the nodes that changed since the last one
                for n in self.nodes.values():
                    if n.name not in cache:
                        cache[n.name] = self._info(n)
            infos = {n: cache[n] for n in self.nodes}
            return ClusterSnapshot(taken_at=now, nodes=infos, jobs=tuple(self._views.values()),
                                   reservations=tuple(self.reservations.values()), pending=self._head())

    def _head(self) -> tuple[PendingJob, ...]:
        """The first job in the queue, as Slurm lists the job its backfill plans for first."""
        if not self.queue:
            return ()
        job = self.queue[0]
        return (PendingJob(job.job_id, -(-self.cores_needed(job) // self.cores_per_node), job.limit),)

    def _info(self, n: SimNode) -> NodeInfo:
        flags: set[str] = set()
        base = NodeBase.IDLE
        if n.jobs:
            base = NodeBase.ALLOCATED if n.used >= n.cores else NodeBase.MIXED
        if n.drained:
            flags.add("DRAIN")
        if n.reboot_asap:
            flags.add("REBOOT_REQUESTED")
        if n.reboot_until is not None:
            base = NodeBase.DOWN
            flags.add("REBOOT_ISSUED")
        if n.dead:
            base = NodeBase.DOWN
            flags.add("NOT_RESPONDING")
        if self._reserved_now(n.name):
            flags.add("MAINTENANCE")
        return NodeInfo(name=n.name, base=base, flags=frozenset(flags), partitions=n.partitions,
                        reason=n.reason if n.drained else "", reason_user=n.reason_user,
                        boot_time=n.boot_time, extra=n.running)

    def _nodes(self, names: Sequence[str]) -> list[SimNode]:
        unknown = [n for n in names if n not in self.nodes]
        if unknown:
            raise WorkloadManagerError(f"unknown node(s): {','.join(unknown)}")
        return [self.nodes[n] for n in names]

    def drain(self, nodes: Sequence[str], reason: str, user: str = "autoupdate") -> None:
        with self._lock:
            self._advance(self.clock.now())
            for n in self._nodes(nodes):
                n.drained, n.reason, n.reason_user = True, reason, user
                self._refresh(n)

    def resume(self, nodes: Sequence[str]) -> None:
        with self._lock:
            now = self.clock.now()
            self._advance(now)
            for n in self._nodes(nodes):
                n.drained, n.reason = False, ""
                self._refresh(n)
            self._schedule(now)

    def reboot(self, nodes: Sequence[str], reason: str = "") -> None:
        """Like `scontrol reboot ASAP`: reboots once the node is idle."""
        with self._lock:
            now = self.clock.now()
            self._advance(now)
            for n in self._nodes(nodes):
                if not n.jobs:
                    self._start_reboot(n, now)
                else:
                    n.reboot_asap = True
                    self._refresh(n)

    def power_reset(self, node: str) -> None:
        """Like a BMC reset: immediate, whatever runs (kills jobs: counted)."""
        with self._lock:
            now = self.clock.now()
            self._advance(now)
            self._start_reboot(self._nodes([node])[0], now)

    def reserve(self, name: str, node: str, start_time: float, reason: str,
                end_time: float | None = None) -> None:
        """A maintenance reservation (one node); the same name again moves it."""
        with self._lock:
            self._advance(self.clock.now())
            self._nodes([node])
            self.unreserve(name)
            end = end_time if end_time is not None else start_time + (self.reservation_seconds or 10 * 365 * 86400)
            r = Reservation(name, (node,), start_time, end, frozenset({"MAINT"}), ("root",))
            self.reservations[name] = r
            self._resv_by_node.setdefault(node, []).append(r)
            self._push(start_time, "resv", node)
            self._push(end, "resv", node)
            self._refresh(self.nodes[node])

    def unreserve(self, name: str) -> None:
        with self._lock:
            r = self.reservations.pop(name, None)
            if r is None:
                return
            for n in r.nodes:
                left = [x for x in self._resv_by_node.get(n, ()) if x is not r]
                if left:
                    self._resv_by_node[n] = left
                else:
                    self._resv_by_node.pop(n, None)
                self._refresh(self.nodes[n])

    def advance(self) -> None:
        """Catch up with the clock (benchmarks drive the cluster without snapshots)."""
        with self._lock:
            self._advance(self.clock.now())

    def next_event_time(self) -> float | None:
        """When something next happens on its own (a job ends, a node boots, a job arrives)."""
        with self._lock:
            return self._next_event()

    # --- what the sim applier and rebooter use ------------------------------------------------
    def stage(self, nodes: Sequence[str], revision: str, live: bool) -> None:
        with self._lock:
            for n in self._nodes(nodes):
                n.staged = revision
                if live:
                    n.running = revision
                    self._infos.pop(n.name, None)


class Workload:
    """A closed-loop random workload: keeps the queue about `depth` jobs deep."""

    def __init__(self, seed: int, job_seconds: tuple[float, float], depth: int, max_size: int = 1):
        self.rng = random.Random(seed)
        self.job_seconds = job_seconds
        self.depth = depth
        self.max_size = max_size

    def _job(self, cluster: SimCluster, t: float) -> SimJob:
        runtime = self.rng.uniform(*self.job_seconds)
        limit = runtime * self.rng.uniform(1.0, 2.0)  # users ask for more than they use
        size = self.rng.randint(1, self.max_size)
        return SimJob(cluster.new_job_id(), size, runtime, limit, t)

    def initial(self, cluster: SimCluster, t: float) -> list[SimJob]:
        # Jobs already part-way through: they end at spread-out times.
        jobs = []
        for _ in range(len(cluster.nodes) + self.depth):
            j = self._job(cluster, t)
            j.runtime = self.rng.uniform(0.05, 1.0) * j.runtime
            jobs.append(j)
        return jobs

    def arrivals(self, cluster: SimCluster, t: float) -> list[SimJob]:
        return [self._job(cluster, t) for _ in range(max(0, self.depth - len(cluster.queue)))]


# --- adapters for the engine -----------------------------------------------------------------

class SimApplier:
    def __init__(self, cluster: SimCluster, fail: Iterable[str] = ()):
        self.cluster = cluster
        self.fail = set(fail)

    def apply(self, nodes, target, klass, actions) -> dict[str, ApplyResult]:
        ok = [n for n in nodes if n not in self.fail]
        self.cluster.stage(ok, target.sha, live=klass.name == "HOT")
        return {n: ApplyResult(n in ok, "" if n in ok else "simulated apply failure") for n in nodes}


class SimRebooter:
    def __init__(self, cluster: SimCluster, timeout: float):
        self.cluster = cluster
        self.timeout = timeout

    def start(self, record: NodeRecord, snapshot: ClusterSnapshot) -> None:
        self.cluster.reboot([record.node], "autoupdate")

    def poll(self, record: NodeRecord, snapshot: ClusterSnapshot, now: float) -> RebootStatus:
        why = booted(record, snapshot)
        if why is None:
            return RebootStatus("done")
        if now - record.since > self.timeout:
            return RebootStatus("failed", f"not back after {self.timeout:g}s: {why}")
        return RebootStatus("in_progress", why)


class SimRevisionCheck:
    """The node must run the target revision (the sim publishes it like Slurm's Extra field)."""

    def check(self, record: NodeRecord, snapshot: ClusterSnapshot) -> str | None:
        info = snapshot.nodes.get(record.node)
        running = info.extra if info else ""
        return None if running == record.target else f"runs {running[:12] or 'nothing'}, expected {record.target[:12]}"


def from_settings(settings, deps) -> SimCluster:
    sim = settings.cluster.sim
    partitions = {p: expand(nodes) for p, nodes in sim.partitions.items()}
    n_nodes = len({n for ns in partitions.values() for n in ns})
    workload = Workload(sim.seed, tuple(sim.job_seconds), int(sim.jobs_per_node * n_nodes))
    return SimCluster(partitions, deps.clock, reboot_seconds=sim.reboot_seconds,
                      fail_nodes=expand(sim.fail_nodes), workload=workload,
                      reservation_seconds=settings.rollout.reservation_seconds)


def applier_from_settings(settings, deps) -> SimApplier:
    return SimApplier(deps.workload_manager)


def rebooter_from_settings(settings, deps) -> SimRebooter:
    return SimRebooter(deps.workload_manager, settings.reboot.timeout)
