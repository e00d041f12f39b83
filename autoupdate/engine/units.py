"""Hypervisor units: a hypervisor and the VM nodes it hosts are updated as one unit.

Configuration: nodes.hypervisors maps each hypervisor to its VM nodes (hostlists). The
hypervisor is not a Slurm node; it has no record of its own. Its work rides on its VMs:

1. expand(): a change that targets a hypervisor (any detector naming it) becomes work for each
   of its VMs: at least the hypervisor's class (DRAIN when the hypervisor reboots) plus a
   NodeAction("hypervisor", {"hypervisor": name}). A VM whose own change is also DRAIN is
   rebooted once, by the hypervisor's reboot (never twice).
2. group(): the planner starts a unit's VMs together or not at all; they take capacity budget
   together (a unit larger than a partition's budget starts only when nothing else in that
   partition is out).
3. held(): a VM waits, drained, until every VM of its unit is drained; then all apply together
   (one apply batch, so the hypervisor is updated once).
4. UnitApplier applies the change to the VMs and to their hypervisors; UnitRebooter reboots the
   hypervisor (through its BMC) once per unit, only after checking on a fresh snapshot that
   every VM it hosts is drained by autoupdate, known and empty (no job is ever killed), then
   waits for each VM to come back (autoupdate.rebooting.booted). Verification and resume are
   the engine's usual per-node steps.

Known limit: a unit VM retried on its own (its siblings already resumed) cannot get its
hypervisor rebooted (a sibling is in service): the attempt fails with that reason.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Mapping, Sequence

import structlog

from ..model import ChangeClass, ClusterSnapshot, NodeAction, NodePhase, NodeRecord, Verdict
from ..nodeset import expand, fold
from ..ports import AdapterError, RebootStatus
from ..rebooting import booted

log = structlog.get_logger("autoupdate.units")
ACTION = "hypervisor"


def hypervisor_of(record: NodeRecord) -> str | None:
    """The hypervisor whose change this VM record carries, if any."""
    for a in record.actions:
        if a.kind == ACTION:
            return a.detail.get("hypervisor")
    return None


class UnitRefused(AdapterError):
    """The hypervisor cannot be rebooted now (a VM is in service, unknown or protected)."""


class Units:
    """The hypervisor map and how a hypervisor is updated (hypervisor_applier, default: the
    engine's applier) and rebooted (reboot_hypervisor(name), e.g. through its BMC)."""

    def __init__(self, hypervisors: Mapping[str, Sequence[str]],
                 reboot_hypervisor: Callable[[str], object] | None = None,
                 hypervisor_applier=None):
        self.vms_of = {hv: tuple(vms) for hv, vms in hypervisors.items()}
        self.reboot_hypervisor = reboot_hypervisor
        self.hypervisor_applier = hypervisor_applier
        self.managed: Callable[[str], bool] = lambda node: True  # the engine binds its lists

    @classmethod
    def from_settings(cls, settings) -> "Units":
        """The map alone: a hypervisor can be applied to but not rebooted (tests, sim)."""
        return cls({hv: expand(vms) for hv, vms in settings.nodes.hypervisors.items()})

    @classmethod
    def from_deps(cls, deps) -> "Units":
        hypervisors = {hv: expand(vms) for hv, vms in deps.settings.nodes.hypervisors.items()}
        return cls(hypervisors, hypervisor_reboot(deps) if hypervisors else None)

    def remap(self, settings) -> bool:
        """Live reload of nodes.hypervisors; True if the map changed. Rebooting a hypervisor
        needs the BMC hook built at start: a map that was empty then needs a restart for that."""
        new = {hv: tuple(expand(vms)) for hv, vms in settings.nodes.hypervisors.items()}
        changed, self.vms_of = new != self.vms_of, new
        return changed

    def __bool__(self) -> bool:
        return bool(self.vms_of)

    @property
    def hypervisors(self) -> list[str]:
        return sorted(self.vms_of)

    # --- 1. classes --------------------------------------------------------------------------
    def expand(self, verdict: Verdict) -> Verdict:
        """Move each hypervisor's class onto its VMs, with the hypervisor action."""
        if not self or verdict.is_error:
            return verdict
        classes = dict(verdict.classes)
        actions = dict(verdict.actions)
        for hv, vms in self.vms_of.items():
            klass = classes.pop(hv, ChangeClass.GOOD)
            actions.pop(hv, None)
            if klass == ChangeClass.GOOD:
                continue
            for vm in vms:
                classes[vm] = max(classes.get(vm, ChangeClass.GOOD), klass)
                actions[vm] = actions.get(vm, ()) + (NodeAction(ACTION, {"hypervisor": hv}),)
        return replace(verdict, classes=classes, actions=actions)

    # --- 2. starting together ----------------------------------------------------------------
    def grouper(self, pending: Iterable[NodeRecord],
                records: Mapping[str, NodeRecord]):
        """For the planner: group(rec) -> (records that start with it, why they cannot yet)."""
        by_node = {r.node: r for r in pending}

        def group(rec: NodeRecord) -> tuple[list[NodeRecord], str]:
            hv = hypervisor_of(rec)
            if hv is None:
                return [rec], ""
            members, waiting = [], []
            for vm in self.vms_of.get(hv, ()):
                other = by_node.get(vm)
                if other is not None and hypervisor_of(other) == hv and other.target == rec.target:
                    members.append(other)
                elif not self.managed(vm):
                    return [rec], f"hypervisor {hv} also hosts {vm}, which autoupdate must not touch"
                else:
                    mine = records.get(vm)
                    waiting.append(f"{vm} ({mine.phase.value if mine else 'no work'})")
            if any(m.canary for m in members):  # a canary's siblings are canaries with it
                members = [m if m.canary else replace(m, canary=True) for m in members]
            return members, (f"hypervisor {hv}: waiting for {', '.join(waiting)}" if waiting else "")
        return group

    # --- 3. applying together ----------------------------------------------------------------
    def released(self, records: Mapping[str, NodeRecord]) -> set[str]:
        """Hypervisors whose unit VMs are all drained (or already past it): they may apply."""
        out = set()
        for hv, vms in self.vms_of.items():
            recs = [records.get(vm) for vm in vms]
            mine = [r for r in recs if r is not None and hypervisor_of(r) == hv and not r.phase.terminal]
            if mine and len(mine) == len(vms) and all(
                    r.phase not in (NodePhase.PENDING, NodePhase.DRAINING) for r in mine):
                out.add(hv)
        return out

    def held(self, rec: NodeRecord, released: set[str]) -> str | None:
        hv = hypervisor_of(rec)
        if hv is None or hv in released:
            return None
        return f"drained; waiting for the other VMs of hypervisor {hv}"

    # --- 4. applier / rebooter ---------------------------------------------------------------
    def attach(self, engine, applier, rebooter) -> None:
        """Become `engine.units`; wrap its applier and rebooter when there are hypervisors."""
        self.managed = lambda node: engine.lists.managed(node)
        engine.units = self
        engine.applier = self.applier(applier)
        engine.rebooter = self.rebooter(rebooter, engine.clock, engine.settings.reboot.timeout)

    def applier(self, inner):
        return UnitApplier(inner, self.hypervisor_applier or inner) if self else inner

    def rebooter(self, inner, clock, timeout: float):
        return UnitRebooter(inner, self, clock, timeout) if self else inner

    def unsafe(self, hv: str, snapshot: ClusterSnapshot) -> str | None:
        """Why rebooting this hypervisor now could hurt someone, or None."""
        for vm in self.vms_of.get(hv, ()):
            info = snapshot.nodes.get(vm)
            if not self.managed(vm):
                return f"{vm} must not be touched (blacklist/whitelist)"
            if info is None or not info.state_known:
                return f"{vm} state unknown"
            if not info.drained_by_autoupdate:
                return f"{vm} is not drained by autoupdate ({info.describe()})"
            if snapshot.busy(vm):
                return f"{vm} still runs jobs ({','.join(j.job_id for j in snapshot.jobs_on(vm))})"
        return None


class UnitApplier:
    """Applies to the VMs, and to the hypervisors their records carry (each once per batch)."""

    def __init__(self, inner, hypervisor_applier):
        self.inner = inner
        self.hypervisor_applier = hypervisor_applier

    def apply(self, nodes, target, klass, actions):
        results = dict(self.inner.apply(nodes, target, klass, actions))
        hv_of = {n: hv for n in nodes
                 for hv in [next((a.detail.get("hypervisor") for a in actions.get(n, ())
                                  if a.kind == ACTION), None)] if hv}
        hvs = sorted(set(hv_of.values()))
        if hvs:
            hv_results = self.hypervisor_applier.apply(hvs, target, klass, {})
            for node, hv in hv_of.items():
                res = hv_results.get(hv)
                if res is None or not res.ok:
                    why = res.message if res is not None else "no result"
                    results[node] = type(results[node])(False, f"hypervisor {hv}: {why}")
        return results


@dataclass
class _Round:
    issued_at: float
    waiting: set[str] = field(default_factory=set)  # VMs whose start() has not come yet
    error: str = ""  # the hypervisor reboot failed: the VMs that joined fail too


class UnitRebooter:
    """One hypervisor reboot per unit; the VMs come back with it."""

    def __init__(self, inner, units: Units, clock, timeout: float):
        self.inner = inner
        self.units = units
        self.clock = clock
        self.timeout = timeout
        self._rounds: dict[str, _Round] = {}
        self._lock = threading.Lock()

    def start(self, record: NodeRecord, snapshot: ClusterSnapshot) -> None:
        hv = hypervisor_of(record)
        if hv is None:
            return self.inner.start(record, snapshot)
        with self._lock:
            r = self._rounds.get(hv)
            before = record.boot_time_before
            if r is not None and not r.error and record.node in r.waiting \
                    and (before is None or before < r.issued_at):
                r.waiting.discard(record.node)  # its hypervisor is rebooting already: once is enough
                log.info("vm rides on its hypervisor's reboot", node=record.node, hypervisor=hv)
                return None
            if self.units.reboot_hypervisor is None:
                raise UnitRefused(f"hypervisor {hv}: no way to reboot it (set power.backend)")
            why = self.units.unsafe(hv, snapshot)
            if why:
                raise UnitRefused(f"hypervisor {hv} not rebooted: {why}")
            r = self._rounds[hv] = _Round(self.clock.now(),
                                          set(self.units.vms_of[hv]) - {record.node})
        log.info("rebooting hypervisor", hypervisor=hv, vms=fold(self.units.vms_of[hv]))
        try:
            self.units.reboot_hypervisor(hv)
        except Exception as exc:
            r.error = str(exc) or type(exc).__name__
            raise
        return None

    def poll(self, record: NodeRecord, snapshot: ClusterSnapshot, now: float) -> RebootStatus:
        hv = hypervisor_of(record)
        if hv is None:
            return self.inner.poll(record, snapshot, now)
        r = self._rounds.get(hv)
        if r is not None and r.error:
            return RebootStatus("failed", f"hypervisor {hv} reboot failed: {r.error}")
        why = booted(record, snapshot)
        if why is None:
            return RebootStatus("done", f"back after hypervisor {hv} rebooted")
        if now - record.since >= self.timeout:
            return RebootStatus("failed", f"not back {self.timeout:g}s after hypervisor {hv} "
                                          f"rebooted: {why}")
        return RebootStatus("in_progress", why)


def hypervisor_reboot(deps) -> Callable[[str], object] | None:
    """How a hypervisor is rebooted: its BMC (power section), with reboot.power_action."""
    power = deps.power
    if power is None:
        return None
    action = deps.settings.reboot.power_action
    reboot = getattr(power, "reboot", None)
    return (lambda hv: reboot(hv, action)) if reboot else (lambda hv: power.power(hv, action))
