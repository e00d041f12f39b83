"""How far a rollout has come: nodes per phase, finished/total, an ETA (pure).

Shared by `autoupdate status`, the Slack progress message and the metrics endpoint.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from .model import NodePhase, NodeRecord, Rollout

_FINISHED = (NodePhase.DONE, NodePhase.SKIPPED, NodePhase.CANCELLED, NodePhase.FAILED)


@dataclass(frozen=True)
class Progress:
    rollout_id: int
    target: str
    state: str
    counts: dict[str, int] = field(default_factory=dict)  # phase -> nodes of this rollout
    total: int = 0
    finished: int = 0  # done, skipped, cancelled or failed
    failed: int = 0
    eta_seconds: float | None = None  # None: no estimate yet (nothing finished)

    @property
    def in_flight(self) -> int:
        return self.total - self.finished - self.counts.get(NodePhase.PENDING.value, 0)

    def text(self) -> str:
        parts = [f"{self.counts.get('done', 0)}/{self.total} done"]
        if self.in_flight:
            parts.append(f"{self.in_flight} in flight")
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.eta_seconds is not None and self.finished < self.total:
            parts.append(f"ETA {duration(self.eta_seconds)}")
        return f"`{self.target[:12]}` {self.state}: " + ", ".join(parts)


def duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds < 90:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 90:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    return f"{hours // 24}d {hours % 24}h"


def phase_counts(records: Iterable[NodeRecord]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r.phase.value] = counts.get(r.phase.value, 0) + 1
    return counts


def summarise(rollout: Rollout, records: Iterable[NodeRecord], now: float) -> Progress:
    """ETA from the rate so far: finished nodes per second since the rollout began."""
    mine = [r for r in records if r.rollout_id == rollout.id]
    counts = phase_counts(mine)
    finished = sum(counts.get(p.value, 0) for p in _FINISHED)
    total = len(mine)
    eta = None
    elapsed = now - rollout.created_at
    if 0 < finished < total and elapsed > 0:
        eta = (total - finished) * elapsed / finished
    elif total and finished == total:
        eta = 0.0
    return Progress(rollout.id, rollout.target, rollout.state.value, counts, total, finished,
                    counts.get(NodePhase.FAILED.value, 0), eta)
