"""Which waiting nodes start next: idle ones first, then those whose jobs end soonest."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

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


Group = Callable[[NodeRecord], "tuple[list[NodeRecord], str]"]


def _single(rec: NodeRecord) -> tuple[list[NodeRecord], str]:
    return [rec], ""


def fits(budget: Budget, counts: Mapping[str, int]) -> bool:
    """Room for `count` more nodes out in each partition. A group larger than a partition's
    whole budget (a hypervisor's VMs) may go only when nothing else there is out."""
    used, limits = budget.used, budget.limits
    return all(used.get(p, 0) + c <= limits.get(p, 0) or (c > limits.get(p, 0) and not used.get(p, 0))
               for p, c in counts.items())


def select(candidates: Sequence[NodeRecord], snapshot: ClusterSnapshot, budget: Budget,
           in_flight: int, max_in_flight: int,
           gate: Callable[[NodeRecord], str | None], group: Group = _single) -> Selection:
    """Pick, in order, the candidates that may start now without breaking any limit.

    HOT work takes no capacity (the node stays in service). DRAIN work takes one unit of the
    budget in every partition the node belongs to. `group(rec)` names the records that must
    start together with rec (a hypervisor's VMs, see units.py), all or none.
    """
    sel = Selection()
    seen: set[str] = set()
    for rec in order(candidates, snapshot):
        if rec.node in seen:
            continue
        members, why = group(rec)
        members = members or [rec]
        seen.update(m.node for m in members)
        why = why or next((w for w in map(gate, members) if w), None)
        if not why and max_in_flight and in_flight + len(members) > max_in_flight:
            why = f"max_in_flight ({max_in_flight}) reached"
        counts: dict[str, int] = {}
        for m in members:
            if m.klass == ChangeClass.DRAIN:
                for p in snapshot.nodes[m.node].partitions:
                    counts[p] = counts.get(p, 0) + 1
        if not why and not fits(budget, counts):
            full = [p for p, c in counts.items() if not fits(budget, {p: c})]
            why = f"capacity budget full in {','.join(full)}"
        if why:
            sel.waiting.update({m.node: why for m in members})
            continue
        for p, c in counts.items():
            budget.take([p], c)
        in_flight += len(members)
        sel.start.extend(members)
    return sel
