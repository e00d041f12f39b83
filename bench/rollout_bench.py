#!/usr/bin/env python3
"""Rollout benchmark on real workload traces (see README, "Benchmarks").

    python bench/rollout_bench.py [--traces KTH,HPC2N] [--starts 10] [--reboot-minutes 10]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoupdate.sim.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
