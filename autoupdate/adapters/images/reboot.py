"""The "image" reboot strategy: reboot through the provisioning system itself.

start(): the back-end's soft reboot, or its only one (a reprovision's network boot was already
set by the image applier). poll(): done once the node is back (rebooting.booted); after
images.soft_reboot_timeout without that, the hard reboot (Scyld: power_uri; command:
hard_reboot); failed after reboot.timeout.
Back-ends without a reboot of their own (CSM BSS, Exostellar) use autoupdate's other strategies.
"""
from __future__ import annotations

import time

import structlog

from ...model import ClusterSnapshot, NodeRecord
from ...ports import IN_PROGRESS, ImageError, RebootStatus
from ...rebooting import booted
from . import backend_for

log = structlog.get_logger("autoupdate.images")


class ImageRebooter:
    def __init__(self, backend, settings, clock=time.time):
        if not hasattr(backend, "reboot"):
            raise ImageError(f"image back-end {backend.name!r} cannot reboot nodes: choose another "
                             f"reboot.strategy (slurm, ipmi...)")
        self.backend = backend
        self.settings = settings
        self.clock = clock
        self.soft_timeout = settings.images.soft_reboot_timeout
        self.timeout = settings.reboot.timeout
        self._started: dict[str, float] = {}  # node -> when the reboot was issued
        self._hard: set[str] = set()

    def start(self, record: NodeRecord, snapshot: ClusterSnapshot) -> None:
        node = record.node
        soft = getattr(self.backend, "has_soft_reboot", False)
        self.backend.reboot([node], hard=not soft)
        self._started[node] = self.clock()
        if not soft:
            self._hard.add(node)
        else:
            self._hard.discard(node)

    def poll(self, record: NodeRecord, snapshot: ClusterSnapshot, now: float) -> RebootStatus:
        node = record.node
        missing = booted(record, snapshot)
        if missing is None:
            self._forget(node)
            return RebootStatus("done")
        started = self._started.setdefault(node, record.since or now)  # after a restart
        waited = now - started
        if waited > self.timeout:
            self._forget(node)
            return RebootStatus("failed", f"not back after {waited:.0f}s: {missing}")
        if waited > self.soft_timeout and node not in self._hard:
            log.info("soft reboot did not complete, hard reboot", node=node, backend=self.backend.name)
            self._hard.add(node)
            try:
                self.backend.reboot([node], hard=True)
            except ImageError as exc:
                self._forget(node)
                return RebootStatus("failed", f"hard reboot: {exc}")
        return IN_PROGRESS

    def _forget(self, node: str) -> None:
        self._started.pop(node, None)
        self._hard.discard(node)


def from_settings(settings, deps) -> ImageRebooter:
    clock = deps.clock.now if deps is not None and hasattr(deps, "clock") else time.time
    return ImageRebooter(backend_for(settings, deps), settings, clock)
