"""The engine's new work: pending nodes start inside the budget, or get maintenance slots
(drain_strategy reservation, slots.py) and keep out of the head job's way (head_job.py).

A part of `Engine` (engine.py), which holds the state these methods use."""
from __future__ import annotations

import json
from typing import Callable, Mapping

import structlog

from ..model import ChangeClass, ClusterSnapshot, NodePhase, NodeRecord, Rollout, RolloutState
from ..nodeset import fold
from ..safety import IN_FLIGHT, Budget, held_by_others
from .head_job import GiveWay, give_way
from .planner import select
from .report import TickReport
from .rollout import stage_allows, waves_start
from .slots import Hold, plan as plan_slots, reservation_name
from .transitions import drain_reason

log = structlog.get_logger("autoupdate.engine")
P = NodePhase


class Starting:
    """Which pending nodes start now, and when each slotted node's maintenance opens."""

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
