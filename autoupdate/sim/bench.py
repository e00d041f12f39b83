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
    # Summed over those jobs (job-hours): a mean over a rollout ten times longer is diluted by
    # the many jobs that never met a reboot; the total is not.
    wait_total_h: float = 0.0


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
            wait_total_h=math.fsum(extra), budget=budget,
            timeline=[((t - t0) / 3600, out) for t, out in cluster.stats.timeline if t >= t0]))
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


# --- the whole benchmark: runs, table, picture ---------------------------------------------------

_TRACE_CACHE: dict[str, Trace] = {}


def _load(spec: TraceSpec) -> Trace:
    if spec.name not in _TRACE_CACHE:
        _TRACE_CACHE[spec.name] = load(trace_dir() / spec.file)
    return _TRACE_CACHE[spec.name]


def _one(args) -> StartPoint:
    name, index, start, warmup, p = args
    from .. import logs
    logs.configure("console", "error")
    spec = TRACES[name]
    return run_start_point(spec, _load(spec), index, start, warmup, p)


def run_bench(traces=("KTH", "HPC2N"), starts: int = 10, warmup_days: float = 14.0, p: Params | None = None,
              workers: int = 2, progress=print) -> dict[str, list[StartPoint]]:
    p = p or Params()
    warmup = warmup_days * DAY
    tasks = []
    for name in traces:
        for i, start in enumerate(start_points(_load(TRACES[name]), starts, warmup)):
            tasks.append((name, i, start, warmup, p))
    out: dict[str, list[StartPoint]] = {name: [] for name in traces}
    if workers > 1:
        import multiprocessing
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for task, point in zip(tasks, pool.imap(_one, tasks)):
                out[task[0]].append(point)
                progress(f"{task[0]} start {point.index}: done")
    else:
        for task in tasks:
            out[task[0]].append(_one(task))
            progress(f"{task[0]} start {task[1]}: done")
    return out


COLUMNS = [("done_h", "time to all updated (h)"), ("lost_nh", "lost node-h (out of service)"),
           ("deficit_nh", "work deficit vs ref (node-h)"), ("wait_mean_h", "extra wait mean (h)"),
           ("wait_p95_h", "extra wait p95 (h)"), ("wait_total_h", "extra wait total (job-h)"),
           ("max_out", "most out at once")]


def summarise(points: list[StartPoint], p: Params, nodes: int) -> list[dict]:
    rows = []
    names = [r.strategy for r in points[0].results]
    for name in names:
        runs = [r for pt in points for r in pt.results if r.strategy == name]
        row = {"strategy": name, "killed": sum(r.killed for r in runs), "budget": runs[0].budget}
        for key, _ in COLUMNS:
            values = [getattr(r, key) for r in runs]
            row[key] = (statistics.median(values), max(values))
        rows.append(row)
    bounds = [pt.bound_h for pt in points]
    rows.append({"strategy": "lower bound", "killed": 0, "budget": None,
                 "done_h": (statistics.median(bounds), max(bounds)),
                 "lost_nh": (nodes * p.reboot_seconds / 3600,) * 2})
    budgeted = [max(b, budget_floor_h(p, nodes)) for b in bounds]
    rows.append({"strategy": f"lower bound, {p.budget:.0%} budget", "killed": 0, "budget": None,
                 "done_h": (statistics.median(budgeted), max(budgeted)),
                 "lost_nh": (nodes * p.reboot_seconds / 3600,) * 2})
    return rows


def budget_rounds(p: Params, nodes: int) -> int:
    """Every node reboots once and at most budget_nodes reboot together."""
    return math.ceil(nodes / p.budget_nodes(nodes))


def budget_floor_h(p: Params, nodes: int) -> float:
    """No strategy that keeps at most the budget out at once can finish sooner."""
    return budget_rounds(p, nodes) * p.reboot_seconds / 3600


def canary_floor_h(p: Params, nodes: int) -> float:
    """Nor can one whose canaries reboot and soak before the rest start."""
    if not p.canaries:
        return budget_floor_h(p, nodes)
    rest = math.ceil((nodes - p.canaries) / p.budget_nodes(nodes))
    return (p.reboot_seconds + p.soak_seconds + rest * p.reboot_seconds) / 3600


def _cell(value, key) -> str:
    if value is None:
        return "-"
    med, worst = value
    fmt = "{:.0f}" if key == "max_out" else "{:.1f}" if key != "wait_mean_h" and key != "wait_p95_h" else "{:.2f}"
    return f"{fmt.format(med)} / {fmt.format(worst)}"


def table(name: str, rows: list[dict], spec: TraceSpec, points: list[StartPoint]) -> str:
    head = (f"### {name}: {spec.note}; {len(points)} start points (median / worst)\n\n"
            "| strategy | " + " | ".join(label for _, label in COLUMNS) + " | jobs killed |\n"
            "|---|" + "---|" * (len(COLUMNS) + 1) + "\n")
    lines = [f"| {r['strategy']} | " + " | ".join(_cell(r.get(k), k) for k, _ in COLUMNS) + f" | {r['killed']} |"
             for r in rows]
    return head + "\n".join(lines) + "\n"


def targets(points: list[StartPoint], p: Params, nodes: int, ours: str = "autoupdate") -> list[str]:
    """The issue's targets, checked per start point (worst case over the start points)."""
    out = []
    by = lambda pt, name: next(r for r in pt.results if r.strategy == name)  # noqa: E731
    time_ratio = max(by(pt, ours).done_h / by(pt, "all at once").done_h for pt in points)
    lost_ratio = max(by(pt, ours).lost_nh / (nodes * p.reboot_seconds / 3600) for pt in points)
    out.append(f"time vs all at once: worst {time_ratio:.2f}x (target <= 1.5x)")
    floor, own = budget_floor_h(p, nodes), canary_floor_h(p, nodes)
    for pt in points:
        fastest, took = by(pt, "all at once").done_h, by(pt, ours).done_h
        if 1.5 * fastest < floor:
            canaries = (f", {own:.1f} h with {p.canaries} canaries rebooted and soaked first"
                        if own > floor else "")
            out.append(f"start {pt.index}: all at once {fastest:.1f} h, but with a {p.budget:.0%} budget no "
                       f"strategy can finish before {floor:.1f} h ({budget_rounds(p, nodes)} "
                       f"rounds of one reboot){canaries}; autoupdate {took:.1f} h "
                       f"= {took / own:.2f}x {'that' if own == floor else 'its own'} floor")
    feasible = [pt for pt in points if 1.5 * by(pt, "all at once").done_h >= floor]
    if feasible and len(feasible) < len(points):
        ratio = max(by(pt, ours).done_h / by(pt, "all at once").done_h for pt in feasible)
        out.append(f"time vs all at once where 1.5x is reachable within the budget: worst {ratio:.2f}x "
                   f"({len(feasible)}/{len(points)} start points)")
    out.append(f"lost node-h vs lower bound: worst {lost_ratio:.2f}x (target <= 1.5x)")
    # Every budgeted baseline. One at a time sits at the node-hours bound by construction (one
    # node out, reacting with no delay), and its mean is over the jobs of a rollout 10-40x longer.
    for base in ("batches of 10%", "maint reservations", "one at a time"):
        lost = sum(1 for pt in points if by(pt, ours).lost_nh <= by(pt, base).lost_nh + 1e-9)
        wait = sum(1 for pt in points if by(pt, ours).wait_mean_h <= by(pt, base).wait_mean_h + 1e-9)
        out.append(f"vs {base}: lost node-h lower or equal at {lost}/{len(points)} start points, "
                   f"mean extra wait lower or equal at {wait}/{len(points)}")
    return out


def plot(results: dict[str, list[StartPoint]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(results), 1, figsize=(11, 4.2 * len(results)), squeeze=False)
    for ax, (name, points) in zip(axes[:, 0], results.items()):
        point = sorted(points, key=lambda pt: pt.bound_h)[len(points) // 2]  # a typical start point
        for r in point.results:
            xs, ys = [0.0], [0]
            for t, n in r.timeline:
                xs += [t, t]
                ys += [ys[-1], n]
            xs.append(max(r.done_h, xs[-1]))
            ys.append(ys[-1])
            ax.step(xs, ys, where="post", label=f"{r.strategy} ({r.done_h:.0f} h, {r.lost_nh:.0f} node-h)")
        ax.set_xscale("symlog", linthresh=24)
        ax.set_xlabel("hours since the rollout started (linear to 24 h, then log)")
        ax.set_ylabel("nodes out of service")
        ax.set_title(f"{name}: start point {point.index} ({point.running_jobs} jobs running, "
                     f"{point.queued_jobs} queued)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_outputs(results: dict[str, list[StartPoint]], p: Params, out_dir: Path) -> str:
    import json
    out_dir.mkdir(parents=True, exist_ok=True)
    canaries = f"{p.canaries} canaries, soak {p.soak_seconds / 60:g} min" if p.canaries else "no canaries"
    text = [f"Reboot {p.reboot_seconds / 60:g} min, budget {p.budget:.0%}, {canaries}, "
            f"engine tick {p.tick_seconds:g} s.\n"]
    for name, points in results.items():
        spec = TRACES[name]
        rows = summarise(points, p, spec.nodes)
        for r in rows:
            if r["strategy"] != "lower bound":
                assert r["killed"] == 0, f"{name}: {r['strategy']} killed {r['killed']} job(s)"
        for pt in points:
            for r in pt.results:
                assert r.budget is None or r.max_out <= r.budget, \
                    f"{name} start {pt.index}: {r.strategy} had {r.max_out} out, budget {r.budget}"
        text.append(table(name, rows, spec, points))
        text.append("\n".join(f"* {t}" for t in targets(points, p, spec.nodes)) + "\n")
    report = "\n".join(text)
    (out_dir / "results.md").write_text(report)
    (out_dir / "results.json").write_text(json.dumps(
        {name: [asdict(pt) for pt in pts] for name, pts in results.items()}, indent=1))
    plot(results, out_dir / "out_of_service.png")
    return report


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description="Roll a DRAIN update out on replayed workload traces.")
    ap.add_argument("--traces", default="KTH,HPC2N")
    ap.add_argument("--starts", type=int, default=10)
    ap.add_argument("--reboot-minutes", type=float, default=10.0)
    ap.add_argument("--canaries", type=int, default=2, help="autoupdate's canary nodes (0: none)")
    ap.add_argument("--soak-minutes", type=float, default=10.0, help="how long the canaries soak")
    ap.add_argument("--tick", type=float, default=30.0, help="engine poll interval (simulated seconds)")
    ap.add_argument("--warmup-days", type=float, default=14.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="bench/out")
    a = ap.parse_args(argv)
    if a.canaries < 0 or a.soak_minutes < 0 or a.reboot_minutes <= 0 or a.tick <= 0 or a.starts < 1:
        ap.error("--canaries and --soak-minutes must be >= 0, --reboot-minutes and --tick > 0, --starts >= 1")
    names = tuple(a.traces.split(","))
    unknown = [n for n in names if n not in TRACES]
    if unknown:
        ap.error(f"--traces: unknown trace {unknown[0]!r} (known: {', '.join(TRACES)})")
    # Before minutes of replay, not after: every trace readable, the output directory writable.
    for name in names:
        try:
            _load(TRACES[name])
        except OSError as exc:  # gzip's "Not a gzipped file" included
            ap.error(f"cannot read the {name} trace {trace_dir() / TRACES[name].file}: {exc.strerror or exc} "
                     "(AUTOUPDATE_TRACES: the directory holding the traces)")
        except ValueError as exc:
            ap.error(f"the {name} trace is not SWF: {exc}")
    try:
        Path(a.out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        ap.error(f"--out: cannot create {a.out}: {exc.strerror or exc}")
    p = Params(reboot_seconds=a.reboot_minutes * 60, tick_seconds=a.tick, canaries=a.canaries,
               soak_seconds=a.soak_minutes * 60)
    started = time.monotonic()
    results = run_bench(names, a.starts, a.warmup_days, p, a.workers)
    print(write_outputs(results, p, Path(a.out)))
    print(f"({time.monotonic() - started:.0f} s; written to {a.out}/)")
    return 0
