"""When has a rebooted node come back? Shared by every reboot strategy (pure)."""
from __future__ import annotations

from .model import ClusterSnapshot, NodeRecord


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
    if not info.responding:
        return f"node not responding ({info.describe()})"
    before = record.boot_time_before
    if before is not None and (info.boot_time is None or info.boot_time <= before):
        return "boot time unchanged: the node has not rebooted"
    return None
