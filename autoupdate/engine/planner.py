"""Which waiting nodes start next: idle ones first, then those whose jobs end soonest."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from ..model import ChangeClass, ClusterSnapshot, NodeRecord
from ..safety import Budget


def idle_key(snapshot: ClusterSnapshot, node: str) -> tuple[float, str]:
    """Sort key: when the node is expected to be empty (now if idle), then its name."""
    return (snapshot.idle_at(node), node)


def order(records: Iterable[NodeRecord], snapshot: ClusterSnapshot) -> list[NodeRecord]:
    return sorted(records, key=lambda r: (not r.canary, *idle_key(snapshot, r.node)))


@dataclass
class Selection:
    start: list[NodeRecord] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)  # node -> why it did not start


def select(candidates: Sequence[NodeRecord], snapshot: ClusterSnapshot, budget: Budget,
           in_flight: int, max_in_flight: int,
           gate: Callable[[NodeRecord], str | None]) -> Selection:
    """Pick, in order, the candidates that may start now without breaking any limit.

    HOT work takes no capacity (the node stays in service). DRAIN work takes one unit of the
    budget in every partition the node belongs to.
    """
    sel = Selection()
    for rec in order(candidates, snapshot):
        why = gate(rec)
        if why:
            sel.waiting[rec.node] = why
            continue
        if max_in_flight and in_flight >= max_in_flight:
            sel.waiting[rec.node] = f"max_in_flight ({max_in_flight}) reached"
            continue
        if rec.klass == ChangeClass.DRAIN:
            parts = snapshot.nodes[rec.node].partitions
            if not budget.room_for(parts):
                full = [p for p in parts if not budget.room_for([p])]
                sel.waiting[rec.node] = f"capacity budget full in {','.join(full)}"
                continue
            budget.take(parts)
        in_flight += 1
        sel.start.append(rec)
    return sel
