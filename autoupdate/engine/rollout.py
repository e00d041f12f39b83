"""Rollout lifecycle: canaries -> soak -> waves -> done, or halted (pure decisions)."""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from ..config import RolloutSettings, resolve_amount
from ..model import ChangeClass, ClusterSnapshot, NodePhase, NodeRecord, Rollout, RolloutState
from .planner import idle_key


def choose_canaries(affected: Mapping[str, ChangeClass], canary_list: Sequence[str],
                    snapshot: ClusterSnapshot, count: int) -> tuple[str, ...]:
    """The canaries among the affected nodes, those that will be idle soonest first."""
    pool = [n for n in canary_list if affected.get(n, ChangeClass.GOOD) > ChangeClass.GOOD]
    pool.sort(key=lambda n: idle_key(snapshot, n))
    return tuple(pool[:count])


def failure_limit(settings: RolloutSettings, affected: int) -> int:
    return max(1, resolve_amount(settings.failure_budget, affected, minimum=1))


def next_state(rollout: Rollout, records: Iterable[NodeRecord], now: float,
               settings: RolloutSettings, stragglers: bool = False) -> tuple[RolloutState, str]:
    """Where the rollout goes from here given its node records; (state, reason)."""
    mine = [r for r in records if r.rollout_id == rollout.id]
    failed = [r for r in mine if r.phase is NodePhase.FAILED]
    canaries = [r for r in mine if r.canary]
    if rollout.state is RolloutState.CANARY:
        bad = [r for r in canaries if r.phase in (NodePhase.FAILED, NodePhase.RETRY_WAIT)]
        if bad:
            return RolloutState.HALTED, f"canary {bad[0].node} failed: {bad[0].last_error}"
        if all(r.phase in (NodePhase.DONE, NodePhase.SKIPPED) for r in canaries):
            return RolloutState.SOAK, ""
        return rollout.state, ""
    if rollout.state is RolloutState.SOAK:
        return (RolloutState.WAVES, "") if now >= rollout.soak_until else (rollout.state, "")
    if rollout.state is RolloutState.WAVES:
        limit = failure_limit(settings, len(mine))
        if len(failed) >= limit:
            names = ",".join(sorted(r.node for r in failed))
            return RolloutState.HALTED, f"failure budget reached: {len(failed)} node(s) failed ({names})"
        if not stragglers and all(r.phase.terminal for r in mine):
            return RolloutState.DONE, (f"{len(failed)} node(s) failed" if failed else "")
        return rollout.state, ""
    return rollout.state, ""


def waves_start(rollout: Rollout, records: Iterable[NodeRecord], snapshot: ClusterSnapshot,
                slots: Mapping[str, float], length: float, soak: float, now: float) -> float:
    """When the waves may begin, as far as can be told now: the soak's end, or each canary's
    slot (or its expected idle time) plus one slot length, then the soak. An estimate: a slot
    that comes due before the waves really begin is moved again."""
    if rollout.state is RolloutState.SOAK:
        return rollout.soak_until
    if rollout.state is not RolloutState.CANARY:
        return now
    ends = [now]
    for r in records:
        if r.rollout_id != rollout.id or not r.canary or r.phase.terminal:
            continue
        if r.phase in (NodePhase.PENDING, NodePhase.DRAINING) and r.klass >= ChangeClass.DRAIN:
            ends.append(max(now, slots.get(r.node, snapshot.idle_at(r.node))) + length)
        else:  # out of service now, or live work: back within about one slot length
            ends.append(max(now, r.since + length))
    return max(ends) + soak


def stage_allows(rollout: Rollout, record: NodeRecord) -> str | None:
    """May this record's node start work in the rollout's current stage? None: yes."""
    if not rollout.state.active:
        return f"rollout {rollout.id} is {rollout.state.value}"
    if rollout.state is RolloutState.CANARY and not record.canary:
        return "waiting for the canaries"
    if rollout.state is RolloutState.SOAK:
        return "canaries passed; soaking"
    return None
