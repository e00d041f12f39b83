"""Reboot strategies that use the node's BMC: `ipmi` and `soft-then-hard`.

- ipmi: (optionally set the next boot device, e.g. network to reprovision, then) power reset or
  cycle through the BMC; a node that is powered off is powered on instead. Done once the node
  is back (autoupdate.rebooting.booted); failed when it is not back within reboot.timeout.
- soft-then-hard: (optionally set the boot device, then) run the soft reboot command (argv,
  e.g. ssh {node} systemctl reboot). If the node has not gone down and come back within
  reboot.soft_timeout, a hard reset through the BMC; if it is still not back
  reboot.hard_timeout after that, the attempt fails (the engine retries or gives up).

A node rebooted behind Slurm's back comes back still drained: the engine verifies and resumes it.
start() runs in an engine worker thread (it may block for one BMC call); poll() runs in the
service loop and never blocks on a BMC: the escalation runs in this strategy's own small pool.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import structlog

from .. import proc
from ..model import ClusterSnapshot, NodeRecord
from ..ports import IN_PROGRESS, RebootStatus
from ..rebooting import booted
from .basic import expand_argv

log = structlog.get_logger("autoupdate.reboot")


@dataclass
class _Attempt:
    started: float  # when the (first) reboot was issued
    hard_at: float | None = None  # when the hard reset was asked for (soft-then-hard)
    hard: Future | None = None  # the hard reset in flight
    note: str = ""  # what the soft command said, for the failure message
    went_down: bool = False  # the node was seen down, not responding or rebooting since


class _BmcStrategy:
    """What both strategies share: the BMC reboot call and the per-node attempt table."""

    def __init__(self, power, clock, *, action: str = "reset", boot_device: str = "",
                 boot_persistent: bool = False):
        self.power = power
        self.clock = clock
        self.action = action
        self.boot_device = boot_device
        self.boot_persistent = boot_persistent
        self._attempts: dict[str, _Attempt] = {}
        self._lock = threading.Lock()

    def _hard_reboot(self, node: str) -> str:
        reboot = getattr(self.power, "reboot", None)
        if reboot is not None:  # one BMC session for boot device + reset (IpmiPowerController)
            return reboot(node, self.action, boot_device=self.boot_device,
                          persistent=self.boot_persistent)
        if self.boot_device:  # any other PowerController: the protocol's calls, one by one
            self.power.set_boot_device(node, self.boot_device, self.boot_persistent)
        self.power.power(node, self.action)
        return self.action

    def _begin(self, record: NodeRecord, **kw) -> _Attempt:
        attempt = _Attempt(started=self.clock.now(), **kw)
        with self._lock:
            self._attempts[record.node] = attempt
        return attempt

    def _attempt(self, record: NodeRecord) -> _Attempt:
        """The attempt in flight; after a service restart, one that started with the phase."""
        with self._lock:
            return self._attempts.setdefault(record.node, _Attempt(started=record.since))

    def _end(self, record: NodeRecord, status: RebootStatus) -> RebootStatus:
        with self._lock:
            self._attempts.pop(record.node, None)
        return status


class IpmiRebooter(_BmcStrategy):
    def __init__(self, power, clock, *, timeout: float, **kw):
        super().__init__(power, clock, **kw)
        self.timeout = timeout

    def start(self, record: NodeRecord, snapshot: ClusterSnapshot) -> None:
        done = self._hard_reboot(record.node)  # PowerError: the engine fails the attempt
        self._begin(record)
        log.info("bmc reboot issued", node=record.node, action=done,
                 boot_device=self.boot_device or None)

    def poll(self, record: NodeRecord, snapshot: ClusterSnapshot, now: float) -> RebootStatus:
        attempt = self._attempt(record)
        why = booted(record, snapshot)
        if why is None:
            return self._end(record, RebootStatus("done", f"back after BMC {self.action}"))
        if now - attempt.started >= self.timeout:
            return self._end(record, RebootStatus(
                "failed", f"not back {self.timeout:g}s after the BMC {self.action}: {why}"))
        return IN_PROGRESS


class SoftThenHardRebooter(_BmcStrategy):
    def __init__(self, power, clock, *, soft_command: Sequence[str], soft_command_timeout: float,
                 soft_timeout: float, hard_timeout: float, run=proc.run, max_workers: int = 4, **kw):
        super().__init__(power, clock, **kw)
        self.soft_command = list(soft_command)
        self.soft_command_timeout = soft_command_timeout
        self.soft_timeout = soft_timeout
        self.hard_timeout = hard_timeout
        self._run = run
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="hard-reset")

    def start(self, record: NodeRecord, snapshot: ClusterSnapshot) -> None:
        node = record.node
        if self.boot_device:  # the soft reboot should boot it too (reprovisioning)
            self.power.set_boot_device(node, self.boot_device, self.boot_persistent)
        argv = expand_argv(self.soft_command, node=node)
        # The command's outcome decides nothing: `ssh node reboot` often "fails" (255) because the
        # node drops the connection while going down. Whether the node came back decides.
        try:
            result = self._run(argv, timeout=self.soft_command_timeout)
            note = "" if result.ok else f"soft reboot command: {result.brief(120)}"
        except proc.CommandError as exc:
            note = f"soft reboot command: {exc}"
        self._begin(record, note=note)
        log.info("soft reboot issued", node=node, note=note or None)

    def poll(self, record: NodeRecord, snapshot: ClusterSnapshot, now: float) -> RebootStatus:
        attempt = self._attempt(record)
        if attempt.hard is not None and not attempt.hard.done():
            return IN_PROGRESS
        if attempt.hard is not None and attempt.hard.exception() is not None:
            error = attempt.hard.exception()
            return self._end(record, RebootStatus("failed", f"hard reset failed: {error}"))
        info = snapshot.nodes.get(record.node)
        if info is not None and (not info.responding or info.rebooting):
            attempt.went_down = True
        why = booted(record, snapshot)
        if why is None and attempt.hard_at is None and not attempt.went_down and not _clearly_rebooted(record, info):
            # Slurm's BootTime jitters by a second with no reboot: a soft reboot that did nothing
            # must not pass for one (it would skip the hard reset).
            why = "boot time moved by no more than Slurm's jitter and the node was never seen down"
        if why is None:
            how = "hard reset" if attempt.hard_at is not None else "soft reboot"
            return self._end(record, RebootStatus("done", f"back after the {how}"))
        if attempt.hard_at is None:
            if now - attempt.started < self.soft_timeout:
                return IN_PROGRESS
            log.warning("soft reboot did not bring the node back: hard reset", node=record.node,
                        waited=round(now - attempt.started, 1), why=why,
                        note=attempt.note or None)
            attempt.hard_at = now
            attempt.hard = self._pool.submit(self._hard_reboot, record.node)
            return RebootStatus("in_progress", f"escalated to a hard reset: {why}")
        if now - attempt.hard_at >= self.hard_timeout:
            return self._end(record, RebootStatus(
                "failed", f"not back {self.hard_timeout:g}s after the hard reset: {why}"))
        return IN_PROGRESS


BOOT_TIME_JITTER = 1.0  # seconds: BootTime comes from uptime and was seen to move by one


def _clearly_rebooted(record: NodeRecord, info) -> bool:
    before = record.boot_time_before
    return before is None or (info is not None and info.boot_time is not None
                              and info.boot_time > before + BOOT_TIME_JITTER)


def _power(deps, strategy: str):
    power = deps.power
    if power is None:
        from ..registry import BackendError
        raise BackendError(f"reboot strategy {strategy!r} needs a BMC: set power.backend to ipmi")
    return power


def _bmc_options(r) -> dict:
    return {"action": r.power_action, "boot_device": r.boot_device,
            "boot_persistent": r.boot_persistent}


def ipmi_rebooter(settings, deps) -> IpmiRebooter:
    r = settings.reboot
    return IpmiRebooter(_power(deps, "ipmi"), deps.clock, timeout=r.timeout, **_bmc_options(r))


def soft_then_hard_rebooter(settings, deps) -> SoftThenHardRebooter:
    r = settings.reboot
    return SoftThenHardRebooter(_power(deps, "soft-then-hard"), deps.clock,
                                soft_command=r.soft_command,
                                soft_command_timeout=r.soft_command_timeout,
                                soft_timeout=r.soft_timeout, hard_timeout=r.hard_timeout,
                                max_workers=getattr(settings.power, "concurrency", 4),
                                **_bmc_options(r))
