"""A simulated Slurm cluster: nodes in partitions, jobs that run to their end, a queue that a
first-come-first-served scheduler starts on free nodes, drains, reboots that take time, nodes
that fail to come back, maintenance reservations. It implements the WorkloadManager port, so the
engine cannot tell it from Slurm.

Time is whatever the clock says; the cluster catches up lazily on every call.
"""
from __future__ import annotations

import heapq
import itertools
import random
import threading
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from ..model import ClusterSnapshot, Job, NodeBase, NodeInfo, NodeRecord, Reservation
from ..nodeset import expand
from ..ports import ApplyResult, RebootStatus, WorkloadManagerError
from ..rebooting import booted


@dataclass
class SimJob:
    job_id: str
    size: int  # nodes
    runtime: float  # how long it really runs
    limit: float  # requested time limit (>= runtime)
    submit: float
    nodes: tuple[str, ...] = ()
    start: float | None = None
    killed: bool = False

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
    job: str | None = None


@dataclass
class Stats:
    jobs_started: int = 0
    jobs_completed: int = 0
    jobs_killed: int = 0
    reboots: int = 0
    max_out_of_service: int = 0
    out_of_service_seconds: float = 0.0  # node-seconds drained-and-idle or rebooting
    timeline: list[tuple[float, int]] = field(default_factory=list)


class SimCluster:
    def __init__(self, partitions: Mapping[str, Sequence[str]], clock, *, reboot_seconds: float = 300.0,
                 fail_nodes: Iterable[str] = (), revision: str = "", workload: "Workload | None" = None):
        self.clock = clock
        self.reboot_seconds = reboot_seconds
        self.fail_nodes = set(fail_nodes)
        self._lock = threading.RLock()
        now = clock.now()
        parts: dict[str, list[str]] = {}
        for p, nodes in partitions.items():
            for n in nodes:
                parts.setdefault(n, []).append(p)
        self.nodes = {n: SimNode(n, tuple(ps), boot_time=now - 86400, running=revision, staged=revision)
                      for n, ps in sorted(parts.items())}
        self.jobs: dict[str, SimJob] = {}
        self.queue: list[SimJob] = []
        self.reservations: dict[str, Reservation] = {}
        self.stats = Stats()
        self.workload = workload
        self._ids = itertools.count(1)
        self._t = now
        self.unreadable = False  # tests: make snapshot() fail like an unreachable slurmctld
        self.calls = 0
        if workload is not None:
            for job in workload.initial(self, now):
                self.submit(job)
        self._schedule(now)

    # --- workload -----------------------------------------------------------------------------
    def new_job_id(self) -> str:
        return str(next(self._ids))

    def submit(self, job: SimJob) -> None:
        with self._lock:
            self.queue.append(job)

    def _free(self, node: SimNode, t: float, until: float) -> bool:
        if node.job or node.drained or node.dead or node.reboot_until is not None or node.reboot_asap:
            return False
        for r in self.reservations.values():
            if node.name in r.nodes and r.start_time < until and r.end_time > t:
                return False  # a maint reservation: only jobs that end before it may start
        return True

    def _schedule(self, t: float) -> None:
        """First come, first served: start queued jobs in order while they fit."""
        while self.queue:
            job = self.queue[0]
            free = [n for n in self.nodes.values() if self._free(n, t, t + job.limit)]
            if len(free) < job.size:
                break
            self.queue.pop(0)
            job.start, job.nodes = t, tuple(n.name for n in free[:job.size])
            for n in job.nodes:
                self.nodes[n].job = job.job_id
            self.jobs[job.job_id] = job
            self.stats.jobs_started += 1

    def _next_event(self) -> float | None:
        times = [j.end for j in self.jobs.values()]
        times += [n.reboot_until for n in self.nodes.values() if n.reboot_until is not None]
        return min(times) if times else None

    def _advance(self, now: float) -> None:
        """Replay everything that happened between the last call and now, in time order."""
        while True:
            t = self._next_event()
            if t is None or t > now:
                break
            self._account(t)
            for job in [j for j in self.jobs.values() if j.end <= t]:
                self._end_job(job, t)
            for node in self.nodes.values():
                if node.reboot_until is not None and node.reboot_until <= t:
                    self._boot(node, t)
            if self.workload is not None:
                for job in self.workload.arrivals(self, t):
                    self.submit(job)
            self._schedule(t)
        self._account(now)
        self._schedule(now)

    def _account(self, t: float) -> None:
        out = sum(1 for n in self.nodes.values() if self._out_of_service(n))
        self.stats.out_of_service_seconds += out * max(0.0, t - self._t)
        self.stats.max_out_of_service = max(self.stats.max_out_of_service, out)
        if not self.stats.timeline or self.stats.timeline[-1][1] != out:
            self.stats.timeline.append((t, out))
        self._t = max(self._t, t)

    @staticmethod
    def _out_of_service(n: SimNode) -> bool:
        return n.dead or n.reboot_until is not None or (n.drained and n.job is None)

    def _end_job(self, job: SimJob, t: float) -> None:
        del self.jobs[job.job_id]
        for n in job.nodes:
            node = self.nodes[n]
            node.job = None
            if node.reboot_asap:
                self._start_reboot(node, t)
        self.stats.jobs_completed += 1

    def _start_reboot(self, node: SimNode, t: float) -> None:
        if node.job is not None:  # would kill a job: count it, the tests assert it never happens
            job = self.jobs.pop(node.job)
            job.killed = True
            self.stats.jobs_killed += 1
            for n in job.nodes:
                self.nodes[n].job = None
        node.reboot_asap = False
        node.reboot_until = t + self.reboot_seconds
        self.stats.reboots += 1

    def _boot(self, node: SimNode, t: float) -> None:
        node.reboot_until = None
        if node.name in self.fail_nodes:
            node.dead = True
            return
        node.boot_time = t
        node.running = node.staged

    # --- WorkloadManager ----------------------------------------------------------------------
    def snapshot(self) -> ClusterSnapshot:
        with self._lock:
            self.calls += 1
            if self.unreadable:
                raise WorkloadManagerError("simulated slurmctld is not answering")
            now = self.clock.now()
            self._advance(now)
            infos = {n.name: self._info(n) for n in self.nodes.values()}
            jobs = tuple(Job(j.job_id, j.nodes, j.start, j.limit_end) for j in self.jobs.values())
            return ClusterSnapshot(taken_at=now, nodes=infos, jobs=jobs,
                                   reservations=tuple(self.reservations.values()))

    def _info(self, n: SimNode) -> NodeInfo:
        flags: set[str] = set()
        base = NodeBase.ALLOCATED if n.job else NodeBase.IDLE
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
        if any(n.name in r.nodes and r.start_time <= self._t < r.end_time for r in self.reservations.values()):
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

    def resume(self, nodes: Sequence[str]) -> None:
        with self._lock:
            now = self.clock.now()
            self._advance(now)
            for n in self._nodes(nodes):
                n.drained, n.reason = False, ""
            self._schedule(now)

    def reboot(self, nodes: Sequence[str], reason: str = "") -> None:
        """Like `scontrol reboot ASAP`: reboots once the node is idle."""
        with self._lock:
            now = self.clock.now()
            self._advance(now)
            for n in self._nodes(nodes):
                if n.job is None:
                    self._start_reboot(n, now)
                else:
                    n.reboot_asap = True

    def power_reset(self, node: str) -> None:
        """Like a BMC reset: immediate, whatever runs (kills jobs: counted)."""
        with self._lock:
            now = self.clock.now()
            self._advance(now)
            self._start_reboot(self._nodes([node])[0], now)

    def reserve(self, name: str, node: str, start_time: float, reason: str) -> None:
        with self._lock:
            self.reservations[name] = Reservation(name, (node,), start_time, start_time + 10 * 365 * 86400,
                                                  frozenset({"MAINT"}), ("root",))

    def unreserve(self, name: str) -> None:
        with self._lock:
            self.reservations.pop(name, None)

    # --- what the sim applier and rebooter use ------------------------------------------------
    def stage(self, nodes: Sequence[str], revision: str, live: bool) -> None:
        with self._lock:
            for n in self._nodes(nodes):
                n.staged = revision
                if live:
                    n.running = revision


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
                      fail_nodes=expand(sim.fail_nodes), workload=workload)


def applier_from_settings(settings, deps) -> SimApplier:
    return SimApplier(deps.workload_manager)


def rebooter_from_settings(settings, deps) -> SimRebooter:
    return SimRebooter(deps.workload_manager, settings.reboot.timeout)
