"""The built-in simulated cluster (demo, benchmarks, engine scenarios)."""
