"""Change detectors and how their verdicts combine."""
from __future__ import annotations

from typing import Sequence

from ..model import DetectorVerdict, Verdict
from ..ports import ChangeDetector, ChangeSource, DetectContext, SourceError
from .path_rules import PathRules


def run_detectors(detectors: Sequence[ChangeDetector], source: ChangeSource, old: str | None,
                  new: str, managed: Sequence[str]) -> Verdict:
    """Ask every detector about old..new and combine. Any failure is ERROR, never a guess.

    With no detector configured, every change is DRAIN for every managed node.
    """
    if old == new:
        return Verdict(old=old, new=new, classes={})
    try:
        if old is not None and not source.exists(old):
            return Verdict(old=old, new=new, classes={},
                           error=f"base commit {old[:12]} is missing from the repository (force-push?)")
        paths = tuple(source.changed_paths(old, new))
    except SourceError as exc:
        return Verdict(old=old, new=new, classes={}, error=f"repository: {exc}")
    ctx = DetectContext(source=source, old=old, new=new, managed=tuple(managed), changed_paths=paths)
    parts: list[DetectorVerdict] = []
    for det in (detectors or [PathRules([])]):
        try:
            parts.append(det.detect(ctx))
        except Exception as exc:  # a detector that crashes must stop the commit, not the service
            parts.append(DetectorVerdict(detector=getattr(det, "name", type(det).__name__),
                                         error=f"detector failed: {type(exc).__name__}: {exc}"))
    return Verdict.combine(old, new, parts)
