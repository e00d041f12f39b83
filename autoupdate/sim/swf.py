"""Standard Workload Format (SWF) traces: the Parallel Workloads Archive's job logs.

Only what a replay needs: when each job was submitted, how many processors it got, how long it
really ran and how long it asked for. Jobs that never ran (no run time or no processors) are
skipped; a job that ran past its request gets its run time as its limit (the real scheduler let
it, so ours must not kill it).
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class TraceJob:
    job_id: str
    submit: float  # seconds after the trace start
    wait: float  # how long it waited in the real system (-1 unknown)
    runtime: float
    procs: int
    limit: float  # requested wall time, never below the run time


@dataclass
class Trace:
    name: str
    header: dict[str, str] = field(default_factory=dict)
    jobs: list[TraceJob] = field(default_factory=list)
    skipped: int = 0  # job lines that never ran

    @property
    def max_procs(self) -> int:
        return int(self.header.get("MaxProcs", "0") or 0)

    @property
    def max_nodes(self) -> int:
        return int(self.header.get("MaxNodes", "0") or 0)

    @property
    def span(self) -> float:
        return self.jobs[-1].submit - self.jobs[0].submit if self.jobs else 0.0


def _open(path: Path):
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path)


def parse_line(line: str) -> TraceJob | None:
    """One job line -> TraceJob, or None for a job that never ran."""
    f = line.split()
    if len(f) < 9:
        raise ValueError(f"an SWF job line has 18 fields, this one {len(f)}: {line.strip()[:60]!r}")
    try:
        runtime, procs, requested, submit, wait = float(f[3]), int(f[4]), float(f[8]), float(f[1]), float(f[2])
        if procs <= 0:
            procs = int(f[7])  # allocated unknown: the request
    except ValueError:
        raise ValueError(f"an SWF job line holds numbers: {line.strip()[:60]!r}") from None
    if runtime <= 0 or procs <= 0:
        return None
    limit = max(requested, runtime) if requested > 0 else runtime
    return TraceJob(job_id=f[0], submit=submit, wait=wait, runtime=runtime, procs=procs, limit=limit)


def load(path: str | Path) -> Trace:
    path = Path(path)
    trace = Trace(name=path.name.split(".swf")[0])
    with _open(path) as fh:
        for number, line in enumerate(fh, 1):
            if line.startswith(";"):
                key, sep, value = line[1:].partition(":")
                if sep and key.strip() and key.strip() not in trace.header:
                    trace.header[key.strip()] = value.strip()
                continue
            if not line.strip():
                continue
            try:
                job = parse_line(line)
            except ValueError as exc:
                raise ValueError(f"{path}, line {number}: {exc}") from None
            if job is None:
                trace.skipped += 1
            else:
                trace.jobs.append(job)
    trace.jobs.sort(key=lambda j: j.submit)
    return trace


class TraceWorkload:
    """Feeds a trace's jobs to a SimCluster at their submit times (shifted by `offset`, so that
    trace time `offset_from` is cluster time `at`). Forked clusters share the job list."""

    def __init__(self, jobs: list[TraceJob], at: float, offset_from: float, until: float | None = None,
                 max_procs: int | None = None):
        self.jobs = jobs
        self.shift = at - offset_from
        self.until = until  # trace time after which nothing more is submitted
        self.max_procs = max_procs  # bigger jobs are clipped to the machine (never runnable otherwise)
        self.index = 0

    def seek(self, trace_time: float) -> None:
        import bisect
        self.index = bisect.bisect_left([j.submit for j in self.jobs], trace_time)

    def __deepcopy__(self, memo):
        twin = TraceWorkload.__new__(TraceWorkload)
        twin.__dict__.update(self.__dict__)  # the job list is shared, the position is not
        memo[id(self)] = twin
        return twin

    def next_time(self) -> float | None:
        if self.index >= len(self.jobs):
            return None
        job = self.jobs[self.index]
        if self.until is not None and job.submit > self.until:
            return None
        return job.submit + self.shift

    def initial(self, cluster, t: float) -> list:
        return []

    def arrivals(self, cluster, t: float) -> list:
        from .cluster import SimJob  # the cluster module imports nothing from here
        out = []
        while True:
            nxt = self.next_time()
            if nxt is None or nxt > t:
                return out
            j = self.jobs[self.index]
            self.index += 1
            procs = min(j.procs, self.max_procs) if self.max_procs else j.procs
            out.append(SimJob(j.job_id, 0, j.runtime, j.limit, nxt, procs=procs))
