"""Value types shared by the core and the adapters. No I/O here."""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

#: Every drain/reboot reason autoupdate writes starts with this; it is how autoupdate
#: recognises the nodes it may resume (and never touches a human's reason).
REASON_PREFIX = "autoupdate:"


class ChangeClass(enum.IntEnum):
    """How disruptive a change is for one node. Ordered: the larger wins when combining."""

    GOOD = 0  # nothing to do
    HOT = 1  # apply live, jobs keep running
    DRAIN = 2  # node must be empty; usually a reboot

    @classmethod
    def parse(cls, text: str) -> "ChangeClass":
        try:
            return cls[str(text).strip().upper()]
        except KeyError:
            raise ValueError(f"unknown change class {text!r} (expected good, hot or drain)") from None

    @property
    def label(self) -> str:
        return self.name.lower()


class NodePhase(str, enum.Enum):
    PENDING = "pending"
    DRAINING = "draining"
    DRAINED = "drained"
    APPLYING = "applying"
    REBOOTING = "rebooting"
    VERIFYING = "verifying"
    RESUMING = "resuming"
    RETRY_WAIT = "retry_wait"
    DONE = "done"
    FAILED = "failed"  # gave up: left drained with a reason, needs a human
    CANCELLED = "cancelled"  # stopped before the change was applied (halt, blacklist, human)
    SKIPPED = "skipped"  # an admin said so

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_PHASES

    @property
    def out_of_service(self) -> bool:
        """Phases in which autoupdate holds the node out of Slurm's hands."""
        return self in OUT_OF_SERVICE_PHASES


TERMINAL_PHASES = frozenset({NodePhase.DONE, NodePhase.FAILED, NodePhase.CANCELLED, NodePhase.SKIPPED})
OUT_OF_SERVICE_PHASES = frozenset({
    NodePhase.DRAINING, NodePhase.DRAINED, NodePhase.APPLYING, NodePhase.REBOOTING, NodePhase.VERIFYING,
    NodePhase.RESUMING, NodePhase.RETRY_WAIT, NodePhase.FAILED,
})


class RolloutState(str, enum.Enum):
    CANARY = "canary"
    SOAK = "soak"
    WAVES = "waves"
    DONE = "done"
    HALTED = "halted"
    SUPERSEDED = "superseded"
    ERROR = "error"  # detection said ERROR: nothing started

    @property
    def active(self) -> bool:
        return self in (RolloutState.CANARY, RolloutState.SOAK, RolloutState.WAVES)


class NodeBase(str, enum.Enum):
    """A node's base state as the workload manager reports it."""

    IDLE = "idle"
    MIXED = "mixed"
    ALLOCATED = "allocated"
    COMPLETING = "completing"
    DOWN = "down"
    FUTURE = "future"
    UNKNOWN = "unknown"


# State flags autoupdate understands. Adapters map their own spelling onto these; any flag
# not listed is kept verbatim in NodeInfo.flags and makes the node "unknown": do not touch.
_REBOOT_FLAGS = frozenset({"REBOOT_REQUESTED", "REBOOT_ISSUED"})
KNOWN_FLAGS = _REBOOT_FLAGS | frozenset({
    "DRAIN", "DRAINING", "DRAINED", "NOT_RESPONDING",
    "MAINTENANCE", "RESERVED", "POWERED_DOWN", "POWERING_DOWN", "POWERING_UP", "POWER_DOWN",
    "POWER_UP", "COMPLETING", "FAIL", "INVALID_REG", "CLOUD", "DYNAMIC_NORM", "PLANNED",
    "RESUME", "UNDRAIN", "BLOCKED", "REBOOT_CANCELED", "POWERED_OFF",
})


@dataclass(frozen=True)
class NodeInfo:
    """One node as the workload manager sees it at one moment."""

    name: str
    base: NodeBase
    flags: frozenset[str] = frozenset()
    partitions: tuple[str, ...] = ()
    reason: str = ""
    reason_user: str = ""
    boot_time: float | None = None
    features: tuple[str, ...] = ()
    extra: str = ""  # free text a node publishes (Slurm's Extra field): used for image checks
    unknown_state: str = ""  # raw state text the adapter could not classify

    @property
    def drained(self) -> bool:
        return "DRAIN" in self.flags

    @property
    def drained_by_autoupdate(self) -> bool:
        return self.drained and self.reason.startswith(REASON_PREFIX)

    @property
    def responding(self) -> bool:
        return "NOT_RESPONDING" not in self.flags and self.base not in (NodeBase.DOWN, NodeBase.UNKNOWN)

    @property
    def rebooting(self) -> bool:
        return not _REBOOT_FLAGS.isdisjoint(self.flags)

    @property
    def state_known(self) -> bool:
        if not self.flags and not self.unknown_state:  # the common case, asked of every node every tick
            return self.base is not NodeBase.UNKNOWN
        return not self.unknown_state and self.base is not NodeBase.UNKNOWN and self.flags <= KNOWN_FLAGS

    def describe(self) -> str:
        return "+".join([self.base.value.upper(), *sorted(self.flags)]) if self.flags else self.base.value.upper()


@dataclass(frozen=True)
class Job:
    job_id: str
    nodes: tuple[str, ...]
    start_time: float
    end_time: float  # expected end: start + time limit, as the workload manager reports it
    name: str = ""
    user: str = ""
    reservation: str = ""


@dataclass(frozen=True)
class Reservation:
    name: str
    nodes: tuple[str, ...]
    start_time: float
    end_time: float
    flags: frozenset[str] = frozenset()
    users: tuple[str, ...] = ()

    @property
    def ours(self) -> bool:
        return self.name.startswith("autoupdate")


@dataclass(frozen=True)
class PendingJob:
    """A job waiting for nodes (not held, not waiting on a dependency or a limit)."""

    job_id: str
    nodes: int  # how many whole nodes it needs (at least)
    time_limit: float  # seconds
    partition: str = ""  # "": any node


@dataclass(frozen=True)
class ClusterSnapshot:
    """Everything one control-loop tick needs to know about the cluster, read at once."""

    taken_at: float
    nodes: Mapping[str, NodeInfo]
    jobs: tuple[Job, ...] = ()
    reservations: tuple[Reservation, ...] = ()
    pending: tuple[PendingJob, ...] = ()  # waiting for resources, the scheduler's first pick first

    def __post_init__(self) -> None:
        # Indexes built once per snapshot: the planner asks about every node every tick.
        last_end: dict[str, float] = {}  # every node running a job -> its last job's expected end
        get = last_end.get
        for job in self.jobs:
            end = job.end_time
            for n in job.nodes:
                if end > get(n, -math.inf):
                    last_end[n] = end
        now = self.taken_at
        resv_by_node: dict[str, list[Reservation]] = {}
        for r in self.reservations:
            for n in r.nodes:
                resv_by_node.setdefault(n, []).append(r)
        object.__setattr__(self, "_last_end", last_end)
        object.__setattr__(self, "_idle_at", {n: e for n, e in last_end.items() if e > now})
        object.__setattr__(self, "_resv_by_node", resv_by_node)

    def jobs_on(self, node: str) -> list[Job]:
        by_node = self.__dict__.get("_jobs_by_node")
        if by_node is None:  # built when first asked: few ticks ask (reboot gate, hypervisor units)
            by_node = {}
            for job in self.jobs:
                for n in job.nodes:
                    by_node.setdefault(n, []).append(job)
            object.__setattr__(self, "_jobs_by_node", by_node)
        return by_node.get(node, [])

    def busy(self, node: str) -> bool:
        return node in self._last_end  # type: ignore[attr-defined]

    def idle_at(self, node: str) -> float:
        """When the node is expected to be empty (now if it is; overdue jobs: now)."""
        return self._idle_at.get(node, self.taken_at)  # type: ignore[attr-defined]

    @property
    def busy_until(self) -> Mapping[str, float]:
        """idle_at of every node that is not empty now (a node missing here is empty now)."""
        return self._idle_at  # type: ignore[attr-defined]

    def reservations_on(self, node: str) -> list[Reservation]:
        """Every reservation naming this node (past, present or future)."""
        return self._resv_by_node.get(node, [])  # type: ignore[attr-defined]

    def foreign_reservations(self, node: str) -> list[Reservation]:
        """Someone else's reservations holding this node now."""
        now = self.taken_at
        return [r for r in self.reservations_on(node) if not r.ours and r.start_time <= now < r.end_time]


@dataclass(frozen=True)
class Revision:
    sha: str
    summary: str = ""
    author: str = ""
    committed_at: float = 0.0

    @property
    def short(self) -> str:
        return self.sha[:12]


@dataclass(frozen=True)
class NodeAction:
    """What to do to a node beyond the class: e.g. an image switch for image-manifest changes."""

    kind: str  # "apply" (run the applier) or "image"
    detail: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DetectorVerdict:
    """One detector's answer for one (old, new) pair."""

    detector: str
    classes: Mapping[str, ChangeClass] = field(default_factory=dict)
    error: str = ""  # non-empty: the commit is ERROR
    notes: tuple[str, ...] = ()
    actions: Mapping[str, tuple[NodeAction, ...]] = field(default_factory=dict)

    @property
    def is_error(self) -> bool:
        return bool(self.error)


@dataclass(frozen=True)
class Verdict:
    """The combined answer: ERROR wins; per node the most disruptive class wins."""

    old: str | None
    new: str
    classes: Mapping[str, ChangeClass]
    parts: tuple[DetectorVerdict, ...] = ()
    error: str = ""
    actions: Mapping[str, tuple[NodeAction, ...]] = field(default_factory=dict)

    @property
    def is_error(self) -> bool:
        return bool(self.error)

    def nodes_of(self, klass: ChangeClass) -> list[str]:
        return sorted(n for n, c in self.classes.items() if c == klass)

    @classmethod
    def combine(cls, old: str | None, new: str, parts: Iterable[DetectorVerdict]) -> "Verdict":
        parts = tuple(parts)
        errors = [f"{p.detector}: {p.error}" for p in parts if p.is_error]
        classes: dict[str, ChangeClass] = {}
        actions: dict[str, tuple[NodeAction, ...]] = {}
        for p in parts:
            for node, klass in p.classes.items():
                classes[node] = max(classes.get(node, ChangeClass.GOOD), klass)
            for node, acts in p.actions.items():
                actions[node] = actions.get(node, ()) + tuple(acts)
        return cls(old=old, new=new, classes=classes, parts=parts, error="; ".join(errors), actions=actions)


@dataclass
class NodeRecord:
    """autoupdate's own durable view of one node's current piece of work."""

    node: str
    phase: NodePhase
    target: str  # commit sha being applied
    rollout_id: int
    klass: ChangeClass
    attempts: int = 0
    since: float = 0.0  # when the current phase started
    next_attempt_at: float = 0.0
    last_error: str = ""
    action_done: bool = False  # the current phase's external action has been carried out
    boot_time_before: float | None = None
    drained_by_us: bool = False
    canary: bool = False
    cancel_reason: str = ""
    actions: tuple[NodeAction, ...] = ()


@dataclass
class Rollout:
    id: int
    target: str
    state: RolloutState
    created_at: float
    updated_at: float
    summary: str = ""
    reason: str = ""  # why halted / error
    soak_until: float = 0.0
    canaries: tuple[str, ...] = ()


@dataclass(frozen=True)
class Event:
    """Something people may want to hear about. Notifiers decide how to say it."""

    kind: str  # e.g. rollout.detected, canary.passed, node.failed, rollout.halted, paused
    message: str
    rollout_id: int | None = None
    target: str = ""
    nodes: tuple[str, ...] = ()
    needs_human: bool = False
    data: Mapping[str, object] = field(default_factory=dict)
