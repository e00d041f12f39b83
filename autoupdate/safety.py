"""Pure safety gates: node lists, who holds a node, capacity budgets, pause.

Every gate answers with a reason when it says no, so `status` and the logs can tell people why
a node was not touched.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from .config import NodeLists, RolloutSettings
from .model import ChangeClass, ClusterSnapshot, NodeBase, NodeInfo, NodePhase, NodeRecord
from .nodeset import expand, fold


class SafetyError(Exception):
    """A configuration that must not run (e.g. a blacklisted node also listed as a canary)."""


@dataclass(frozen=True)
class SafetyLists:
    blacklist: frozenset[str]  # casefolded
    whitelist: frozenset[str] | None
    canaries: tuple[str, ...]
    _answers: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_settings(cls, lists: NodeLists) -> "SafetyLists":
        # The blacklist matches whatever the case: Slurm's names are case-sensitive, host names
        # are not, and "Login1" was written to protect login1. The other lists match exactly.
        black = frozenset(n.casefold() for n in expand(lists.blacklist))
        white = frozenset(expand(lists.whitelist)) if lists.whitelist is not None else None
        canaries = tuple(expand(lists.canaries))

        def blacklisted(nodes) -> list[str]:
            return [n for n in nodes if n.casefold() in black]

        clashes = []
        for name, nodes in (("whitelist", white or ()), ("canaries", canaries)):
            if hit := blacklisted(nodes):
                clashes.append(f"{fold(hit)} in the blacklist and in the {name}")
        for hv, vms in lists.hypervisors.items():
            unit = [*expand(vms), hv]
            if (hit := blacklisted(unit)) and len(hit) < len(unit):
                clashes.append(f"{fold(hit)} blacklisted but hypervisor unit {hv} is not wholly")
        if clashes:
            raise SafetyError("refusing to start: nodes " + "; ".join(clashes))
        return cls(black, white, canaries)

    def managed(self, node: str) -> bool:
        # Asked for every node several times a tick: each name's answer is worked out once.
        answer = self._answers.get(node)
        if answer is None:
            answer = self._answers[node] = node.casefold() not in self.blacklist and (
                self.whitelist is None or node in self.whitelist)
        return answer


def managed_nodes(lists: SafetyLists, known: Iterable[str]) -> list[str]:
    return sorted(n for n in known if lists.managed(n))


def held_by_others(info: NodeInfo | None, snapshot: ClusterSnapshot) -> str | None:
    """Why someone else holds this node (so autoupdate must not start work on it), or None."""
    if info is None:
        return "not known to the workload manager"
    if not info.state_known:
        return f"state unknown ({info.unknown_state or info.describe()}): not touching it"
    reservations = snapshot.reservations_on(info.name)
    if not info.flags and not reservations and info.base is not NodeBase.DOWN:
        return None  # the common case, asked for every candidate every tick
    if info.drained and not info.drained_by_autoupdate:
        who = f" by {info.reason_user}" if info.reason_user else ""
        return f"drained{who}: {info.reason or 'no reason given'}"
    if info.base is NodeBase.DOWN or "NOT_RESPONDING" in info.flags:
        return f"down: {info.reason or info.describe()}"
    foreign = snapshot.foreign_reservations(info.name)
    if foreign:
        return f"in reservation {','.join(r.name for r in foreign)}"
    ours = any(r.ours for r in reservations)
    if {"MAINTENANCE", "RESERVED"} & info.flags and not ours:
        return "reserved by someone else"
    if info.rebooting and not info.drained_by_autoupdate:
        return "a reboot someone else asked for is pending"
    if {"POWERED_DOWN", "POWERING_DOWN", "POWERING_UP", "POWER_DOWN", "POWERED_OFF"} & info.flags:
        return "powered down or powering (power saving)"
    return None


def out_of_service(info: NodeInfo | None, record: NodeRecord | None) -> bool:
    """Does this node count against the capacity budget right now?"""
    if record is not None and record.phase.out_of_service and record.klass >= ChangeClass.DRAIN:
        return True
    if info is None:
        return True
    return info.drained or not info.responding or info.rebooting


def slot_starts(snapshot: ClusterSnapshot) -> dict[str, float]:
    """node -> start of autoupdate's own maintenance reservation on it (reservation strategy)."""
    return {r.nodes[0]: r.start_time for r in snapshot.reservations
            if r.ours and len(r.nodes) == 1 and r.name == f"autoupdate-{r.nodes[0]}"}


def waiting_for_slot(info: NodeInfo | None, record: NodeRecord | None, slots: Mapping[str, float],
                     now: float) -> bool:
    """Draining by reservation, slot not yet open, not drained: the node is still in service
    (jobs run on it until its slot), so it does not count against the budget."""
    return (record is not None and record.phase is NodePhase.DRAINING and info is not None
            and not info.drained and not info.rebooting and slots.get(info.name, now) > now)


@dataclass
class Budget:
    """max_unavailable per partition, counting nodes already out for any reason."""

    limits: dict[str, int]
    used: dict[str, int]

    @classmethod
    def compute(cls, rollout: RolloutSettings, snapshot: ClusterSnapshot,
                records: Mapping[str, NodeRecord], slots: Mapping[str, float] | None = None) -> "Budget":
        """`slots`: slot_starts(snapshot), when the caller has it already."""
        if slots is None:
            slots = slot_starts(snapshot)
        now, nodes = snapshot.taken_at, snapshot.nodes
        sizes = Counter(p for info in nodes.values() for p in info.partitions)
        used = Counter(p for name, info in nodes.items()  # waiting first: most nodes, in a rollout
                       if not waiting_for_slot(info, rec := records.get(name), slots, now) and out_of_service(info, rec)
                       for p in info.partitions)
        limits = {p: rollout.unavailable_limit(p, n) for p, n in sizes.items()}
        return cls(limits, dict(used))

    def room_for(self, partitions: Iterable[str], count: int = 1) -> bool:
        return all(self.used.get(p, 0) + count <= self.limits.get(p, 0) for p in partitions)

    def take(self, partitions: Iterable[str], count: int = 1) -> None:
        for p in partitions:
            self.used[p] = self.used.get(p, 0) + count

    def full_partitions(self) -> list[str]:
        return sorted(p for p, lim in self.limits.items() if self.used.get(p, 0) >= lim)


# --- pause -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PauseState:
    paused: bool
    since: float | None = None
    reason: str = ""
    by: str = ""


def read_pause(path: Path) -> PauseState:
    """The control file: present means paused. Its content (JSON or plain text) says why."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")  # whatever a human wrote there
        st = path.stat()
    except FileNotFoundError:
        return PauseState(False)
    except OSError as exc:  # unreadable control file: the safe reading is "paused"
        return PauseState(True, None, f"pause file unreadable: {exc.strerror}")
    try:
        data = json.loads(text)
        if isinstance(data, dict):
            return PauseState(True, float(data.get("since", st.st_mtime)), str(data.get("reason", "")),
                              str(data.get("by", "")))
    except (ValueError, TypeError):
        pass
    return PauseState(True, st.st_mtime, text.strip())


def write_pause(path: Path, reason: str, by: str, now: float | None = None) -> PauseState:
    path.parent.mkdir(parents=True, exist_ok=True)
    since = time.time() if now is None else now
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"since": since, "reason": reason, "by": by}) + "\n")
    tmp.replace(path)
    return PauseState(True, since, reason, by)


def clear_pause(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


IN_FLIGHT = frozenset({NodePhase.DRAINING, NodePhase.DRAINED, NodePhase.APPLYING, NodePhase.REBOOTING,
                       NodePhase.VERIFYING, NodePhase.RESUMING, NodePhase.RETRY_WAIT})
