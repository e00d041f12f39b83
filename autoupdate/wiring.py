"""Builds the adapters a configuration names, once each, and hands them to the engine.

Tests and the demo pass `overrides` (e.g. a simulated clock or an in-memory fake) by role.
"""
from __future__ import annotations

import time
from functools import cached_property
from typing import Any

from .config import Settings
from .registry import build


class SystemClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


class Deps:
    def __init__(self, settings: Settings, **overrides: Any):
        self.settings = settings
        self._overrides = overrides

    def _get(self, role: str, make):
        if role in self._overrides:
            return self._overrides[role]
        return make()

    @cached_property
    def clock(self):
        return self._get("clock", SystemClock)

    @cached_property
    def workload_manager(self):
        s = self.settings
        return self._get("workload_manager", lambda: build("workload_manager", s.cluster.backend, s, self))

    @cached_property
    def source(self):
        from .adapters.git_source import GitSource  # git is an adapter: imported only when wired
        return self._get("source", lambda: GitSource.from_settings(self.settings))

    @cached_property
    def detectors(self) -> list:
        return self._get("detectors", lambda: [build("detector", d.type, d, self)
                                               for d in self.settings.detectors])

    @cached_property
    def applier(self):
        s = self.settings
        return self._get("applier", lambda: build("applier", s.apply.backend, s, self))

    @cached_property
    def rebooter(self):
        s = self.settings
        return self._get("rebooter", lambda: build("rebooter", s.reboot.strategy, s, self))

    @cached_property
    def power(self):
        """The BMC controller, for strategies that need one (built by the power section)."""
        s = self.settings
        backend = getattr(getattr(s, "power", None), "backend", None)
        return self._get("power", lambda: build("power", backend, s, self) if backend else None)

    @cached_property
    def checks(self) -> list:
        from .adapters.basic import checks_from_settings
        return self._get("checks", lambda: checks_from_settings(self.settings, self))

    @cached_property
    def notifiers(self) -> list:
        from .adapters.basic import notifiers_from_settings
        return self._get("notifiers", lambda: notifiers_from_settings(self.settings, self))
