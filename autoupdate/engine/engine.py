"""The engine: one tick reads the cluster once, advances every node record, starts new work.

It talks to the world only through the ports (workload manager, source, detectors, applier,
rebooter, checks, notifiers) and persists each node transition before acting on it.

`Engine` holds the state and runs the tick; its parts are one module each: adopting.py (a new
commit becomes a rollout and node work), starting.py (which pending nodes start, maintenance
slots), advancing.py (moving started nodes on, the disruptive actions), transitions.py (phase
changes and failures).
"""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable

import structlog

from ..config import Settings
from ..model import ChangeClass, ClusterSnapshot, Event, NodePhase, Revision, RolloutState, Verdict
from ..nodeset import fold
from ..ports import AdapterError
from ..safety import SafetyLists, read_pause
from ..store import Store
from . import phases
from .adopting import Adopting
from .advancing import Advancing
from .reboot_clock import RebootClock
from .report import TickReport
from .rollout import next_state
from .slots import our_slots, with_away
from .starting import Starting
from .transitions import Transitions
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




WAKE_DELAY = 1.0  # seconds from a wake-up (work done, drain issued) to the service's extra tick


class Engine(Adopting, Starting, Advancing, Transitions):
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

    def _note_pause(self, pause) -> None:
        if self._paused_seen is not None and pause.paused != self._paused_seen:
            if pause.paused:
                self.emit("paused", f"paused{': ' + pause.reason if pause.reason else ''}")
            else:
                self.emit("resumed", "resumed: new node work may start again")
        self._paused_seen = pause.paused

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


