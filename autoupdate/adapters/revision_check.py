"""HealthCheck: the node runs the commit the rollout is installing (verify.revision).

Where the node tells what it runs (one of):
- command: argv ({node}, {target} replaced); the first word of stdout is the revision;
- feature: a Slurm feature `<prefix><sha>` (e.g. rev_3f2a9c1), read from the tick's snapshot;
- extra:   Slurm's Extra field, the whole text or one key of it ('rev=<sha>' words or JSON).
Abbreviated shas are accepted down to `min_length` characters. Feature and Extra come from the
snapshot the engine already read: no extra Slurm call per node.
"""
from __future__ import annotations

import json
import re
from typing import Sequence

from .. import proc
from ..model import ClusterSnapshot, NodeRecord
from .basic import expand_argv

_WORD = re.compile(r"[\s,;]+")


def revision_matches(running: str, target: str, min_length: int = 7) -> bool:
    running, target = running.strip().lower(), target.strip().lower()
    if len(running) < min_length or not re.fullmatch(r"[0-9a-f]+", running):
        return False
    return target.startswith(running) or running.startswith(target)


def from_extra(extra: str, key: str) -> str | None:
    text = extra.strip()
    if not text:
        return None
    if not key:
        return text
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return None
        value = data.get(key) if isinstance(data, dict) else None
        return str(value) if value is not None else None
    for word in _WORD.split(text):
        k, sep, v = word.partition("=")
        if sep and k == key:
            return v
    return None


class RevisionCheck:
    def __init__(self, source: str, *, command: Sequence[str] = (), feature_prefix: str = "rev_",
                 extra_key: str = "", min_length: int = 7, timeout: float = 30.0, run=proc.run):
        if source == "command" and not command:
            raise ValueError("verify.revision.command is empty")
        self.source = source
        self.command = list(command)
        self.feature_prefix = feature_prefix
        self.extra_key = extra_key
        self.min_length = min_length
        self.timeout = timeout
        self._run = run

    def check(self, record: NodeRecord, snapshot: ClusterSnapshot) -> str | None:
        running, where = self._running(record, snapshot)
        if running is None:
            return f"cannot tell which revision it runs: {where}"
        if not revision_matches(running, record.target, self.min_length):
            return f"runs {running[:40]!r} ({where}), expected {record.target[:12]}"
        return None

    def _running(self, record: NodeRecord, snapshot: ClusterSnapshot) -> tuple[str | None, str]:
        node = record.node
        if self.source == "command":
            argv = expand_argv(self.command, node=node, target=record.target)
            try:
                result = self._run(argv, timeout=self.timeout)
            except proc.CommandError as exc:
                return None, f"revision command: {exc}"
            if not result.ok:
                return None, f"revision command: {result.brief(120)}"
            words = result.stdout.split()
            return (words[0] if words else None), "revision command" + ("" if words else " printed nothing")
        info = snapshot.nodes.get(node)
        if info is None:
            return None, "node not listed by the workload manager"
        if self.source == "feature":
            found = [f[len(self.feature_prefix):] for f in info.features
                     if f.startswith(self.feature_prefix)]
            if len(found) != 1:
                what = "no" if not found else f"{len(found)}"
                return None, f"{what} feature {self.feature_prefix}<sha> on the node"
            return found[0], f"feature {self.feature_prefix}"
        value = from_extra(info.extra, self.extra_key)
        where = f"Extra {self.extra_key}" if self.extra_key else "Extra"
        return value, where if value is not None else f"{where} not published"


def from_settings(settings) -> RevisionCheck | None:
    """The check verify.revision asks for, or None when it is off (source: none)."""
    r = settings.verify.revision
    if r.source == "none":
        return None
    return RevisionCheck(r.source, command=r.command, feature_prefix=r.feature_prefix,
                         extra_key=r.extra_key, min_length=r.min_length, timeout=r.timeout)
