"""Clocks for the simulator: a manual one (tests) and an accelerated wall clock (demo)."""
from __future__ import annotations

import threading
import time


class ManualClock:
    """Time moves only when told to (deterministic tests and benchmarks)."""

    def __init__(self, start: float = 1_700_000_000.0):
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))


class ScaledClock:
    """Wall time running `speed` times faster, starting at `start`."""

    def __init__(self, speed: float = 1.0, start: float | None = None):
        self.speed = speed
        self._t0 = time.monotonic()
        self._start = time.time() if start is None else start
        self._stop = threading.Event()

    def now(self) -> float:
        return self._start + (time.monotonic() - self._t0) * self.speed

    def sleep(self, seconds: float) -> None:
        self._stop.wait(max(0.0, seconds) / self.speed)
