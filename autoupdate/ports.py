"""The small interfaces between the pure core and the world (one per role, as in kured).

Adapters implement these; the engine only ever sees these Protocols. Adapters are chosen by
name in the configuration through autoupdate.registry.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Protocol, Sequence, runtime_checkable

from .model import (
    ChangeClass, ClusterSnapshot, DetectorVerdict, Event, NodeAction, NodeRecord, Revision,
)


class AdapterError(Exception):
    """An external system said no or could not be reached. The message names the culprit."""


class WorkloadManagerError(AdapterError):
    """Slurm (or the simulator) could not be read or refused an action."""


class SourceError(AdapterError):
    """The repository could not be fetched or read."""


class PowerError(AdapterError):
    """A BMC refused, timed out or could not be reached."""


class ImageError(AdapterError):
    """An image back-end refused or failed."""


@runtime_checkable
class Clock(Protocol):
    def now(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


@runtime_checkable
class WorkloadManager(Protocol):
    """Slurm, pyslurm or the simulator. snapshot() must cost a constant number of calls."""

    def snapshot(self) -> ClusterSnapshot: ...
    def drain(self, nodes: Sequence[str], reason: str) -> None: ...
    def resume(self, nodes: Sequence[str]) -> None: ...
    # Slurm-side reboot (scontrol reboot ASAP nextstate=...). Used by the "slurm" reboot strategy.
    def reboot(self, nodes: Sequence[str], reason: str) -> None: ...
    # Maintenance reservations (the "reservation" drain strategy): one per node, named by us.
    def reserve(self, name: str, node: str, start_time: float, reason: str) -> None: ...
    def unreserve(self, name: str) -> None: ...


@runtime_checkable
class PowerController(Protocol):
    """A node's BMC. Every call has its own deadline and raises PowerError when it passes."""

    def power_state(self, node: str) -> str: ...  # "on" | "off"
    def power(self, node: str, action: str) -> None: ...  # on | off | reset | cycle | soft
    def set_boot_device(self, node: str, device: str, persistent: bool = False) -> None: ...


@dataclass(frozen=True)
class RebootStatus:
    state: str  # "in_progress" | "done" | "failed"
    message: str = ""


IN_PROGRESS = RebootStatus("in_progress")


@runtime_checkable
class Rebooter(Protocol):
    """A reboot strategy (slurm, ipmi, soft-then-hard, sim, none).

    start() issues the reboot of a drained, empty node; poll() is called every tick until it
    answers done or failed (it may escalate, e.g. soft -> hard reset).
    """

    def start(self, record: NodeRecord, snapshot: ClusterSnapshot) -> None: ...
    def poll(self, record: NodeRecord, snapshot: ClusterSnapshot, now: float) -> RebootStatus: ...


@dataclass(frozen=True)
class ApplyResult:
    ok: bool
    message: str = ""
    changed: bool | None = None


@runtime_checkable
class Applier(Protocol):
    """Carries a change out on nodes (ansible-playbook, an image switch, the simulator...)."""

    def apply(self, nodes: Sequence[str], target: Revision, klass: ChangeClass,
              actions: Mapping[str, Sequence[NodeAction]]) -> Mapping[str, ApplyResult]: ...


@runtime_checkable
class HealthCheck(Protocol):
    """One verification step before a node is resumed. None means pass; text is the failure."""

    def check(self, record: NodeRecord, snapshot: ClusterSnapshot) -> str | None: ...


@runtime_checkable
class ChangeSource(Protocol):
    """The git repository holding the node configuration."""

    def fetch(self) -> Revision: ...  # fetch and return the tracked branch's head
    def exists(self, sha: str) -> bool: ...
    def is_ancestor(self, old: str, new: str) -> bool: ...
    def changed_paths(self, old: str, new: str) -> list[str]: ...
    def read(self, sha: str, path: str) -> bytes | None: ...  # None: no such file at sha
    def checkout(self, sha: str) -> Path: ...  # a directory holding that commit's files
    def revision(self, sha: str) -> Revision: ...


@dataclass(frozen=True)
class DetectContext:
    source: ChangeSource
    old: str | None  # None: no base known (first run): detectors treat every file as changed
    new: str
    managed: tuple[str, ...]  # nodes autoupdate may manage (whitelist minus blacklist, known)
    changed_paths: tuple[str, ...]


@runtime_checkable
class ChangeDetector(Protocol):
    name: str

    def detect(self, ctx: DetectContext) -> DetectorVerdict: ...


@runtime_checkable
class ImageBackend(Protocol):
    """A provisioning system that decides what a node boots (Warewulf, CSM BSS, Scyld...)."""

    def set_image(self, nodes: Sequence[str], image: str, mode: str = "reload") -> None: ...
    def get_image(self, nodes: Sequence[str]) -> Mapping[str, str]: ...


@runtime_checkable
class Notifier(Protocol):
    """Slack, logs... A notifier that raises never stops a rollout (the engine catches)."""

    def notify(self, event: Event) -> None: ...
