"""WorkloadManager on the pyslurm API (the optional `pyslurm` extra, pyslurm 25.11 for Slurm 25.11).

Same contract as autoupdate.adapters.slurm: one snapshot = pyslurm.Nodes.load() + Jobs.load() +
Reservations.load() (three RPCs, no subprocess); drain/resume of a node list is one
Nodes(...).modify(). pyslurm has no reboot call, so `reboot` goes through `scontrol reboot` (the
command adapter). State strings are Slurm's own ("MIXED+DRAIN"): parsed by the same code as the
text output. pyslurm must be built against the exact libslurm release: where it cannot be
imported, choosing this backend raises one clear WorkloadManagerError.
"""
from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Iterable, Sequence

from ..model import ClusterSnapshot, Job, NodeInfo, Reservation
from ..nodeset import expand, fold
from ..ports import WorkloadManagerError
from . import slurm_parse as sp
from .slurm import SlurmWorkloadManager

try:  # pragma: no cover - depends on a pyslurm built for the installed Slurm
    import pyslurm  # type: ignore[import-not-found]
    _IMPORT_ERROR = ""
except Exception as exc:  # ImportError, or an ABI mismatch with libslurm
    pyslurm = None
    _IMPORT_ERROR = f"{type(exc).__name__}: {exc}"


def available() -> bool:
    return pyslurm is not None


def import_error() -> str:
    return _IMPORT_ERROR


def _values(collection: Any) -> Iterable[Any]:
    """pyslurm collections are lists (23.02) or (multi-cluster) dicts (23.11+)."""
    if hasattr(collection, "values"):
        for value in collection.values():
            if hasattr(value, "values") and not hasattr(value, "name"):  # {cluster: {name: obj}}
                yield from value.values()
            else:
                yield value
    else:
        yield from collection


def _text(value: Any) -> str:
    return "" if value in (None, "(null)") else str(value)


class PyslurmWorkloadManager:
    def __init__(self, *, reboot_nextstate: str = "DOWN", reservation_user: str = "root",
                 reservation_seconds: float = 3600.0, timeout: float = 30.0, slurm_conf: str = "",
                 bin_dir: str = "", clock=time):
        if pyslurm is None:
            raise WorkloadManagerError(
                f"cluster.backend pyslurm: pyslurm cannot be imported ({_IMPORT_ERROR}); install the "
                "`pyslurm` extra built for this Slurm release, or use cluster.backend slurm")
        self.clock = clock
        self.reservation_user = reservation_user
        self.reservation_seconds = reservation_seconds
        self.commands = SlurmWorkloadManager(bin_dir=bin_dir, timeout=timeout, slurm_conf=slurm_conf,
                                             reboot_nextstate=reboot_nextstate, clock=clock)

    def _call(self, what: str, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except Exception as exc:  # pyslurm.RPCError and friends: one clear line
            raise WorkloadManagerError(f"pyslurm: {what} failed: {exc}") from None

    # --- reading -------------------------------------------------------------------------------
    @staticmethod
    def node_info(node: Any) -> NodeInfo:
        state = _text(node.state)
        base, flags, unknown = sp.classify_state(sp.split_state_text(state), state)
        boot = getattr(node, "boot_time", None)
        return NodeInfo(
            name=node.name, base=base, flags=flags, partitions=tuple(node.partitions or ()),
            reason=_text(node.reason), reason_user=_text(getattr(node, "reason_user", "")),
            boot_time=float(boot) if boot else None,
            features=tuple(getattr(node, "active_features", None) or ()),
            extra=_text(getattr(node, "extra", "")), unknown_state=unknown,
        )

    @staticmethod
    def job(job: Any, now: float) -> Job | None:
        if _text(job.state).upper() not in sp.OCCUPYING or not job.nodes:
            return None
        start = float(job.start_time or now)
        limit = job.time_limit  # minutes; None = unlimited
        end = job.end_time
        end_time = float(end) if end else start + (limit * 60 if limit else sp.UNLIMITED_SECONDS)
        return Job(job_id=str(job.id), nodes=tuple(expand(job.nodes)), start_time=start, end_time=end_time,
                   name=_text(job.name), user=_text(getattr(job, "user_name", "")),
                   reservation=_text(getattr(job, "reservation", "")))

    def snapshot(self) -> ClusterSnapshot:
        now = self.clock.time()
        nodes = {n.name: self.node_info(n) for n in _values(self._call("Nodes.load", pyslurm.Nodes.load))}
        loaded = _values(self._call("Jobs.load", pyslurm.Jobs.load))
        jobs = [j for j in (self.job(x, now) for x in loaded) if j]
        pending = sp.waiting_for_nodes(
            (float(getattr(x, "priority", 0) or 0), str(x.id), getattr(x, "num_nodes", None),
             x.time_limit * 60 if x.time_limit else None, _text(getattr(x, "partition", "")),
             _text(getattr(x, "state_reason", ""))) for x in loaded if _text(x.state).upper() == "PENDING")
        reservations = []
        for r in _values(self._call("Reservations.load", pyslurm.Reservations.load)):
            reservations.append(Reservation(
                name=r.name, nodes=tuple(expand(r.nodes or "")), start_time=float(r.start_time or 0),
                end_time=float(r.end_time) if r.end_time else float("inf"),
                flags=frozenset(str(f).upper() for f in (r.flags or ())), users=tuple(r.users or ())))
        return ClusterSnapshot(taken_at=now, nodes=nodes, jobs=tuple(jobs), reservations=tuple(reservations),
                               pending=pending)

    # --- actions -------------------------------------------------------------------------------
    def _modify(self, nodes: Sequence[str], **changes: str) -> None:
        if nodes:
            target = pyslurm.Nodes(list(nodes))
            self._call(f"modify {fold(nodes)}", target.modify, pyslurm.Node(**changes))

    def drain(self, nodes: Sequence[str], reason: str) -> None:
        self._modify(nodes, state="DRAIN", reason=reason)

    def resume(self, nodes: Sequence[str]) -> None:
        if not nodes:
            return
        snap = self.snapshot()  # Slurm refuses RESUME of a node that is neither drained nor down
        left = [n for n in nodes if n in snap.nodes and (snap.nodes[n].drained or not snap.nodes[n].responding)]
        self._modify(left, state="RESUME")

    def reboot(self, nodes: Sequence[str], reason: str) -> None:
        self.commands.reboot(nodes, reason)  # pyslurm has no reboot call

    def reserve(self, name: str, node: str, start_time: float, reason: str) -> None:
        start = max(start_time, self.clock.time() + 1)
        for r in _values(self._call("Reservations.load", pyslurm.Reservations.load)):
            if r.name == name:
                self._call(f"reservation {name}", r.modify,
                           pyslurm.Reservation(start_time=datetime.fromtimestamp(start),
                                               duration=int(self.reservation_seconds // 60)))
                return
        resv = pyslurm.Reservation(name=name, start_time=datetime.fromtimestamp(start),
                                   duration=max(1, int(self.reservation_seconds // 60)), nodes=node,
                                   users=[self.reservation_user], flags=["MAINTENANCE", "IGNORE_JOBS"])
        self._call(f"reservation {name}", resv.create)

    def unreserve(self, name: str) -> None:
        for r in _values(self._call("Reservations.load", pyslurm.Reservations.load)):
            if r.name == name:
                self._call(f"delete reservation {name}", r.delete)


def from_settings(settings, deps) -> PyslurmWorkloadManager:
    s = settings.cluster.slurm
    return PyslurmWorkloadManager(
        reboot_nextstate=s.reboot_nextstate, reservation_user=s.reservation_user,
        reservation_seconds=settings.rollout.reservation_seconds, timeout=s.command_timeout,
        slurm_conf=s.slurm_conf, bin_dir=s.bin_dir)
