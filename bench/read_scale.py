#!/usr/bin/env python3
"""What reading a large cluster costs autoupdate: the Slurm adapter's parsers on synthetic output
of 10,000 nodes and 40,000 running + 10,000 pending jobs, as JSON (Slurm 22.05's `sinfo --json`
and `squeue --json`, built from the records in tests/data/slurm) and as text (`scontrol -o show
node`, `squeue -h -o ...`). Slurm's own time to produce the output is not included.

    python bench/read_scale.py [--nodes 10000] [--running 40000] [--pending 10000] [--repeat 3]
"""
import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoupdate.adapters import slurm_parse as sp  # noqa: E402

DATA = ROOT / "tests" / "data" / "slurm"


def json_outputs(nodes: int, running: int, pending: int) -> tuple[str, str]:
    sinfo = json.loads((DATA / "drain.sinfo.json").read_text())
    squeue = json.loads((DATA / "drain.squeue.json").read_text())
    node, job = sinfo["nodes"][0], squeue["jobs"][0]
    sinfo["nodes"] = [{**copy.deepcopy(node), "name": f"c{i:05d}", "hostname": f"c{i:05d}"} for i in range(nodes)]
    jobs = []
    for i in range(running + pending):
        j = copy.deepcopy(job)
        j.update(job_id=i + 1, nodes=f"c{i % nodes:05d}", job_state="RUNNING" if i < running else "PENDING",
                 state_reason="None" if i < running else "Priority")
        jobs.append(j)
    squeue["jobs"] = jobs
    return json.dumps(sinfo), json.dumps(squeue)


def text_outputs(nodes: int, running: int, pending: int) -> tuple[str, str, str]:
    line = (DATA / "resv.scontrol.txt").read_text().splitlines()[0]
    name = line.split()[0].split("=", 1)[1]
    show = "\n".join(line.replace(name, f"c{i:05d}") for i in range(nodes))
    run = "\n".join(f"{i}|RUNNING|2026-11-21T06:32:39|2026-11-22T06:32:39|1-00:00:00|user{i % 50}|(null)|"
                    f"c{i % nodes:05d}|job {i}" for i in range(running))
    wait = "\n".join(f"{running + i}|{1000 - i % 100}|{1 + i % 8}|2:00:00|p{i % 10}|Priority" for i in range(pending))
    return show, run, wait


def median_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--running", type=int, default=40_000)
    ap.add_argument("--pending", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    if min(a.nodes, a.repeat) < 1 or min(a.running, a.pending) < 0:
        ap.error("--nodes and --repeat must be >= 1, --running and --pending >= 0")
    now = time.time()
    sinfo, squeue = json_outputs(a.nodes, a.running, a.pending)
    show, run, wait = text_outputs(a.nodes, a.running, a.pending)
    jobs, waiting = sp.queue_from_json(squeue, now)
    assert len(jobs) == a.running and len(sp.jobs_from_text(run, now)) == a.running  # parsed, not skipped
    assert len(sp.nodes_from_json(sinfo, "sinfo --json")) == len(sp.nodes_from_text(show)) == a.nodes
    rows = [
        ("JSON", "nodes", len(sinfo), median_of(a.repeat, lambda: sp.nodes_from_json(sinfo, "sinfo --json"))),
        ("JSON", "jobs (running and pending)", len(squeue), median_of(a.repeat, lambda: sp.queue_from_json(squeue, now))),
        ("text", "nodes", len(show), median_of(a.repeat, lambda: sp.nodes_from_text(show))),
        ("text", "running jobs", len(run), median_of(a.repeat, lambda: sp.jobs_from_text(run, now))),
        ("text", "pending jobs", len(wait), median_of(a.repeat, lambda: sp.pending_from_text(wait))),
    ]
    print(f"{a.nodes} nodes, {a.running} running + {a.pending} pending jobs ({len(waiting)} waiting for nodes); "
          f"median of {a.repeat}")
    for form, what, size, secs in rows:
        print(f"  {form:4s} {what:27s} {size / 1e6:7.1f} MB  {secs * 1000:6.0f} ms")
    for form in ("JSON", "text"):
        print(f"  {form} read in all: {sum(s for f, _, _, s in rows if f == form) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
