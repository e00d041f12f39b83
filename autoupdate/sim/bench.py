"""The rollout benchmark: replay a real workload trace, roll a DRAIN update out over every node
at several start points with each strategy, and compare with the same replay without a rollout.

Per start point: the trace is replayed from `warmup` before the start point on an empty cluster
(FCFS + EASY backfill, time limits for planning, real run times for ends); the warmed-up cluster
is forked once per strategy and once for the reference, so all see exactly the same jobs.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .clock import ManualClock
from .cluster import SimCluster
from .scheduler import EasyBackfill
from .strategies import NEW, OLD, Params, all_strategies, jump
from .swf import Trace, TraceWorkload, load

DAY = 86400.0


@dataclass(frozen=True)
class TraceSpec:
    name: str
    file: str
    nodes: int
    cores: int  # per node
    note: str


TRACES = {
    "KTH": TraceSpec("KTH", "KTH-SP2-1996-2.1-cln.swf.gz", 100, 1,
                     "IBM SP2, 100 nodes of 1 processor (MaxNodes = MaxProcs = 100)"),
    "HPC2N": TraceSpec("HPC2N", "HPC2N-2002-2.2-cln.swf.gz", 120, 2,
                       "Linux cluster Seth, 120 dual-processor nodes = 240 processors"),
}


def trace_dir() -> Path:
    env = os.environ.get("AUTOUPDATE_TRACES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "traces"


@dataclass
class RunResult:
    strategy: str
    start: int  # index of the start point
    done_h: float  # until every node runs the update
    lost_nh: float  # node-hours out of service (rebooting, or drained/reserved and idle)
    deficit_nh: float  # node-hours of work done less than the reference in the same span
    killed: int
    wait_mean_h: float  # extra wait of jobs submitted during the rollout (vs the reference)
    wait_p95_h: float
    max_out: int
    budget: int | None  # the most nodes it may take out at once (None: no budget)
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (hours since start, out)


@dataclass
class StartPoint:
    index: int
    trace_time: float
    running_jobs: int
    queued_jobs: int
    bound_h: float  # latest end of the jobs running at the start + one reboot
    results: list[RunResult] = field(default_factory=list)


def warm_cluster(trace: Trace, spec: TraceSpec, start: float, warmup: float, p: Params) -> tuple[SimCluster, ManualClock, TraceWorkload]:
    clock = ManualClock(0.0)
    workload = TraceWorkload(trace.jobs, at=0.0, offset_from=start - warmup, max_procs=spec.nodes * spec.cores)
    workload.seek(start - warmup)
    names = [f"n{i:03d}" for i in range(spec.nodes)]
    cluster = SimCluster({"batch": names}, clock, reboot_seconds=p.reboot_seconds, workload=workload,
                         scheduler=EasyBackfill(), cores_per_node=spec.cores, revision=OLD)
    clock.advance(warmup)
    cluster.advance()
    cluster.job_starts = {}
    cluster.stats.timeline.clear()
    return cluster, clock, workload


def submitted_between(workload: TraceWorkload, t0: float, t1: float) -> dict[str, float]:
    """Job id -> submit time (cluster time) of the trace jobs submitted in [t0, t1]."""
    out = {}
    for j in workload.jobs[workload.index:]:
        at = j.submit + workload.shift
        if at > t1:
            break
        if at >= t0:
            out[j.job_id] = at
    return out


def run_until_started(cluster: SimCluster, clock, t_end: float) -> None:
    """Go on until every job submitted up to t_end has started (and at least until t_end)."""
    while clock.now() < t_end or (cluster.queue and min(j.submit for j in cluster.queue[:50]) <= t_end):
        if not jump(cluster, clock, until=t_end if clock.now() < t_end else None):
            break


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    k = min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))
    return s[k]


def run_start_point(spec: TraceSpec, trace: Trace, index: int, start: float, warmup: float,
                    p: Params, strategies=None) -> StartPoint:
    base, base_clock, workload = warm_cluster(trace, spec, start, warmup, p)
    t0 = base_clock.now()
    bound = max([j.end for j in base.jobs.values()] + [t0]) + p.reboot_seconds - t0
    point = StartPoint(index, start, len(base.jobs), len(base.queue), bound / 3600)
    runs = []
    for strategy in strategies or all_strategies():
        clock = ManualClock(t0)
        cluster = base.fork(clock)
        strategy.run(cluster, clock, p)
        assert all(n.running == NEW for n in cluster.nodes.values()), strategy.name
        done = max(n.boot_time for n in cluster.nodes.values()) - t0
        back = clock.now()  # every node back in service
        marks = (back, cluster.stats.busy_core_seconds, cluster.stats.out_of_service_seconds)
        run_until_started(cluster, clock, t0 + done)
        runs.append((strategy, cluster, done, marks))
    ref_clock = ManualClock(t0)
    ref = base.fork(ref_clock)
    ref_busy = {}
    for back in sorted(m[0] for *_, m in runs):
        jump_to(ref, ref_clock, back)
        ref_busy[back] = ref.stats.busy_core_seconds
    run_until_started(ref, ref_clock, t0 + max(done for _, _, done, _ in runs))
    for strategy, cluster, done, (back, busy, out_seconds) in runs:
        window = submitted_between(workload, t0, t0 + done)
        extra = [(cluster.job_starts[j] - ref.job_starts[j]) / 3600 for j in window
                 if j in cluster.job_starts and j in ref.job_starts]
        budget = p.budget_nodes(spec.nodes) if strategy.budgeted else None
        if getattr(strategy, "size", None) == 1:
            budget = 1
        point.results.append(RunResult(
            strategy=strategy.name, start=index, done_h=done / 3600,
            lost_nh=(out_seconds - base.stats.out_of_service_seconds) / 3600,
            deficit_nh=(ref_busy[back] - busy) / spec.cores / 3600,
            killed=cluster.stats.jobs_killed - base.stats.jobs_killed, max_out=cluster.stats.max_out_of_service,
            wait_mean_h=statistics.fmean(extra) if extra else 0.0, wait_p95_h=percentile(extra, 0.95),
            budget=budget, timeline=[((t - t0) / 3600, out) for t, out in cluster.stats.timeline if t >= t0]))
    return point


def jump_to(cluster: SimCluster, clock, t: float) -> None:
    while clock.now() < t:
        if not jump(cluster, clock, until=t):
            clock.advance(t - clock.now())
            cluster.advance()


def start_points(trace: Trace, count: int, warmup: float, tail: float = 60 * DAY) -> list[float]:
    first, last = trace.jobs[0].submit + warmup, trace.jobs[-1].submit - tail
    if count == 1:
        return [first]
    return [first + i * (last - first) / (count - 1) for i in range(count)]
