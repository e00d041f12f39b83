"""Hostlists (`node[001-128]`) through ClusterShell's NodeSet; never parsed by hand."""
from __future__ import annotations

import re
from typing import Iterable

from ClusterShell.NodeSet import NodeSet, NodeSetException


class HostlistError(ValueError):
    pass


# One plain host name: nothing for NodeSet to expand (no range, list, group or operator). Most
# jobs run on one node, and a 50,000-job queue is read every tick: this skips NodeSet for them.
_PLAIN = re.compile(r"[A-Za-z0-9_.-]+")


def expand(text: str | Iterable[str] | None) -> list[str]:
    """`node[1-3],gpu01` -> ['node1', 'node2', 'node3', 'gpu01'] (sorted as NodeSet sorts)."""
    if text is None:
        return []
    if not isinstance(text, str):
        text = ",".join(text)
    text = text.strip()
    if not text:
        return []
    if _PLAIN.fullmatch(text):
        return [text]
    try:
        return list(NodeSet(text))
    except NodeSetException as exc:
        raise HostlistError(f"invalid hostlist {text!r}: {exc}") from None


def fold(nodes: Iterable[str]) -> str:
    """['node1', 'node2'] -> 'node[1-2]'."""
    nodes = list(nodes)
    if not nodes:
        return ""
    return str(NodeSet.fromlist(nodes))
