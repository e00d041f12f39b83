#!/usr/bin/env python3
"""The planner's tick at scale: Engine.tick() on a simulated cluster of 10,000 nodes (4 cores
each, 10 partitions) with 40,000 running and 10,000 queued jobs, a DRAIN rollout of every node in
progress, state in a real SQLite file. Prints the time per tick and the memory used.

    python bench/scale_tick.py [--nodes 10000] [--running 40000] [--queued 10000] [--strategy reservation]
"""
import argparse
import random
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoupdate import logs  # noqa: E402
from autoupdate.engine.engine import Engine, InlineExecutor  # noqa: E402
from autoupdate.sim.clock import ManualClock  # noqa: E402
from autoupdate.sim.cluster import SimApplier, SimCluster, SimJob, SimRebooter, SimRevisionCheck  # noqa: E402
from autoupdate.sim.strategies import NEW, OLD, Params, _OneCommitSource, engine_settings  # noqa: E402
from autoupdate.store import Store  # noqa: E402


def build(nodes: int, running: int, queued: int, cores: int = 4, seed: int = 1):
    rng = random.Random(seed)
    clock = ManualClock()
    names = [f"c{i:05d}" for i in range(nodes)]
    parts = {f"p{k}": names[k::10] for k in range(10)}
    cluster = SimCluster(parts, clock, reboot_seconds=600, cores_per_node=cores, revision=OLD)
    now = clock.now()
    for i in range(running):
        node = names[i % nodes]
        limit = rng.uniform(600, 48 * 3600)
        job = SimJob(f"r{i}", 0, limit * rng.uniform(0.2, 1.0), limit, now, procs=1)
        cluster.start_job(job, {node: 1}, now)
    for i in range(queued):
        cluster.submit(SimJob(f"q{i}", 0, 3600, 7200, now, procs=rng.choice([1, 2, 4, 8])))
    return cluster, clock, names


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--running", type=int, default=40_000)
    ap.add_argument("--queued", type=int, default=10_000)
    ap.add_argument("--strategy", default="reservation", choices=["reservation", "drain"])
    ap.add_argument("--ticks", type=int, default=20)
    a = ap.parse_args()
    logs.configure("console", "error")
    cluster, clock, names = build(a.nodes, a.running, a.queued)
    with tempfile.TemporaryDirectory(prefix="au-scale-") as tmp:
        p = Params(canaries=0, soak_seconds=0)
        settings = engine_settings(names, p, tmp, a.strategy)
        store = Store(Path(tmp) / "state.db")
        source = _OneCommitSource()
        engine = Engine(settings, store, workload_manager=cluster, source=source, detectors=[],
                        applier=SimApplier(cluster), rebooter=SimRebooter(cluster, 3600),
                        checks=[SimRevisionCheck()], notifiers=[], clock=clock, executor=InlineExecutor())
        engine.fetch()
        source.head = NEW
        t = time.perf_counter()
        engine.fetch()  # detection + one record per node
        fetch_s = time.perf_counter() - t
        times, peaks = [], []
        for _ in range(a.ticks):  # timing: no tracing
            clock.advance(30)
            t = time.perf_counter()
            engine.tick()
            times.append(time.perf_counter() - t)
        snaps = []
        for _ in range(5):  # the part of a tick that is the simulator building its snapshot
            t = time.perf_counter()
            cluster.snapshot()
            snaps.append(time.perf_counter() - t)
        tracemalloc.start()  # memory: what one tick allocates at its peak
        for _ in range(3):
            clock.advance(30)
            tracemalloc.reset_peak()
            engine.tick()
            peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        phases: dict[str, int] = {}
        for r in store.records().values():
            phases[r.phase.value] = phases.get(r.phase.value, 0) + 1
        store.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    first, rest = times[0], times[1:]
    print(f"{a.nodes} nodes, {len(cluster.jobs)} running + {len(cluster.queue)} queued jobs, "
          f"drain strategy {a.strategy}")
    print(f"rollout start (fetch: detect, {a.nodes} records): {fetch_s * 1000:.0f} ms")
    print(f"first tick (plans every node): {first * 1000:.0f} ms")
    print(f"later ticks: median {statistics.median(rest) * 1000:.0f} ms, max {max(rest) * 1000:.0f} ms "
          f"(of which the simulator's snapshot: {statistics.median(snaps) * 1000:.0f} ms)")
    print(f"memory: allocated at the peak of a tick {max(peaks) / 2**20:.0f} MB, process max RSS {rss:.0f} MB")
    print(f"phases after {a.ticks} ticks: {phases}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
