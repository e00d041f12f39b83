"""The engine's in-flight work: each tick moves every started node record on (drain, apply,
reboot, verify, resume), and collects the background work it handed out.

A part of `Engine` (engine.py), which holds the state these methods use."""
from __future__ import annotations

from concurrent.futures import Future
from dataclasses import replace
from typing import Callable, Mapping

import structlog

from ..model import (
    REASON_PREFIX, ChangeClass, ClusterSnapshot, NodeBase, NodePhase, NodeRecord, Rollout, RolloutState,
)
from ..nodeset import fold
from ..ports import AdapterError, RebootStatus
from ..safety import held_by_others
from . import phases
from .report import TickReport
from .slots import Hold
from .transitions import drain_reason

log = structlog.get_logger("autoupdate.engine")
P = NodePhase


class Advancing:
    """Advancing started records; the disruptive actions, each on fresh state."""

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

    def _run_checks(self, rec: NodeRecord, snapshot: ClusterSnapshot) -> str | None:
        for check in self.checks:
            failure = check.check(rec, snapshot)
            if failure:
                return failure
        return None

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
