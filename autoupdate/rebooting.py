"""When has a rebooted node come back? Shared by every reboot strategy (pure)."""
from __future__ import annotations

from .model import REASON_PREFIX, ClusterSnapshot, NodeBase, NodeInfo, NodeRecord


def down_after_reboot(info: NodeInfo) -> bool:
    """Slurm's `scontrol reboot nextstate=DOWN` leaves a node that came back DOWN (no DRAIN flag,
    slurmd answering) with the reboot's reason plus " : reboot complete": that is "back, held
    out of service", not a failure. A reboot that timed out also ends DOWN; its boot time tells."""
    return (info.base is NodeBase.DOWN and "NOT_RESPONDING" not in info.flags and not info.rebooting
            and info.reason.startswith(REASON_PREFIX) and "reboot timed out" not in info.reason)


def booted(record: NodeRecord, snapshot: ClusterSnapshot) -> str | None:
    """None once the node is back: known, responding, no reboot pending, a newer boot time.

    Otherwise a short text saying what is still missing (used as the failure reason when the
    reboot times out). A DOWN base state while REBOOT_ISSUED is normal, not a failure.
    """
    info = snapshot.nodes.get(record.node)
    if info is None:
        return "node not listed by the workload manager"
    if info.rebooting:
        return f"reboot still in progress ({info.describe()})"
    if not info.responding and not down_after_reboot(info):
        return f"node not responding ({info.describe()})"
    before = record.boot_time_before
    if before is not None and (info.boot_time is None or info.boot_time <= before):
        return "boot time unchanged: the node has not rebooted"
    return None
