"""The "external" detector: a site's own program decides, answering in a small JSON format.

It is run (argv, no shell, with a timeout) as

    COMMAND... OLD NEW REPO

OLD is the base commit ("" on the first run), NEW the commit to roll out, REPO a git repository
holding both (`git --git-dir=REPO diff OLD NEW`). With {old} {new} {repo} {checkout} in the
command they are put there instead of appended. The environment also has AUTOUPDATE_OLD,
AUTOUPDATE_NEW, AUTOUPDATE_REPO, AUTOUPDATE_CHECKOUT (a directory with NEW's files) and
AUTOUPDATE_MANAGED (hostlist of the managed nodes). It answers on stdout:

    {"status": "ok", "reason": "why (optional)", "hot": "node[01-04]", "drain": "gpu[1-2]", "good": ""}

status "error" (with a reason) makes the commit ERROR; so do a non-zero exit, a timeout, output
that is not this JSON, or a bad hostlist. Node lists are hostlists (or JSON lists of names);
nodes not listed are GOOD as far as this detector knows; unmanaged nodes are ignored.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

from .. import proc
from ..model import ChangeClass, DetectorVerdict
from ..nodeset import HostlistError, expand, fold
from ..ports import DetectContext, SourceError

_CLASSES = (("good", ChangeClass.GOOD), ("hot", ChangeClass.HOT), ("drain", ChangeClass.DRAIN))
_KEYS = {"status", "reason", "hot", "drain", "good"}


class ExternalAnswerError(ValueError):
    pass


def parse_answer(stdout: str) -> tuple[str, str, dict[str, ChangeClass]]:
    """(status, reason, node -> class) from the program's JSON; raises ExternalAnswerError."""
    try:
        data = json.loads(stdout)
    except ValueError as exc:
        first = stdout.strip().splitlines()[0][:120] if stdout.strip() else "(no output)"
        raise ExternalAnswerError(f"answered invalid JSON ({exc.msg}): {first!r}") from None
    if not isinstance(data, dict):
        raise ExternalAnswerError("answered JSON that is not an object")
    status = data.get("status")
    if status not in ("ok", "error"):
        raise ExternalAnswerError(f"answered status {status!r} (expected \"ok\" or \"error\")")
    extra = set(data) - _KEYS
    if extra:
        raise ExternalAnswerError(f"answered unknown key(s): {', '.join(sorted(extra))}")
    classes: dict[str, ChangeClass] = {}
    for key, klass in _CLASSES:
        value = data.get(key) or ""
        try:
            nodes = expand(value if isinstance(value, (str, list)) else str(value))
        except HostlistError as exc:
            raise ExternalAnswerError(f"answered a bad '{key}' list: {exc}") from None
        for node in nodes:
            classes[node] = max(classes.get(node, ChangeClass.GOOD), klass)
    return status, str(data.get("reason") or ""), classes


class ExternalDetector:
    def __init__(self, command: Sequence[str], *, name: str = "external", timeout: float = 300.0):
        self.command = list(command)
        self.name = name
        self.timeout = timeout

    def _argv(self, values: dict[str, str]) -> list[str]:
        if any("{" + k + "}" in a for a in self.command for k in values):
            return [a.format_map(_Keep(values)) for a in self.command]
        return self.command + [values["old"], values["new"], values["repo"]]

    def detect(self, ctx: DetectContext) -> DetectorVerdict:
        prog = self.command[0]
        try:
            checkout = str(ctx.source.checkout(ctx.new))
        except SourceError as exc:
            return DetectorVerdict(self.name, error=str(exc))
        # The bare mirror holds every commit; a source without one offers the checkout instead.
        repo = str(getattr(ctx.source, "workdir", "") or checkout)
        values = {"old": ctx.old or "", "new": ctx.new, "repo": repo, "checkout": checkout}
        env = {"AUTOUPDATE_OLD": values["old"], "AUTOUPDATE_NEW": ctx.new, "AUTOUPDATE_REPO": repo,
               "AUTOUPDATE_CHECKOUT": checkout, "AUTOUPDATE_MANAGED": fold(ctx.managed)}
        try:
            res = proc.run(self._argv(values), timeout=self.timeout, env=env, cwd=checkout)
        except proc.CommandError as exc:
            return DetectorVerdict(self.name, error=f"{prog}: {_after_name(str(exc), prog)}")
        if not res.ok:
            return DetectorVerdict(self.name, error=f"{prog} exited {res.returncode}: {res.brief(200)}")
        try:
            status, reason, classes = parse_answer(res.stdout)
        except ExternalAnswerError as exc:
            return DetectorVerdict(self.name, error=f"{prog} {exc}")
        if status == "error":
            return DetectorVerdict(self.name, error=f"{prog}: {reason or 'status error (no reason given)'}")
        managed = set(ctx.managed)
        ignored = sorted(set(classes) - managed)
        notes = [reason] if reason else []
        for klass in (ChangeClass.DRAIN, ChangeClass.HOT):
            nodes = sorted(n for n, c in classes.items() if c == klass and n in managed)
            if nodes:
                notes.append(f"{klass.label}: {fold(nodes)}")
        if ignored:
            notes.append(f"not managed, ignored: {fold(ignored)}")
        return DetectorVerdict(self.name, classes={n: c for n, c in classes.items() if n in managed},
                               notes=tuple(notes))


class _Keep(dict):
    """format_map that leaves unknown {braces} in an argument as they are."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _after_name(message: str, prog: str) -> str:
    return message.removeprefix(os.path.basename(prog) + ": ")


def from_settings(settings, deps) -> ExternalDetector:
    return ExternalDetector(settings.command, name=settings.name, timeout=settings.timeout)
