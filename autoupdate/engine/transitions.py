"""The engine's node transitions: each persisted (phases.py checks it is allowed) before the
action it leads to; failed attempts, retries, and how a node given up on is left.

A part of `Engine` (engine.py), which holds the state these methods use."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Mapping

import structlog

from ..model import REASON_PREFIX, ClusterSnapshot, NodePhase, NodeRecord
from ..ports import AdapterError
from ..safety import held_by_others
from . import phases
from .slots import reservation_name

log = structlog.get_logger("autoupdate.engine")
P = NodePhase


def drain_reason(record: NodeRecord, note: str = "") -> str:
    reason = f"{REASON_PREFIX} {record.target[:12]} {record.klass.label} rollout {record.rollout_id}"
    return f"{reason}: {note}"[:250] if note else reason


class Transitions:
    """Moving a node record from phase to phase, and what a failure does to it."""

    def _transition(self, rec: NodeRecord, phase: NodePhase, now: float, message: str = "",
                    **changes) -> NodeRecord:
        phases.check(rec.phase, phase)
        new = replace(rec, phase=phase, since=now, action_done=False, **changes)
        self.store.save(new, at=now, from_phase=rec.phase, message=message)
        if phase in (P.RESUMING, P.CANCELLED, P.FAILED, P.DONE) and self._slots.pop(rec.node, None) is not None:
            self._safe(lambda: self.wm.unreserve(reservation_name(rec.node)), rec.node, "unreserve")
        log.info("node", node=rec.node, frm=rec.phase.value, to=phase.value, msg=message or None)
        return new

    def _mark_done(self, rec: NodeRecord, now: float, **changes) -> NodeRecord:
        new = replace(rec, action_done=True, **changes)
        self.store.save(new, at=now)
        return new

    def _cancel(self, rec: NodeRecord, why: str, now: float) -> None:
        """Stop work that has not changed the node yet: resume it if we drained it."""
        if rec.phase is P.PENDING or not rec.drained_by_us:
            self._transition(rec, P.CANCELLED, now, why, cancel_reason=why)
        else:
            self._transition(rec, P.RESUMING, now, why, cancel_reason=why)

    def _cancel_pre_apply(self, records: Mapping[str, NodeRecord], why: str, now: float) -> None:
        for rec in records.values():
            if rec.phase in phases.PRE_APPLY or rec.phase is P.PENDING:
                self._cancel(rec, why, now)

    def _attempt_failed(self, rec: NodeRecord, error: str, now: float, snapshot: ClusterSnapshot) -> None:
        attempts = rec.attempts + 1
        rs = self.settings.rollout
        if rec.canary or attempts >= rs.max_attempts:
            why = (f"canary failed: {error}" if rec.canary
                   else f"failed after {attempts} attempt(s): {error}")
            new = self._transition(rec, P.FAILED, now, why, attempts=attempts, last_error=error)
            left = self._hold_failed(new, why, now, snapshot)
            self.emit("canary.failed" if rec.canary else "node.failed", f"{rec.node}: {why}{left}",
                      rollout_id=rec.rollout_id, target=rec.target, nodes=(rec.node,), needs_human=True)
            return
        delay = min(rs.retry_backoff_seconds * (2 ** (attempts - 1)), rs.retry_backoff_max_seconds)
        self._transition(rec, P.RETRY_WAIT, now, f"attempt {attempts} failed: {error}",
                         attempts=attempts, last_error=error, next_attempt_at=now + delay)
        self.emit("node.attempt_failed", f"{rec.node}: attempt {attempts}/{rs.max_attempts} failed: {error}",
                  rollout_id=rec.rollout_id, target=rec.target, nodes=(rec.node,))

    def _hold_failed(self, rec: NodeRecord, why: str, now: float, snapshot: ClusterSnapshot) -> str:
        """A node given up on stays out of the scheduler's hands until a human looks: re-drained
        with the reason if autoupdate drained it; drained now if its live (HOT) change failed,
        since what it runs is then unknown (its running jobs go on, no new ones start). Someone
        else's hold on the node is left alone. Says how the node was left, for the message."""
        def drain() -> None:
            self.wm.drain([rec.node], drain_reason(rec, why))

        if rec.drained_by_us:
            if self._safe(drain, rec.node, "re-drain"):
                return " (left drained)"
            info = snapshot.nodes.get(rec.node)  # this tick's view: drained before the failure?
            if info is not None and info.drained:
                return " (left drained; its reason could not be updated)"
            return " (re-drain failed: it may take new jobs)"
        blocker = held_by_others(snapshot.nodes.get(rec.node), snapshot)  # this tick's view
        if blocker:
            return f" (not drained: {blocker})"
        self.store.save(replace(rec, drained_by_us=True), at=now, message="drained: its change failed")
        if self._safe(drain, rec.node, "drain"):
            return " (drained: its jobs run on, no new ones start)"
        self.store.save(rec, at=now, message="drain failed: still in service")
        return " (drain failed: still in service)"

    def _safe(self, fn: Callable[[], object], node: str, what: str) -> bool:
        try:
            fn()
            return True
        except AdapterError as exc:
            log.error(f"{what} failed", node=node, error=str(exc))
            return False

    def _finish(self, rec: NodeRecord, now: float) -> None:
        self.store.set_applied([rec.node], rec.target, now)
        self._transition(rec, P.DONE, now, f"runs {rec.target[:12]}")
