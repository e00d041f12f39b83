"""The "ansible" Applier: runs the playbook of the target commit on a batch of nodes.

HOT: the playbook limited to the batch, and to the hot tag (apply.ansible.tags.hot) when
`hot_tags_only` is set, on nodes that keep running jobs. DRAIN: the whole playbook on the
drained nodes before the reboot; nodes with an image action (image_manifest detector) first get
their boot image switched through the image back-end (images.backend), then the playbook.
Per-host results come from the callback plugin's event stream: a failed or unreachable host
fails that node only, with the failing task's name in the reason.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import structlog

from ..model import ChangeClass, NodeAction, Revision
from ..ports import AdapterError, ApplyResult, ChangeSource
from .ansible_run import AnsibleError, AnsibleOptions, PlaybookRun, run_playbook, tag_names

log = structlog.get_logger("autoupdate.ansible")


class AnsibleApplier:
    def __init__(self, opts: AnsibleOptions, source: ChangeSource, *, hot_tag: str = "hotchange",
                 hot_tags_only: bool = True, image_applier: Callable[[], object] | None = None):
        self.opts = opts
        self.source = source
        self.hot_tag = hot_tag
        self.hot_tags_only = hot_tags_only
        self._image_applier = image_applier  # built on first use: only image changes need it

    def apply(self, nodes: Sequence[str], target: Revision, klass: ChangeClass,
              actions: Mapping[str, Sequence[NodeAction]]) -> Mapping[str, ApplyResult]:
        results: dict[str, ApplyResult] = {}
        imaged = [n for n in nodes if any(a.kind == "image" for a in actions.get(n, ()))]
        image_msgs: dict[str, str] = {}
        if imaged:
            for node, res in self._switch_images(imaged, target, klass, actions).items():
                if res.ok:
                    image_msgs[node] = res.message
                else:
                    results[node] = res
        todo = [n for n in nodes if n not in results]
        if not todo:
            return results
        try:
            workdir = self.source.checkout(target.sha)
            tags = (self.hot_tag,) if klass is ChangeClass.HOT and self.hot_tags_only else ()
            run = run_playbook(self.opts, workdir, todo, tags=tags)
        except (AnsibleError, AdapterError) as exc:
            results.update({n: ApplyResult(False, f"ansible: {exc}") for n in todo})
            return results
        log.info("playbook run", target=target.short, klass=klass.label, nodes=len(todo),
                 rc=run.returncode, seconds=round(run.seconds, 1))
        for node in todo:
            res = _result(run, node)
            if node in image_msgs and res.ok:
                res = ApplyResult(True, f"{image_msgs[node]}; {res.message}", changed=True)
            results[node] = res
        return results

    def _switch_images(self, nodes, target, klass, actions) -> Mapping[str, ApplyResult]:
        if self._image_applier is None:
            return {n: ApplyResult(False, "image change, but no image back-end is configured") for n in nodes}
        try:
            applier = self._image_applier()
            return applier.apply(nodes, target, klass, actions)
        except AdapterError as exc:
            return {n: ApplyResult(False, f"image switch: {exc}") for n in nodes}


def _result(run: PlaybookRun, node: str) -> ApplyResult:
    outcome = run.outcome(node)
    if outcome is not None and not outcome.ok:
        return ApplyResult(False, f"ansible: {outcome.failure()}")
    if not run.saw_stats:  # the run stopped early (a parse or vault error, a crash)
        return ApplyResult(False, f"ansible-playbook stopped (exit {run.returncode}): {run.brief}")
    if outcome is None:
        return ApplyResult(True, "ansible: no play applies to this node", changed=False)
    changed = len(outcome.changed_tasks)
    return ApplyResult(True, f"ansible: ok, {changed} task(s) changed", changed=changed > 0)


def from_settings(settings, deps) -> AnsibleApplier:
    a = settings.apply.ansible

    def image_applier():
        from .images.applier import from_settings as image_from_settings
        return image_from_settings(settings, deps)

    return AnsibleApplier(AnsibleOptions.from_settings(a), deps.source, hot_tag=tag_names(settings).hot,
                          hot_tags_only=a.hot_tags_only, image_applier=image_applier)
