"""The engine's repository side: a new commit becomes a rollout, and each managed node its work.

A part of `Engine` (engine.py), which holds the state these methods use."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Mapping, Sequence

import structlog

from ..detect import run_detectors
from ..model import ChangeClass, ClusterSnapshot, NodePhase, NodeRecord, Revision, Rollout, RolloutState, Verdict
from ..nodeset import fold
from ..ports import AdapterError
from ..safety import read_pause
from . import phases
from .rollout import choose_canaries

log = structlog.get_logger("autoupdate.engine")
P = NodePhase


class Adopting:
    """Fetch, verdicts, new rollouts, and handing nodes their work (never rebooting one twice)."""

    def _baseline(self) -> str | None:
        return self.store.get_meta("baseline")

    def applied(self) -> dict[str, str]:
        return self.store.applied()

    def applied_of(self, node: str, applied: Mapping[str, str]) -> str | None:
        return applied.get(node, self._baseline())

    def verdict(self, old: str | None, new: str, managed: Sequence[str]) -> Verdict:
        key = (old, new)
        if key not in self._verdicts:
            hypervisors = [h for h in self.units.hypervisors if self.lists.managed(h)]
            self._verdicts[key] = self.units.expand(
                run_detectors(self.detectors, self.source, old, new, [*managed, *hypervisors]))
        return self._verdicts[key]

    def fetch(self) -> Revision | None:
        """Fetch the tracked branch; a new head starts (or supersedes) a rollout."""
        with self._lock:
            try:
                head = self.source.fetch()
                previous = self.store.get_meta("head")
                rewritten = bool(previous) and previous != head.sha and not (
                    self.source.exists(previous) and self.source.is_ancestor(previous, head.sha))
            except AdapterError as exc:
                self.emit("source.error", f"cannot read the repository: {exc}", needs_human=True)
                return None
            self.head = head
            if previous == head.sha:
                return head
            now = self.clock.now()
            if previous is None and self._baseline() is None:
                # First start: what the nodes run now is taken to be this commit.
                self.store.set_meta("baseline", head.sha)
                self.store.set_meta("head", head.sha)
                self.store.log(f"baseline {head.short}: nodes assumed to run it", now)
                self.emit("baseline", f"tracking {head.short} ({head.summary}) as the baseline",
                          target=head.sha)
                return head
            if rewritten:
                self.emit("source.force_push",
                          f"branch rewritten: {previous[:12]} is not an ancestor of {head.short}",
                          target=head.sha, needs_human=True)
            if self._start_rollout(head, now):
                self.store.set_meta("head", head.sha)
            return head

    def _start_rollout(self, head: Revision, now: float) -> bool:
        snapshot = self._snapshot_or_none()
        if snapshot is None:
            self.emit("rollout.deferred", f"{head.short}: cannot read the workload manager; will retry")
            return False
        managed = self.managed(snapshot)
        applied = self.applied()
        records = self.store.records()
        busy = {n for n, r in records.items() if r.phase in phases.POST_APPLY and r.phase is not P.RETRY_WAIT}
        bases = {self.applied_of(n, applied) for n in managed if n not in busy}
        verdicts = {b: self.verdict(b, head.sha, managed) for b in bases}
        errors = sorted({v.error for v in verdicts.values() if v.is_error})
        old = self.store.active_rollout()
        if old is not None:
            old.state, old.reason, old.updated_at = RolloutState.SUPERSEDED, f"superseded by {head.short}", now
            self.store.save_rollout(old)
        if errors:
            r = self.store.new_rollout(head.sha, RolloutState.ERROR, now, head.summary, "; ".join(errors))
            self._cancel_pre_apply(records, "commit is ERROR", now)
            self.emit("rollout.error", f"{head.short} is ERROR, nothing started: {r.reason}",
                      rollout_id=r.id, target=head.sha, needs_human=True)
            return True
        classes = {n: verdicts[self.applied_of(n, applied)].classes.get(n, ChangeClass.GOOD)
                   for n in managed if n not in busy}
        classes = {n: c for n, c in classes.items() if n not in records or not phases.finishes_first(records[n], c)}
        self._launch(head, classes, snapshot, records, applied, now, head.summary)
        return True

    def _launch(self, head: Revision, classes: Mapping[str, ChangeClass], snapshot: ClusterSnapshot,
                records: Mapping[str, NodeRecord], applied: Mapping[str, str], now: float,
                summary: str) -> Rollout:
        """A new rollout of `head` with these per-node classes: canaries first."""
        affected = {n: c for n, c in classes.items() if c > ChangeClass.GOOD}
        canaries = choose_canaries(affected, self.lists.canaries, snapshot, self.settings.rollout.canary_count)
        rollout = self.store.new_rollout(head.sha, RolloutState.CANARY if canaries else RolloutState.WAVES,
                                         now, summary)
        rollout.canaries = canaries
        self.store.save_rollout(rollout)
        with self.store.batch():  # one transaction for thousands of new records
            self._adopt(rollout, classes, records, applied, now)
        counts = ", ".join(f"{sum(1 for c in affected.values() if c == k)} {k.label}"
                           for k in (ChangeClass.DRAIN, ChangeClass.HOT))
        self.emit("rollout.detected", f"{head.short} {summary!r}: {counts}",
                  rollout_id=rollout.id, target=head.sha, nodes=tuple(sorted(affected)),
                  data={"drain": fold(n for n, c in affected.items() if c == ChangeClass.DRAIN),
                        "hot": fold(n for n, c in affected.items() if c == ChangeClass.HOT)})
        if canaries:
            self.emit("canary.started", f"canaries {fold(canaries)} first", rollout_id=rollout.id,
                      target=head.sha, nodes=canaries)
        elif affected:
            self.emit("canary.none", "no canary among the affected nodes: straight to the waves",
                      rollout_id=rollout.id, target=head.sha)
        return rollout

    def correct_drift(self, check: Callable[[str, list[str]], Verdict]) -> Rollout | None:
        """Roll the current commit out again on nodes that drifted from it (e.g. found by
        `ansible-playbook --check`). Only when idle and not paused: a rollout has priority."""
        with self._lock:
            head = self.store.get_meta("head")
            records = self.store.records()
            if not head or self.store.active_rollout() is not None or read_pause(self.settings.pause_file).paused \
                    or any(not r.phase.terminal for r in records.values()):
                return None
            snapshot = self._snapshot_or_none()
            if snapshot is None:
                return None
            verdict = check(head, self.managed(snapshot))
            if verdict.is_error:
                self.emit("drift.error", f"drift check of {head[:12]} failed: {verdict.error}", needs_human=True)
                return None
            drifted = {n: c for n, c in verdict.classes.items() if c > ChangeClass.GOOD and self.lists.managed(n)}
            if not drifted:
                return None
            self._verdicts[(head, head)] = verdict  # carries per-node actions for _adopt
            return self._launch(self._revision(head), drifted, snapshot, records, self.applied(),
                                self.clock.now(), f"drift correction of {fold(drifted)}")

    def _adopt(self, rollout: Rollout, classes: Mapping[str, ChangeClass],
               records: Mapping[str, NodeRecord], applied: Mapping[str, str], now: float) -> None:
        """Give each managed node its work for the new rollout (without rebooting anyone twice)."""
        good = []
        for node, klass in classes.items():
            rec = records.get(node)
            canary = node in rollout.canaries
            if rec is not None and rec.phase is P.RETRY_WAIT and not phases.finishes_first(rec, klass):
                # Its next attempt applies the newer commit (likely the fix), now: one reboot, not two.
                # As disruptive as before even if the newer needs less: its failed attempt may have
                # changed it.
                new = self._retarget(rec, rollout, klass, canary, applied, attempts=0, next_attempt_at=now,
                                     last_error="")
                self.store.save(new, at=now, message=f"retargeted to {rollout.target[:12]}: tried again now")
                continue
            if rec is not None and rec.phase in phases.POST_APPLY:
                continue  # finishes its current target; picked up again when done (discover)
            if rec is not None and (rec.phase in phases.PRE_APPLY or rec.phase is P.PENDING):
                if klass == ChangeClass.GOOD:
                    self._cancel(rec, f"superseded by {rollout.target[:12]}, nothing to do", now)
                    continue
                new = self._retarget(rec, rollout, klass, canary, applied)
                self.store.save(new, at=now, message=f"retargeted to {rollout.target[:12]}")
                continue
            if rec is not None and rec.phase is P.FAILED and rec.drained_by_us:
                if klass == ChangeClass.GOOD:
                    continue  # stays as it is: a human has to look at it
                new = self._retarget(rec, rollout, klass, canary, applied, attempts=0, next_attempt_at=now,
                                     last_error="")
                self._transition(new, P.RETRY_WAIT, now, f"new commit {rollout.target[:12]}: trying again")
                continue
            if klass == ChangeClass.GOOD:
                good.append(node)
                continue
            fresh = NodeRecord(node=node, phase=P.PENDING, target=rollout.target, rollout_id=rollout.id,
                               klass=klass, since=now, canary=canary,
                               actions=tuple(self._verdict_actions(node, applied, rollout.target)))
            self.store.save(fresh, at=now, from_phase=rec.phase if rec else None, message="new work")
        if good:
            self.store.set_applied(good, rollout.target, now)

    def _retarget(self, rec: NodeRecord, rollout: Rollout, klass: ChangeClass, canary: bool,
                  applied: Mapping[str, str], **fields) -> NodeRecord:
        """`rec` now for the rollout's commit: at least as disruptive as before, with that
        commit's per-node actions (an image to switch to), not the old ones."""
        return replace(rec, target=rollout.target, rollout_id=rollout.id, klass=max(rec.klass, klass),
                       canary=canary, actions=tuple(self._verdict_actions(rec.node, applied, rollout.target)),
                       **fields)

    def _verdict_actions(self, node: str, applied: Mapping[str, str], target: str):
        v = self._verdicts.get((self.applied_of(node, applied), target))
        return v.actions.get(node, ()) if v else ()

    def _discover(self, rollout: Rollout, snapshot: ClusterSnapshot,
                  records: Mapping[str, NodeRecord], now: float) -> None:
        """Nodes that finished an older target, or were newly allowed, get this rollout's work."""
        applied = self.applied()
        todo = [n for n in self.managed(snapshot)  # cheap test first: applied_of reads the store
                if (n not in records or (records[n].phase.terminal and records[n].target != rollout.target))
                and self.applied_of(n, applied) != rollout.target]
        if not todo:
            return
        classes = {}
        for n in todo:
            v = self.verdict(self.applied_of(n, applied), rollout.target, self.managed(snapshot))
            if v.is_error:
                self.emit("rollout.error", f"{rollout.target[:12]} is ERROR for {n}: {v.error}",
                          rollout_id=rollout.id, needs_human=True)
                return
            classes[n] = v.classes.get(n, ChangeClass.GOOD)
        with self.store.batch():  # one transaction for thousands of new records
            self._adopt(rollout, classes, records, applied, now)

    def _revision(self, sha: str) -> Revision:
        try:
            return self.source.revision(sha)
        except AdapterError:
            return Revision(sha)
