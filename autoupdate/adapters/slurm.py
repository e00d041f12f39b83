"""WorkloadManager over Slurm's commands (scontrol, sinfo, squeue), through autoupdate.proc only.

A snapshot costs three commands whatever the cluster size (four with text output): nodes
(sinfo --json on 22.x, scontrol --json show nodes from 23.02, else scontrol -o show node), jobs
running and pending (squeue --json, else two squeue -o) and reservations (scontrol -o show
reservation). Actions take node lists and issue one command each, with the list folded into a
hostlist.

What Slurm does on `scontrol reboot ASAP nextstate=...` (measured on 22.05, see README "Slurm"):
    IDLE+DRAIN+REBOOT_REQUESTED -> DOWN+DRAIN+REBOOT_ISSUED -> (new BootTime)
      nextstate=DOWN:   DOWN, no DRAIN flag, reason "<ours> : reboot issued : reboot complete"
      nextstate=RESUME: IDLE, reason cleared (back in service before anyone verified it)
The "slurm" rebooter below turns the DOWN case back into IDLE+DRAIN with autoupdate's reason
(a drain of a DOWN node does exactly that), so verification runs on a drained node and the
engine's resume is the only way back into service.
"""
from __future__ import annotations

import os
import time
from dataclasses import replace
from datetime import datetime
from typing import Sequence

import structlog

from .. import proc
from ..model import REASON_PREFIX, ClusterSnapshot, NodeBase, NodeRecord
from ..nodeset import fold
from ..ports import IN_PROGRESS, RebootStatus, WorkloadManagerError
from ..rebooting import booted
from . import slurm_parse as sp

log = structlog.get_logger("autoupdate.slurm")

# Appended by Slurm to a reboot reason; stripped when autoupdate re-drains a rebooted node.
_REBOOT_SUFFIXES = (" : reboot issued", " : reboot complete", " : reboot timed out")


def strip_reboot_suffix(reason: str) -> str:
    cut = min((i for i in (reason.find(s) for s in _REBOOT_SUFFIXES) if i >= 0), default=len(reason))
    return reason[:cut]


class SlurmWorkloadManager:
    def __init__(self, *, bin_dir: str = "", timeout: float = 30.0, use_json: str = "auto",
                 reboot_nextstate: str = "DOWN", slurm_conf: str = "", reservation_user: str = "root",
                 reservation_seconds: float = 3600.0, clock=time):
        self.bin_dir = bin_dir
        self.timeout = timeout
        self.use_json = use_json
        self.reboot_nextstate = reboot_nextstate
        self.env = {"SLURM_CONF": slurm_conf} if slurm_conf else None
        self.reservation_user = reservation_user
        self.reservation_seconds = reservation_seconds
        self.clock = clock
        self._version: tuple[int, int] | None = None
        self._unknown_seen: dict[str, str] = {}

    # --- running commands ----------------------------------------------------------------------
    def _argv(self, program: str, *args: str) -> list[str]:
        return [os.path.join(self.bin_dir, program) if self.bin_dir else program, *args]

    def _run(self, program: str, *args: str, check: bool = True) -> proc.Result:
        argv = self._argv(program, *args)
        try:
            result = proc.run(argv, timeout=self.timeout, env=self.env)
        except proc.CommandError as exc:
            raise WorkloadManagerError(f"slurm: {exc}") from None
        if check and not result.ok:
            raise WorkloadManagerError(f"slurm: {' '.join(argv[:3])} failed: {result.brief()}")
        return result

    @property
    def version(self) -> tuple[int, int]:
        """The installed Slurm's (major, minor), read once (never per tick)."""
        if self._version is None:
            self._version = sp.slurm_version(self._run("scontrol", "--version").stdout)
        return self._version

    def json_mode(self) -> bool:
        if self.use_json == "no":
            return False
        has_json = self.version >= (22, 5)
        if self.use_json == "yes" and not has_json:
            raise WorkloadManagerError(
                f"slurm: cluster.slurm.use_json is yes but Slurm {'.'.join(map(str, self.version))} "
                "has no JSON output (needs 22.05 or newer)")
        return has_json

    # --- reading -------------------------------------------------------------------------------
    def snapshot(self) -> ClusterSnapshot:
        now = self.clock.time()
        try:
            if self.json_mode():
                if self.version >= (23, 2):
                    nodes = sp.nodes_from_json(self._run("scontrol", "--json", "show", "nodes").stdout,
                                               "scontrol --json show nodes")
                else:
                    nodes = sp.nodes_from_json(self._run("sinfo", "--json").stdout, "sinfo --json")
                jobs, pending = sp.queue_from_json(self._run("squeue", "--json").stdout, now)
            else:
                nodes = sp.nodes_from_text(self._run("scontrol", "-o", "show", "node").stdout)
                jobs = sp.jobs_from_text(self._run("squeue", "-h", "-t", sp.SQUEUE_STATES,
                                                   "-o", sp.SQUEUE_FORMAT).stdout, now)
                pending = sp.pending_from_text(self._run("squeue", "-h", "-t", "PENDING",
                                                         "-o", sp.PENDING_FORMAT).stdout)
            if self.json_mode() and self.version >= (23, 2):
                reservations = sp.reservations_from_json(
                    self._run("scontrol", "--json", "show", "reservations").stdout)
            else:  # 22.05 has no JSON form of reservations
                reservations = sp.reservations_from_text(
                    self._run("scontrol", "-o", "show", "reservation").stdout)
        except sp.SlurmParseError as exc:
            raise WorkloadManagerError(f"slurm: {exc}") from None
        self._note_unknown({n: i.unknown_state for n, i in nodes.items() if i.unknown_state})
        return ClusterSnapshot(taken_at=now, nodes=nodes, jobs=tuple(jobs), reservations=tuple(reservations),
                               pending=pending)

    def _note_unknown(self, unknown: dict[str, str]) -> None:
        """Nodes in states autoupdate does not know (never touched): said when that changes, not
        on every tick."""
        if unknown == self._unknown_seen:
            return
        self._unknown_seen = unknown
        if unknown:
            log.warning("unknown node states: not touched", nodes=fold(unknown), states=sorted(set(unknown.values())))
        else:
            log.info("every node's state is known again")

    # --- actions -------------------------------------------------------------------------------
    def drain(self, nodes: Sequence[str], reason: str) -> None:
        if nodes:
            self._run("scontrol", "update", f"nodename={fold(nodes)}", "state=drain", f"reason={reason}")

    def resume(self, nodes: Sequence[str]) -> None:
        """Resume nodes. Slurm rejects the whole list if one node is not drained or down (after
        applying the ones before it), so on that error resume only those that still need it."""
        if not nodes:
            return
        result = self._run("scontrol", "update", f"nodename={fold(nodes)}", "state=resume", check=False)
        if result.ok:
            return
        if "Invalid node state" not in result.stderr + result.stdout:
            raise WorkloadManagerError(f"slurm: resume {fold(nodes)} failed: {result.brief()}")
        snap = self.snapshot()
        left = [n for n in nodes if n in snap.nodes
                and (snap.nodes[n].drained or snap.nodes[n].base is NodeBase.DOWN)]
        if left:
            self._run("scontrol", "update", f"nodename={fold(left)}", "state=resume")

    def reboot(self, nodes: Sequence[str], reason: str) -> None:
        if nodes:
            self._run("scontrol", "reboot", "ASAP", f"nextstate={self.reboot_nextstate}",
                      f"reason={reason}", fold(nodes))

    def reserve(self, name: str, node: str, start_time: float, reason: str) -> None:
        """A maintenance reservation on one node from start_time (jobs until then still run).
        Idempotent: an existing reservation of that name is moved to the new start time."""
        start = datetime.fromtimestamp(max(start_time, self.clock.time() + 1)).strftime("%Y-%m-%dT%H:%M:%S")
        minutes = max(1, int(round(self.reservation_seconds / 60)))
        args = [f"reservationname={name}", f"starttime={start}", f"duration={minutes}",
                f"nodes={node}", f"users={self.reservation_user}", "flags=maint,ignore_jobs"]
        result = self._run("scontrol", "create", "reservation", *args, check=False)
        if result.ok:
            log.info("reserved", reservation=name, node=node, start=start, reason=reason)
            return
        if "Duplicate" not in result.stderr + result.stdout:
            raise WorkloadManagerError(f"slurm: reservation {name} on {node} failed: {result.brief()}")
        self._run("scontrol", "update", f"reservationname={name}", f"starttime={start}",
                  f"duration={minutes}", f"nodes={node}")

    def unreserve(self, name: str) -> None:
        result = self._run("scontrol", "delete", f"reservationname={name}", check=False)
        gone = ("Invalid reservation name", "Requested reservation is invalid")  # 22.05 says the latter
        if not result.ok and not any(g in result.stderr + result.stdout for g in gone):
            raise WorkloadManagerError(f"slurm: deleting reservation {name} failed: {result.brief()}")


class SlurmRebooter:
    """reboot.strategy slurm: `scontrol reboot ASAP nextstate=...`, for sites whose RebootProgram
    does the work. Done when autoupdate.rebooting.booted() says the node is back; failed after
    reboot.timeout (measured from the start of the REBOOTING phase, record.since)."""

    def __init__(self, wm: SlurmWorkloadManager, timeout: float, check_boot_time: bool = True):
        self.wm = wm
        self.timeout = timeout
        self.check_boot_time = check_boot_time  # verify.boot_time: a newer boot time is required

    @staticmethod
    def reason(record: NodeRecord) -> str:
        return f"{REASON_PREFIX} {record.target[:12]} reboot rollout {record.rollout_id}"

    def start(self, record: NodeRecord, snapshot: ClusterSnapshot) -> None:
        info = snapshot.nodes.get(record.node)
        if info is not None and info.rebooting:
            return  # already asked (a restart redoes this phase): asking again is not needed
        self.wm.reboot([record.node], self.reason(record))

    def poll(self, record: NodeRecord, snapshot: ClusterSnapshot, now: float) -> RebootStatus:
        why = booted(record if self.check_boot_time else replace(record, boot_time_before=None), snapshot)
        if why is None:
            info = snapshot.nodes[record.node]
            if info.base is NodeBase.DOWN:
                # nextstate=DOWN: hold it drained (IDLE+DRAIN) with our reason while it is verified.
                self.wm.drain([record.node], strip_reboot_suffix(info.reason) or self.reason(record))
            return RebootStatus("done", "node is back with a new boot time")
        waited = now - record.since
        if waited > self.timeout:
            info = snapshot.nodes.get(record.node)
            if info is not None and not info.drained:
                # Slurm's own ResumeTimeout leaves it DOWN without DRAIN: keep it held and marked.
                self.wm.drain([record.node], strip_reboot_suffix(info.reason)
                              if info.reason.startswith(REASON_PREFIX) else self.reason(record))
            return RebootStatus("failed", f"reboot timed out after {waited:.0f}s: {why}")
        return IN_PROGRESS


def from_settings(settings, deps) -> SlurmWorkloadManager:
    s = settings.cluster.slurm
    return SlurmWorkloadManager(
        bin_dir=s.bin_dir, timeout=s.command_timeout, use_json=s.use_json,
        reboot_nextstate=s.reboot_nextstate, slurm_conf=s.slurm_conf,
        reservation_user=s.reservation_user, reservation_seconds=settings.rollout.reservation_seconds,
    )


def rebooter_from_settings(settings, deps) -> SlurmRebooter:
    wm = deps.workload_manager
    if not isinstance(wm, SlurmWorkloadManager) and not hasattr(wm, "reboot"):
        raise WorkloadManagerError("reboot.strategy slurm needs cluster.backend slurm or pyslurm")
    return SlurmRebooter(wm, settings.reboot.timeout, check_boot_time=settings.verify.boot_time)
