"""The node state machine: an explicit table of allowed transitions."""
from __future__ import annotations

from ..model import ChangeClass, NodeRecord
from ..model import NodePhase as P

# DRAIN path: pending -> draining -> drained -> applying -> rebooting -> verifying -> resuming -> done
# HOT path:   pending -> applying -> verifying -> done
# A failed attempt waits in retry_wait and tries again from applying (a drained node stays
# drained); after max_attempts it is failed (left drained, reason recorded; a HOT node is drained
# then, and resumed if a retry succeeds: verifying -> resuming). Work stopped before
# the change was applied (halt, newly blacklisted, superseded by a no-op) is resumed: resuming
# with a cancel reason -> cancelled.
TRANSITIONS: dict[P, frozenset[P]] = {
    P.PENDING: frozenset({P.DRAINING, P.APPLYING, P.DONE, P.CANCELLED}),
    P.DRAINING: frozenset({P.DRAINED, P.RESUMING, P.CANCELLED}),
    P.DRAINED: frozenset({P.APPLYING, P.RESUMING, P.CANCELLED}),
    P.APPLYING: frozenset({P.REBOOTING, P.VERIFYING, P.RETRY_WAIT, P.FAILED}),
    P.REBOOTING: frozenset({P.VERIFYING, P.RETRY_WAIT, P.FAILED, P.RESUMING}),
    P.VERIFYING: frozenset({P.RESUMING, P.DONE, P.RETRY_WAIT, P.FAILED}),
    P.RESUMING: frozenset({P.DONE, P.CANCELLED}),
    P.RETRY_WAIT: frozenset({P.APPLYING, P.FAILED, P.RESUMING, P.CANCELLED}),
    P.FAILED: frozenset({P.RETRY_WAIT, P.SKIPPED, P.APPLYING}),
    P.DONE: frozenset(),
    P.CANCELLED: frozenset(),
    P.SKIPPED: frozenset(),
}

# Phases in which the change may already be (partly) on the node: a halt lets them finish.
POST_APPLY = frozenset({P.APPLYING, P.REBOOTING, P.VERIFYING, P.RESUMING, P.RETRY_WAIT})
# Phases in which the node was taken out but nothing was changed yet: safe to just resume.
PRE_APPLY = frozenset({P.DRAINING, P.DRAINED})


def finishes_first(rec: NodeRecord, klass: ChangeClass) -> bool:
    """Does this node finish its current target before it takes a newer commit (of `klass` for
    it)? Yes once its change may be on it, except when it waits to retry and is already as far out
    as the newer needs: its next attempt takes the newer (one reboot, not two). A live change
    the newer commit makes DRAIN is not drained: it finishes live first."""
    if rec.phase is P.RETRY_WAIT:
        return klass > rec.klass
    return rec.phase in POST_APPLY


class TransitionError(RuntimeError):
    pass


def check(current: P, new: P) -> None:
    if new not in TRANSITIONS[current]:
        raise TransitionError(f"illegal node transition {current.value} -> {new.value}")
