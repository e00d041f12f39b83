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
MAX_NODES = 1_000_000
_SPACE = re.compile(r"\s")


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
    # NodeSet builds every name as it parses: n[1-100000000] (a typo, or a hostile argument)
    # would take minutes and gigabytes. Refused first, on an upper bound of its size.
    if _at_most(text) > MAX_NODES:
        raise HostlistError(f"hostlist {text!r} names more than {MAX_NODES:,} nodes")
    try:
        names = list(NodeSet(text))
    except NodeSetException as exc:
        raise HostlistError(f"invalid hostlist {text!r}: {exc}") from None
    # NodeSet drops spaces around commas but keeps one inside a name: "login[1-2] ctl1" is
    # 'login1 ctl1', 'login2 ctl1', which no node is called. As a blacklist it would protect
    # nothing, without a word. (Slurm's hostlists, read every tick, have no space: one search.)
    spaced = next((n for n in names if _SPACE.search(n)), None) if _SPACE.search(text) else None
    if spaced is not None:
        raise HostlistError(f"invalid hostlist {text!r}: {spaced!r} has a space in it "
                            "(separate node names with commas)")
    return names


_OPERAND = re.compile(r"[,!&^](?![^\[]*\])")  # NodeSet's operators, outside brackets
_BRACKETS = re.compile(r"\[([^\]]*)\]")
_RANGE = re.compile(r"(\d+)(?:-(\d+))?")


def _at_most(text: str) -> int:
    """An upper bound of how many names `text` stands for (every operand counted in full, a
    step like 1-9/2 as 1-9): enough to refuse a huge one without NodeSet expanding it."""
    total = 0
    for operand in _OPERAND.split(text):
        count = 1
        for inside in _BRACKETS.findall(operand):
            count *= sum(int(b or a) - int(a) + 1 for a, b in _RANGE.findall(inside)) or 1
        total += count
    return total


def fold(nodes: Iterable[str]) -> str:
    """['node1', 'node2'] -> 'node[1-2]'."""
    nodes = list(nodes)
    if not nodes:
        return ""
    return str(NodeSet.fromlist(nodes))
