"""The "ansible_check" detector (`ansible-playbook --check --diff`) and the "ansible_syntax" one.

ansible_check asks Ansible itself what would change on each managed node: the per-host task
results come from our callback plugin's event stream; a node with changed tasks gets the class
of those tasks' tags (a changed task without the hot or drain tag: DRAIN).

Hosts the check could not finish on are reported, never guessed GOOD: an unreachable host, or
one where a task failed in check mode, is listed in the notes and classed DRAIN by default
(`unreachable: drain`: the engine leaves a down node alone, and once it is back the drain path
re-runs the whole playbook before the node returns to service); `unreachable: error` makes the
whole commit ERROR instead.

Drift: the same check with old == new finds nodes that no longer match the current commit.
`check_drift()` is what the service calls every `interval` seconds (see README).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from ..adapters.ansible_run import (
    AnsibleError, AnsibleOptions, HostOutcome, PlaybookRun, options_for, run_playbook, syntax_check,
    tag_names,
)
from ..model import ChangeClass, DetectorVerdict, Verdict
from ..nodeset import fold
from ..ports import ChangeSource, DetectContext, SourceError
from .ansible_tree import TagNames


class AnsibleCheckDetector:
    name = "ansible_check"

    def __init__(self, opts: AnsibleOptions, tags: TagNames = TagNames(), *,
                 unreachable: str = "drain", interval: float = 0.0):
        self.opts = opts
        self.tags = tags
        self.unreachable = unreachable
        self.interval = interval  # drift checks: seconds between runs (0: none)

    def detect(self, ctx: DetectContext) -> DetectorVerdict:
        try:
            workdir = ctx.source.checkout(ctx.new)
        except SourceError as exc:
            return DetectorVerdict(self.name, error=str(exc))
        return self.check(workdir, ctx.managed)

    def check(self, workdir, managed: Sequence[str]) -> DetectorVerdict:
        try:
            run = run_playbook(self.opts, workdir, managed, check=True)
        except AnsibleError as exc:
            return DetectorVerdict(self.name, error=f"ansible-playbook --check: {exc}")
        return self.verdict(run, managed)

    def verdict(self, run: PlaybookRun, managed: Sequence[str]) -> DetectorVerdict:
        """Per-host check results -> classes (and what could not be checked, in the notes)."""
        if not run.saw_stats:  # stopped before the end (parse error, vault, crash): no answer
            return DetectorVerdict(self.name, error=f"ansible-playbook --check did not finish "
                                                    f"(exit {run.returncode}): {run.brief}")
        classes: dict[str, ChangeClass] = {}
        groups: dict[str, list[str]] = defaultdict(list)  # note text -> hosts, to fold hostlists
        lost: list[str] = []
        for host in managed:
            outcome = run.outcome(host)
            if outcome is None:
                continue  # not in the inventory, or no play applies to it: nothing to change
            klass, why = self._classify(outcome)
            if outcome.unreachable or outcome.failed:
                lost.append(host)
            if klass is not ChangeClass.GOOD:
                classes[host] = klass
                groups[f"{klass.label}: {why}"].append(host)
        notes = [f"{fold(hosts)}: {text}" for text, hosts in sorted(groups.items())]
        checked = sum(1 for h in managed if h in run.hosts)
        notes.insert(0, f"checked {checked} of {len(managed)} managed node(s) in {run.seconds:.1f}s")
        if lost and self.unreachable == "error":
            return DetectorVerdict(self.name, error=f"check incomplete on {fold(lost)}", notes=tuple(notes))
        return DetectorVerdict(self.name, classes=classes, notes=tuple(notes))

    def _classify(self, outcome: HostOutcome) -> tuple[ChangeClass, str]:
        if outcome.unreachable:
            return ChangeClass.DRAIN, f"unreachable, not checked ({outcome.failure()})"
        if outcome.failed:
            return ChangeClass.DRAIN, f"check could not finish: {outcome.failure()}"
        changed = outcome.changed_tasks
        if not changed:
            return ChangeClass.GOOD, ""
        klass = max(self.tags.classify(t.tags) for t in changed)
        labels = sorted({f"{t.label()} ({self.tags.explain(t.tags)})" for t in changed})
        return klass, "would change " + "; ".join(labels[:5]) + (f"; +{len(labels) - 5} more" if len(labels) > 5 else "")


def check_drift(detector: AnsibleCheckDetector, source: ChangeSource, sha: str,
                managed: Sequence[str]) -> Verdict:
    """Nodes that drifted from commit `sha` (already rolled out): what the daemon runs on schedule.

    A non-GOOD node in the answer needs the current commit re-applied; an error is reported
    like any detection error. run_detectors() would skip old == new, hence this entry point.
    """
    ctx = DetectContext(source=source, old=sha, new=sha, managed=tuple(managed), changed_paths=())
    return Verdict.combine(sha, sha, [detector.detect(ctx)])


def drift_detectors(detectors) -> list[AnsibleCheckDetector]:
    """The configured check detectors that want periodic drift checks (interval > 0)."""
    return [d for d in detectors if isinstance(d, AnsibleCheckDetector) and d.interval > 0]


class AnsibleSyntaxDetector:
    """`ansible-playbook --syntax-check` of the new commit: ERROR with Ansible's reason."""

    name = "ansible_syntax"

    def __init__(self, opts: AnsibleOptions):
        self.opts = opts

    def detect(self, ctx: DetectContext) -> DetectorVerdict:
        try:
            workdir = ctx.source.checkout(ctx.new)
        except SourceError as exc:
            return DetectorVerdict(self.name, error=str(exc))
        err = syntax_check(self.opts, workdir, timeout=self.opts.timeout)
        if err:
            return DetectorVerdict(self.name, error=f"syntax check failed: {err}")
        return DetectorVerdict(self.name, notes=(f"{self.opts.playbook}: syntax check passed",))


def from_settings(settings, deps) -> AnsibleCheckDetector:
    return AnsibleCheckDetector(options_for(deps.settings, settings), tag_names(deps.settings),
                                unreachable=settings.unreachable, interval=settings.interval)


def syntax_from_settings(settings, deps) -> AnsibleSyntaxDetector:
    return AnsibleSyntaxDetector(options_for(deps.settings, settings))
