#!/usr/bin/env python3
"""The control loop against a real Slurm cluster (tests/rig: munged, slurmctld, N slurmd on this
host), for N = 4, 32, 128 by default. Measures, per size:

- tick: one Engine.tick() (snapshot + planning + the actions it decides) while a DRAIN rollout
  waits for running jobs on every node: wall time, and Slurm commands per tick (autoupdate.proc.CALLS:
  scontrol/sinfo/squeue), which must not grow with N;
- latency: from a node becoming idle (its last job's script writes the time as its final act) to
  autoupdate acting on it (the applier, started by the engine, writes the time as its first act),
  with the loop ticking every --poll seconds. Target: under 2 s + poll interval.

    python bench/slurm_tick.py [--sizes 4,32,128] [--poll 1.0] [--ticks 10]

Needs root, slurm-wlm and munge (scripts/test.sh installs them). Prints a table.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from autoupdate import logs, proc  # noqa: E402
from autoupdate.config import load_config  # noqa: E402
from autoupdate.engine.engine import Engine  # noqa: E402
from autoupdate.model import NodePhase  # noqa: E402
from autoupdate.store import Store  # noqa: E402
from autoupdate.wiring import Deps  # noqa: E402
from rig.rollout import RolloutHarness  # noqa: E402
from rig.slurm import SlurmRig  # noqa: E402

SLURM_COMMANDS = ("scontrol", "sinfo", "squeue")


def slurm_calls() -> int:
    return sum(proc.CALLS.get(c, 0) for c in SLURM_COMMANDS)


def measure(n: int, poll: float, ticks: int, base: Path) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"n{n}-", dir=base))
    rig = SlurmRig(tmp / "rig", n_nodes=n, reboot_delay=0.1)
    t0 = time.monotonic()
    rig.start(timeout=120)
    started = time.monotonic() - t0
    try:
        h = RolloutHarness(tmp, rig, nodes={"canaries": ""},
                           rollout={"canary_count": 0, "max_unavailable": "100%"},
                           apply={"backend": "command", "timeout": 30, "command": [
                               "sh", "-c", f"date +%s.%N > {rig.dir}/nodes/{{node}}/acted_at"]},
                           reboot={"strategy": "none"}, verify={"revision": {"source": "none"}},
                           control={"state_dir": str(tmp / "state"), "poll_interval": poll,
                                    "log_level": "error", "log_format": "json"})
        settings = load_config(h.config)
        logs.configure("json", "error")
        store = Store(tmp / "state" / "state.db")
        engine = Engine.from_deps(Deps(settings), store)
        engine.fetch()
        engine.tick()  # baseline
        # One job per node; they end at staggered times after the tick measurements.
        first_end = 8 + ticks * 0.3 + n * 0.05
        for i, node in enumerate(rig.nodes):
            rig.submit(f"sleep {first_end + (i % 16) * 0.45:.2f}; date +%s.%N > {rig.dir}/nodes/{node}/idle_at",
                       nodes=node, time_limit="5")
        rig.wait_nodes_state({"MIXED", "ALLOCATED"}, timeout=60)
        h.commit("kernel/version", "2", "bench kernel")
        engine.fetch()
        engine.tick()  # discovers the rollout, drains every node (they wait for their jobs)
        engine.tick()

        snap_ms, tick_ms, cmds, snap_cmds = [], [], [], []
        for _ in range(ticks):
            c0, t = slurm_calls(), time.perf_counter()
            engine.wm.snapshot()
            snap_ms.append((time.perf_counter() - t) * 1000)
            c1, t = slurm_calls(), time.perf_counter()
            engine.tick()
            tick_ms.append((time.perf_counter() - t) * 1000)
            cmds.append(slurm_calls() - c1)
            snap_cmds.append(c1 - c0)
            time.sleep(0.1)

        # Latency: tick every `poll` seconds (fixed rate, like the service) until all are done.
        deadline = time.monotonic() + first_end + 60
        next_tick = time.monotonic()
        while time.monotonic() < deadline:
            engine.tick()
            if all(r.phase is NodePhase.DONE for r in store.records().values()) and len(store.records()) == n:
                break
            next_tick += poll
            time.sleep(max(0.0, next_tick - time.monotonic()))
        engine.shutdown()
        store.close()
        latencies = []
        for node in rig.nodes:
            idle = rig.node_dir(node) / "idle_at"
            acted = rig.node_dir(node) / "acted_at"
            if idle.exists() and acted.exists():
                latencies.append(float(acted.read_text()) - float(idle.read_text()))
        return {"nodes": n, "rig_start_s": started, "snapshot_ms": statistics.median(snap_ms), "snapshot_cmds": max(snap_cmds),
                "tick_ms_median": statistics.median(tick_ms), "tick_ms_max": max(tick_ms),
                "cmds_median": statistics.median(cmds), "cmds_max": max(cmds),
                "latency_median": statistics.median(latencies) if latencies else float("nan"),
                "latency_max": max(latencies) if latencies else float("nan"),
                "measured": len(latencies)}
    finally:
        rig.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4,32,128")
    ap.add_argument("--poll", type=float, default=1.0)
    ap.add_argument("--ticks", type=int, default=10)
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="aubench", dir="/tmp") as base:
        for n in (int(x) for x in a.sizes.split(",")):
            rows.append(measure(n, a.poll, a.ticks, Path(base)))
            print(f"measured {n} nodes", file=sys.stderr)
    print(f"\nSlurm control loop on the real test cluster (poll interval {a.poll:g} s, {a.ticks} ticks per size)")
    head = ("nodes", "rig start s", "snapshot ms (cmds)", "tick ms med/max", "slurm cmds/tick med/max",
            "idle->acted s med/max", "target s")
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for r in rows:
        print(f"{r['nodes']} | {r['rig_start_s']:.1f} | {r['snapshot_ms']:.0f} ({r['snapshot_cmds']}) | "
              f"{r['tick_ms_median']:.0f}/{r['tick_ms_max']:.0f} | {r['cmds_median']:g}/{r['cmds_max']:g} | "
              f"{r['latency_median']:.2f}/{r['latency_max']:.2f} (n={r['measured']}) | < {2 + a.poll:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
