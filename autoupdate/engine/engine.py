"""The engine: one tick reads the cluster once, advances every node record, starts new work.

It talks to the world only through the ports (workload manager, source, detectors, applier,
rebooter, checks, notifiers) and persists each node transition before acting on it.
"""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Mapping, Sequence

import structlog

from ..config import Settings
from ..detect import run_detectors
from ..model import (
    REASON_PREFIX, ChangeClass, ClusterSnapshot, Event, NodeBase, NodePhase, NodeRecord, Revision,
    Rollout, RolloutState, Verdict,
)
from ..nodeset import fold
from ..ports import AdapterError, RebootStatus
from ..safety import IN_FLIGHT, Budget, SafetyLists, held_by_others, read_pause
from ..store import Store
from . import phases
from .head_job import GiveWay, give_way
from .planner import select
from .reboot_clock import RebootClock
from .rollout import choose_canaries, next_state, stage_allows, waves_start
from .slots import Hold, our_slots, plan as plan_slots, reservation_name, with_away
from .units import Units

log = structlog.get_logger("autoupdate.engine")
P = NodePhase


class InlineExecutor:
    """Runs work at once in the calling thread (unit tests, the simulator)."""

    def submit(self, fn: Callable, *args, **kwargs) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except Exception as exc:  # handed back to the caller via the future, as a pool would
            fut.set_exception(exc)
        return fut

    def shutdown(self, wait: bool = True) -> None:
        pass


def drain_reason(record: NodeRecord, note: str = "") -> str:
    reason = f"{REASON_PREFIX} {record.target[:12]} {record.klass.label} rollout {record.rollout_id}"
    return f"{reason}: {note}"[:250] if note else reason


@dataclass
class TickReport:
    at: float
    ok: bool = True
    error: str = ""
    paused: bool = False
    started: list[str] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)
    held: dict[str, str] = field(default_factory=dict)  # node -> why someone else holds it
    look_again_at: float | None = None  # a rebooting node is due back: tick then, not at the poll


WAKE_DELAY = 1.0  # seconds from a wake-up (work done, drain issued) to the service's extra tick


class Engine:
    def __init__(self, settings: Settings, store: Store, *, workload_manager, source, detectors,
                 applier, rebooter, checks=(), notifiers=(), clock, executor=None,
                 window_gate: Callable[[ChangeClass, float], str | None] | None = None,
                 window_opens: Callable[[ChangeClass, float], float | None] | None = None,
                 units: Units | None = None):
        self.settings = settings
        self.lists = SafetyLists.from_settings(settings.nodes)
        self.store = store
        self.wm = workload_manager
        self.source = source
        self.detectors = list(detectors)
        self.applier = applier
        self.rebooter = rebooter
        self.checks = list(checks)
        self.notifiers = list(notifiers)
        self.clock = clock
        self.executor = executor or ThreadPoolExecutor(max_workers=8, thread_name_prefix="autoupdate-work")
        self.window_gate = window_gate or (lambda klass, now: None)
        self.window_opens = window_opens or (lambda klass, now: None)  # when a closed window opens
        self._lock = threading.RLock()
        self._work: dict[str, tuple[NodePhase, Future]] = {}
        self._verdicts: dict[tuple[str | None, str], Verdict] = {}
        self._paused_seen: bool | None = None
        self.last_report: TickReport | None = None
        self._slots: dict[str, float] = {}  # node -> our maintenance reservation's start
        self.head: Revision | None = None
        # Called when a node can move on before the next poll (background work finished, a drain
        # went through): the service ticks again at once instead of a poll interval later.
        self.wake: Callable[[], None] = lambda: None
        self.reboot_clock = RebootClock()  # how long reboots take here: when to look again
        self.last_read_seconds = 0.0  # how long the last cluster read took (the service paces on it)
        # Hypervisor units (nodes.hypervisors; see units.py): VMs drained, applied, rebooted together.
        (units if units is not None else Units.from_settings(settings)).attach(self, applier, rebooter)

    @classmethod
    def from_deps(cls, deps, store: Store, **kw) -> "Engine":
        return cls(deps.settings, store, workload_manager=deps.workload_manager, source=deps.source,
                   detectors=deps.detectors, applier=deps.applier, rebooter=deps.rebooter,
                   checks=deps.checks, notifiers=deps.notifiers, clock=deps.clock,
                   **{"units": Units.from_deps(deps), **kw})

    # --- configuration ------------------------------------------------------------------------
    def reconfigure(self, settings: Settings) -> None:
        """Live reload: new lists/budgets apply from the next decision on (validated already)."""
        lists = SafetyLists.from_settings(settings.nodes)
        with self._lock:
            self.settings, self.lists = settings, lists
            if self.units.remap(settings):
                self._verdicts.clear()  # verdicts carry the old map's hypervisor classes

    # --- notifications ------------------------------------------------------------------------
    def emit(self, kind: str, message: str, **kw) -> None:
        event = Event(kind=kind, message=message, **kw)
        log.info(kind, message=message, rollout=event.rollout_id, nodes=fold(event.nodes) or None)
        for n in self.notifiers:
            try:
                n.notify(event)
            except Exception as exc:  # a failing notifier never stops a rollout
                log.warning("notifier failed", notifier=type(n).__name__, error=str(exc))

    # --- the repository -----------------------------------------------------------------------
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

    # --- the tick -----------------------------------------------------------------------------
    def _snapshot_or_none(self) -> ClusterSnapshot | None:
        try:
            return self.wm.snapshot()
        except AdapterError as exc:
            log.error("cannot read the workload manager", error=str(exc))
            return None

    def managed(self, snapshot: ClusterSnapshot) -> list[str]:
        return sorted(n for n in snapshot.nodes if self.lists.managed(n))

    def tick(self) -> TickReport:
        with self._lock:
            now = self.clock.now()
            report = TickReport(at=now)
            started = time.monotonic()
            try:
                snapshot = self.wm.snapshot()
            except AdapterError as exc:
                # Cannot tell whether anything is safe: act on nothing, say so.
                report.ok, report.error = False, f"cannot read the workload manager: {exc}"
                log.error("tick skipped", error=report.error)
                self.last_report = report
                return report
            finally:
                self.last_read_seconds = time.monotonic() - started
            self._slots = our_slots(snapshot)
            pause = read_pause(self.settings.pause_file)
            report.paused = pause.paused
            self._note_pause(pause)
            records = self.store.records()
            rollout = self.store.active_rollout()
            if rollout is not None:
                self._discover(rollout, snapshot, records, now)
                records = self.store.records()
            self._collect_work(records, snapshot, now)
            records = self.store.records()
            hold = self._slot_hold(rollout, records, snapshot, now, pause)
            away = self._give_way(records, snapshot, now)
            self._advance(records, snapshot, now, report, with_away(hold, away))
            records = self.store.records()
            if rollout is not None:  # paused: nothing starts, and slots about to open move back
                self._start_new(rollout, records, snapshot, now, report, hold, away, pause.paused)
            self._lifecycle(now)
            self._note_held(report)
            report.look_again_at = self._look_again(records, now)
            self.last_report = report
            return report

    def _note_held(self, report: TickReport) -> None:
        """Nodes someone else holds are left alone, and said so once (and shown by status)."""
        previous = json.loads(self.store.get_meta("held") or "{}")
        if report.held == previous:
            return
        self.store.set_meta("held", json.dumps(report.held, sort_keys=True))
        new = {n: why for n, why in report.held.items() if previous.get(n) != why}
        for why in sorted(set(new.values())):
            nodes = tuple(sorted(n for n, w in new.items() if w == why))
            self.emit("node.held", f"not touching {fold(nodes)}: {why}", nodes=nodes)

    def _give_way(self, records: Mapping[str, NodeRecord], snapshot: ClusterSnapshot,
                  now: float) -> dict[str, tuple[float, str]]:
        """Our nodes that keep out of the head job's way (head_job.py): node -> (not before, why)."""
        rs = self.settings.rollout
        way = give_way(snapshot, records, now + self._horizon()) if rs.drain_strategy == "reservation" else None
        self._note_way(way)
        # One slot past the job's end: its planned start may slip (a job that could start now
        # waits for Slurm's next scheduling pass) without our slots chasing it into its way.
        return {n: (way.until + rs.reservation_seconds, way.why) for n in way.nodes} if way else {}

    def _note_way(self, way: GiveWay | None) -> None:
        """Giving way to the head job (head_job.py): logged when it changes, shown by status.
        Not a notification: it changes with the queue, many times a day."""
        previous = json.loads(self.store.get_meta("giving_way") or "{}")
        if (previous.get("job"), previous.get("nodes")) == ((way.job, sorted(way.nodes)) if way else (None, None)):
            return  # the same job and nodes: its planned start moving is not news
        self.store.set_meta("giving_way", json.dumps(
            {"job": way.job, "why": way.why, "until": way.until, "nodes": sorted(way.nodes)} if way else {}))
        if way:
            log.info("giving way to the job at the head of the queue", why=way.why, nodes=fold(way.nodes),
                     until=round(way.until))

    def _note_pause(self, pause) -> None:
        if self._paused_seen is not None and pause.paused != self._paused_seen:
            if pause.paused:
                self.emit("paused", f"paused{': ' + pause.reason if pause.reason else ''}")
            else:
                self.emit("resumed", "resumed: new node work may start again")
        self._paused_seen = pause.paused

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

    # --- transitions --------------------------------------------------------------------------
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

    # --- background work (apply, reboot start, verification) ----------------------------------
    def _submit(self, rec: NodeRecord, fn: Callable, *args) -> None:
        fut = self.executor.submit(fn, *args)
        self._work[rec.node] = (rec.phase, fut)
        fut.add_done_callback(self._woken)

    def _woken(self, _fut: Future | None = None) -> None:
        try:
            self.wake()
        except Exception as exc:  # a wake-up is an optimisation: never let it break the work
            log.warning("wake-up failed", error=str(exc))

    def _collect_work(self, records: Mapping[str, NodeRecord], snapshot: ClusterSnapshot, now: float) -> None:
        for node, (phase, fut) in list(self._work.items()):
            if not fut.done():
                continue
            del self._work[node]
            rec = records.get(node)
            if rec is None or rec.phase is not phase:
                continue  # the record moved on (admin action, reload): the result is stale
            try:
                result = fut.result()
            except Exception as exc:  # adapter errors and bugs alike fail the attempt, not the loop
                self._attempt_failed(rec, f"{phase.value}: {exc}", now, snapshot)
                continue
            self._work_finished(rec, result, now, snapshot)

    def _work_finished(self, rec: NodeRecord, result, now: float, snapshot: ClusterSnapshot) -> None:
        if rec.phase is P.APPLYING:
            if not result.ok:
                self._attempt_failed(rec, f"apply: {result.message}", now, snapshot)
            elif rec.klass == ChangeClass.DRAIN:
                self._transition(rec, P.REBOOTING, now, "applied")
            else:
                self._transition(rec, P.VERIFYING, now, "applied live")
        elif rec.phase is P.REBOOTING:
            self._mark_done(rec, now)  # reboot issued; poll() decides when it is back
        elif rec.phase is P.VERIFYING:
            if result:
                self._attempt_failed(rec, f"verify: {result}", now, snapshot)
            elif rec.klass == ChangeClass.DRAIN or rec.drained_by_us:  # HOT: drained when it failed before
                self._transition(rec, P.RESUMING, now, "verified")
            else:
                self._finish(rec, now)

    def _finish(self, rec: NodeRecord, now: float) -> None:
        self.store.set_applied([rec.node], rec.target, now)
        self._transition(rec, P.DONE, now, f"runs {rec.target[:12]}")

    def _run_checks(self, rec: NodeRecord, snapshot: ClusterSnapshot) -> str | None:
        for check in self.checks:
            failure = check.check(rec, snapshot)
            if failure:
                return failure
        return None

    # --- advancing records --------------------------------------------------------------------
    def _advance(self, records: Mapping[str, NodeRecord], snapshot: ClusterSnapshot, now: float,
                 report: TickReport, hold: Hold | None) -> None:
        to_drain: dict[str, list[str]] = {}
        to_resume: list[NodeRecord] = []
        to_apply: dict[tuple[str, ChangeClass], list[NodeRecord]] = {}
        to_reboot: list[NodeRecord] = []
        released = self.units.released(records)  # hypervisor units whose VMs are all drained
        rollouts: dict[int, Rollout | None] = {}  # looked up once per tick, not once per record

        def start_apply(rec: NodeRecord) -> None:
            """A drained node goes on to applying, unless its hypervisor unit still waits."""
            held = self.units.held(rec, released)
            if held:
                report.waiting[rec.node] = held
                return
            rec = self._transition(rec, P.APPLYING, now)
            to_apply.setdefault((rec.target, rec.klass), []).append(rec)

        for rec in records.values():
            if rec.phase.terminal or rec.node in self._work:
                continue
            info = snapshot.nodes.get(rec.node)
            managed = self.lists.managed(rec.node)
            if rec.phase is P.PENDING:
                if not managed:
                    self._cancel(rec, "no longer managed (blacklist/whitelist)", now)
                continue  # new work starts in _start_new
            if info is None or not info.state_known:
                report.waiting[rec.node] = "node state unknown: not acting"
                continue
            if rec.drained_by_us and info.drained and not info.drained_by_autoupdate:
                # A human re-drained it with their own reason: theirs now; never resume it.
                self._transition(rec, P.CANCELLED if rec.phase in phases.PRE_APPLY else P.FAILED,
                                 now, f"taken over by a human: {info.reason}",
                                 cancel_reason="taken over by a human", drained_by_us=False)
                continue
            if not managed and (rec.phase in phases.PRE_APPLY or rec.phase is P.RETRY_WAIT
                                or rec.phase is P.REBOOTING and not rec.action_done):
                # Not touched again from now on: resumed as it is, never rebooted.
                self._cancel(rec, "no longer managed (blacklist/whitelist): resumed, not rebooted", now)
                continue
            if rec.phase is P.DRAINING:
                if not rec.action_done:
                    if self.settings.rollout.drain_strategy != "reservation":  # else: planned in _start_new
                        to_drain.setdefault(drain_reason(rec), []).append(rec.node)
                elif info.drained_by_autoupdate and not snapshot.busy(rec.node) \
                        and info.base in (NodeBase.IDLE, NodeBase.DOWN) and "COMPLETING" not in info.flags:
                    start_apply(self._transition(rec, P.DRAINED, now, "empty"))
                elif not info.drained:
                    opens = self._slots.get(rec.node)
                    held = hold(rec) if hold and (opens is None or opens <= now) else None
                    if opens is not None and opens > now:
                        report.waiting[rec.node] = f"maintenance slot opens in {opens - now:.0f}s"
                    elif held and held[0] > now:  # paused, window closed, canaries not through
                        report.waiting[rec.node] = f"maintenance slot held: {held[1]}"
                    else:  # its slot is open (jobs still on it: drained too, so none start when the
                        # reservation ends), or its reservation or our drain is gone: (re)drain
                        to_drain.setdefault(drain_reason(rec), []).append(rec.node)
            elif rec.phase is P.DRAINED:
                start_apply(rec)
            elif rec.phase is P.APPLYING:
                to_apply.setdefault((rec.target, rec.klass), []).append(rec)
            elif rec.phase is P.REBOOTING:
                if not rec.action_done:
                    to_reboot.append(rec)
                else:
                    status = self._poll_reboot(rec, snapshot, now)
                    if status.state == "done":
                        self._learn_reboot(rec, info, now)
                        self._verify(self._transition(rec, P.VERIFYING, now, "back"), snapshot)
                    elif status.state == "failed":
                        self._attempt_failed(rec, f"reboot: {status.message}", now, snapshot)
            elif rec.phase is P.VERIFYING:
                self._verify(rec, snapshot)
            elif rec.phase is P.RESUMING:
                held_by_us = info.drained_by_autoupdate or (
                    info.base is NodeBase.DOWN and "NOT_RESPONDING" not in info.flags
                    and info.reason.startswith(REASON_PREFIX))
                if held_by_us:
                    to_resume.append(rec)  # drained, or left DOWN by a reboot with our reason
                elif not info.drained:
                    if rec.cancel_reason:
                        self._transition(rec, P.CANCELLED, now, "resumed, not updated", drained_by_us=False)
                    else:
                        self._finish(replace(rec, drained_by_us=False), now)
            elif rec.phase is P.RETRY_WAIT:
                if rec.rollout_id not in rollouts:
                    rollouts[rec.rollout_id] = self.store.rollout(rec.rollout_id)
                rollout = rollouts[rec.rollout_id]
                if rollout is not None and rollout.state is RolloutState.HALTED:
                    new = self._transition(rec, P.FAILED, now, f"rollout halted: {rollout.reason}")
                    if not new.drained_by_us:  # its live change failed at least once
                        self._hold_failed(new, f"{rec.last_error}; rollout halted", now, snapshot)
                elif now >= rec.next_attempt_at and rollout is not None:
                    # Its rollout may be over (done, when an admin asked for a retry): the node
                    # still finishes its target, then takes the newest.
                    if rec.klass == ChangeClass.DRAIN and not info.drained_by_autoupdate:
                        report.waiting[rec.node] = "not drained by autoupdate any more"
                        continue
                    held = None if rec.drained_by_us else held_by_others(info, snapshot)
                    if held:  # a live change is not tried again on a node someone else took
                        report.waiting[rec.node] = held
                        continue
                    rec = self._transition(rec, P.APPLYING, now, f"attempt {rec.attempts + 1}")
                    to_apply.setdefault((rec.target, rec.klass), []).append(rec)
        self._do_drains(to_drain, records, now)
        self._do_resumes(to_resume, now)
        self._do_applies(to_apply)
        self._do_reboots(to_reboot, now, report)

    def _learn_reboot(self, rec: NodeRecord, info, now: float) -> None:
        """The node's new boot time says when it came back (not when this tick noticed)."""
        back = info.boot_time if info.boot_time is not None and rec.since < info.boot_time <= now else now
        self.reboot_clock.learn(back - rec.since)

    def _look_again(self, records: Mapping[str, NodeRecord], now: float) -> float | None:
        """When something is due before the next poll: a rebooting node back, the soak's end."""
        issued = (r.since for r in records.values() if r.phase is P.REBOOTING and r.action_done)
        at = self.reboot_clock.next_look(issued, now, self.settings.control.reboot_poll_interval)
        rollout = self.store.active_rollout()
        if rollout is not None and rollout.state is RolloutState.SOAK and rollout.soak_until > now:
            at = rollout.soak_until if at is None else min(at, rollout.soak_until)
        return at

    def _poll_reboot(self, rec: NodeRecord, snapshot: ClusterSnapshot, now: float) -> RebootStatus:
        try:
            return self.rebooter.poll(rec, snapshot, now)
        except Exception as exc:
            return RebootStatus("failed", str(exc))

    def _verify(self, rec: NodeRecord, snapshot: ClusterSnapshot) -> None:
        self._submit(rec, self._run_checks, rec, snapshot)

    def _do_drains(self, to_drain: dict[str, list[str]], records: Mapping[str, NodeRecord], now: float) -> None:
        for reason, nodes in to_drain.items():
            try:
                self.wm.drain(nodes, reason)
            except AdapterError as exc:
                log.error("drain failed", nodes=fold(nodes), error=str(exc))
                continue
            for n in nodes:
                rec = self.store.record(n)
                if rec is not None and rec.phase is P.DRAINING:
                    self._mark_done(rec, now)
            self._woken()  # empty nodes are drained at once: the next tick moves them on

    def _do_resumes(self, recs: list[NodeRecord], now: float) -> None:
        if recs:
            nodes = [r.node for r in recs]
            if self._safe(lambda: self.wm.resume(nodes), fold(nodes), "resume"):
                self._woken()  # the next tick sees them back in service and finishes them

    def _do_applies(self, batches: dict[tuple[str, ChangeClass], list[NodeRecord]]) -> None:
        for (target, klass), recs in batches.items():
            revision = self._revision(target)
            nodes = [r.node for r in recs]
            actions = {r.node: r.actions for r in recs if r.actions}
            fut = self.executor.submit(self.applier.apply, nodes, revision, klass, actions)
            for r in recs:
                self._work[r.node] = (P.APPLYING, _Pick(fut, r.node))
            fut.add_done_callback(self._woken)

    def _revision(self, sha: str) -> Revision:
        try:
            return self.source.revision(sha)
        except AdapterError:
            return Revision(sha)

    def _do_reboots(self, recs: list[NodeRecord], now: float, report: TickReport) -> None:
        if not recs:
            return
        # Fresh state right before a disruptive action: one more read for the whole batch.
        fresh = self._snapshot_or_none()
        if fresh is None:
            report.error = "cannot re-read the workload manager before rebooting: not rebooting"
            return
        for rec in recs:
            info = fresh.nodes.get(rec.node)
            why = None
            if info is None or not info.state_known:
                why = "node state unknown"
            elif not info.drained_by_autoupdate:
                why = f"not drained by autoupdate ({info.describe()} {info.reason!r})"
            elif fresh.busy(rec.node):
                why = f"jobs still running ({','.join(j.job_id for j in fresh.jobs_on(rec.node))})"
            if why:
                report.waiting[rec.node] = f"reboot held: {why}"
                log.warning("reboot held", node=rec.node, why=why)
                continue
            # verify.boot_time: false (nodes whose boot time Slurm cannot see change) skips that test
            rec = replace(rec, boot_time_before=info.boot_time if self.settings.verify.boot_time else None)
            self.store.save(rec, at=now)
            self._submit(rec, self.rebooter.start, rec, fresh)

    # --- starting new work --------------------------------------------------------------------
    def _slot_hold(self, rollout: Rollout | None, records: Mapping[str, NodeRecord], snapshot: ClusterSnapshot,
                   now: float, pause) -> Hold | None:
        """Why a node may not open its maintenance slot now, and until when (see slots.py); None:
        nothing holds any node."""
        if self.settings.rollout.drain_strategy != "reservation":
            return None  # no slots: starting work is gated in _start_new
        soon = now + self._horizon() + 1
        if pause.paused:  # pushed back as far as the pause has lasted: a long pause moves slots rarely
            until = max(soon, 2 * now - (pause.since or now))
            return lambda rec: (until, "paused")
        rs = self.settings.rollout
        waves = None
        if rollout is not None and rollout.state in (RolloutState.CANARY, RolloutState.SOAK):
            waves = waves_start(rollout, records.values(), snapshot, self._slots, rs.reservation_seconds,
                                rs.soak_seconds, now)
        closed = None  # only DRAIN work has slots
        why = self.window_gate(ChangeClass.DRAIN, now)
        if why:
            opens = self.window_opens(ChangeClass.DRAIN, now)
            closed = (opens if opens is not None and opens > now else soon, why)
        if closed is None and waves is None:
            return None

        def hold(rec: NodeRecord) -> tuple[float, str] | None:
            if closed:
                return closed
            if waves is not None and rec.rollout_id == rollout.id and not rec.canary:
                return waves, stage_allows(rollout, rec) or "waiting for the canaries"
            return None
        return hold

    def _horizon(self) -> float:
        """A slot opening this soon is committed: the next tick may come too late to move it."""
        return 2 * self.settings.control.poll_interval

    def _start_new(self, rollout: Rollout, records: Mapping[str, NodeRecord], snapshot: ClusterSnapshot,
                   now: float, report: TickReport, hold: Hold | None, away: Mapping[str, tuple[float, str]],
                   paused: bool = False) -> None:
        pending = [r for r in records.values() if r.phase is P.PENDING and r.rollout_id == rollout.id]
        reserving = self.settings.rollout.drain_strategy == "reservation"
        slotted = [r for r in records.values() if reserving and r.phase is P.DRAINING and r.rollout_id == rollout.id
                   and (not r.action_done or r.node in self._slots)]
        if not pending and not slotted:
            return
        budget = Budget.compute(self.settings.rollout, snapshot, records, self._slots)
        in_flight = sum(1 for r in records.values() if r.phase in IN_FLIGHT)

        def gate(rec: NodeRecord) -> str | None:
            if not self.lists.managed(rec.node):
                return "not managed"
            why = "paused" if paused else self.window_gate(rec.klass, now)
            if not why and not (reserving and rec.klass == ChangeClass.DRAIN):
                why = stage_allows(rollout, rec)  # slots are placed anyway, held until the waves
            if why:
                return why
            held = held_by_others(snapshot.nodes.get(rec.node), snapshot)
            if held:
                report.held[rec.node] = held
            return held

        if reserving:
            pending = self._start_slots(pending, slotted, records, snapshot, budget, now, report, gate, hold, away)
        sel = select(pending, snapshot, budget, in_flight, self.settings.rollout.max_in_flight, gate,
                     group=self.units.grouper(pending, records))
        report.waiting.update(sel.waiting)
        to_drain: dict[str, list[str]] = {}
        to_apply: dict[tuple[str, ChangeClass], list[NodeRecord]] = {}
        with self.store.batch():  # all persisted (one transaction) before the first action
            for rec in sel.start:
                report.started.append(rec.node)
                if rec.klass == ChangeClass.DRAIN:
                    rec = self._transition(rec, P.DRAINING, now, "draining", drained_by_us=True)
                    to_drain.setdefault(drain_reason(rec), []).append(rec.node)
                else:
                    rec = self._transition(rec, P.APPLYING, now, "applying live")
                    to_apply.setdefault((rec.target, rec.klass), []).append(rec)
        self._do_drains(to_drain, self.store.records(), now)
        self._do_applies(to_apply)

    def _start_slots(self, pending: list[NodeRecord], slotted: list[NodeRecord],
                     records: Mapping[str, NodeRecord], snapshot: ClusterSnapshot, budget: Budget, now: float,
                     report: TickReport, gate: Callable[[NodeRecord], str | None],
                     hold: Hold | None, away: Mapping[str, tuple[float, str]]) -> list[NodeRecord]:
        """drain_strategy reservation (slots.py): DRAIN nodes get maintenance slots, moved earlier
        when their jobs end early. Returns the other (HOT) records, for select()."""
        fresh = []
        for rec in pending:
            why = gate(rec) if rec.klass == ChangeClass.DRAIN else "HOT"
            if why is None:
                fresh.append(rec)
            elif rec.klass == ChangeClass.DRAIN:
                report.waiting[rec.node] = why
        fresh += [r for r in slotted if not r.action_done]  # reservation never placed (restart): again
        rs = self.settings.rollout
        sp = plan_slots(fresh, [r for r in slotted if r.action_done], records, snapshot, budget, self._slots,
                        rs.reservation_seconds, self._horizon(), hold, away)
        report.waiting.update(sp.waiting)
        to_drain: dict[str, list[str]] = {}
        with self.store.batch():  # every new slot persisted (one transaction) before any is placed
            for node, start in sp.reserve.items():
                rec = self.store.record(node)
                if rec.phase is P.PENDING:
                    report.started.append(node)
                    self._transition(rec, P.DRAINING, now, f"maintenance slot in {start - now:.0f}s",
                                     drained_by_us=True)
        with self.store.batch():  # a lost "placed" mark only means placing it again: idempotent
            for node, start in sp.reserve.items():
                rec = self.store.record(node)
                if not self._safe(lambda: self.wm.reserve(reservation_name(node), node, start, drain_reason(rec)),
                                  node, "reserve"):
                    continue
                self._slots[node] = start
                if node in sp.drain_now:
                    to_drain.setdefault(drain_reason(rec), []).append(node)
                elif not rec.action_done:
                    self._mark_done(rec, now)
        self._do_drains(to_drain, self.store.records(), now)
        return [r for r in pending if r.klass != ChangeClass.DRAIN]

    # --- rollout lifecycle --------------------------------------------------------------------
    def _lifecycle(self, now: float) -> None:
        rollout = self.store.active_rollout()
        if rollout is None:
            return
        records = list(self.store.records().values())
        # Nodes still finishing an older target come back to this rollout when done.
        stragglers = any(r.rollout_id != rollout.id and not r.phase.terminal for r in records)
        state, reason = next_state(rollout, records, now, self.settings.rollout, stragglers)
        if state is rollout.state:
            return
        rollout.state, rollout.updated_at = state, now
        if reason:
            rollout.reason = reason
        if state is RolloutState.SOAK:
            rollout.soak_until = now + self.settings.rollout.soak_seconds
            self.emit("canary.passed", f"canaries {fold(rollout.canaries)} passed; soaking "
                      f"{self.settings.rollout.soak_seconds:g}s", rollout_id=rollout.id, target=rollout.target)
        self.store.save_rollout(rollout)
        if state in (RolloutState.SOAK, RolloutState.WAVES):
            self._woken()  # the next stage's work may start: at the next tick, not the next poll
        if state is RolloutState.HALTED:
            for rec in records:
                if rec.rollout_id == rollout.id and (rec.phase in phases.PRE_APPLY or rec.phase is P.PENDING):
                    self._cancel(rec, f"rollout halted: {reason}", now)
            self.emit("rollout.halted", f"{rollout.target[:12]} halted: {reason}", rollout_id=rollout.id,
                      target=rollout.target, needs_human=True)
        elif state is RolloutState.DONE:
            self.emit("rollout.done", f"{rollout.target[:12]} rolled out" + (f" ({reason})" if reason else ""),
                      rollout_id=rollout.id, target=rollout.target)
        elif state is RolloutState.WAVES:
            self.emit("rollout.waves", f"{rollout.target[:12]}: waves started", rollout_id=rollout.id,
                      target=rollout.target)
            self._lifecycle(now)  # an empty rollout is done at once

    # --- admin actions ------------------------------------------------------------------------
    def retry(self, nodes: Iterable[str]) -> list[str]:
        """Failed nodes get a fresh set of attempts, at once."""
        return self._act_on_failed(nodes, P.RETRY_WAIT, "retry asked by an admin", attempts=0,
                                   next_attempt_at=0.0, canary=False)

    def skip(self, nodes: Iterable[str]) -> list[str]:
        """Failed nodes are given up on for this commit; they stay as they are."""
        return self._act_on_failed(nodes, P.SKIPPED, "skipped by an admin")

    def _act_on_failed(self, nodes: Iterable[str], phase: NodePhase, message: str, **changes) -> list[str]:
        done = []
        with self._lock:
            now = self.clock.now()
            for n in nodes:
                rec = self.store.record(n)
                if rec is not None and rec.phase is P.FAILED:
                    self._transition(rec, phase, now, message, **changes)
                    done.append(n)
        return done

    def idle(self) -> bool:
        """Nothing left to do: HEAD rolled out (or halted/error) and no node in flight."""
        r = self.store.latest_rollout()
        busy = any(not rec.phase.terminal for rec in self.store.records().values())
        return not busy and (r is None or not r.state.active) and not self._work

    def shutdown(self) -> None:
        """Wait for a tick or fetch still running (they hold the lock) and for background work."""
        with self._lock:
            self.executor.shutdown(wait=True)


class _Pick(Future):
    """One node's share of a batch future (apply runs once for the whole batch)."""

    def __init__(self, batch: Future, node: str):
        super().__init__()
        self._batch, self._node = batch, node

    def done(self) -> bool:
        return self._batch.done()

    def result(self, timeout=None):
        results = self._batch.result(timeout)
        if self._node not in results:
            raise RuntimeError(f"the applier returned no result for {self._node}")
        return results[self._node]
