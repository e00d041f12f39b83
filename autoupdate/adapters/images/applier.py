"""The "image" Applier: switch drained nodes to their new image and read the setting back.

The engine hands over a batch of nodes (drained, empty) and each node's actions. Nodes are
grouped by (image, mode) so a back-end sees one call per image group; each group's setting is
then read back. A back-end error fails exactly the nodes it concerns, with the back-end's own
message; nodes without an image action pass untouched. For a reprovision, when a power controller
is configured, the next boot device of each node is then set to the network (one-time, through
the BMC), so whichever reboot strategy follows boots the installer, not the local disk.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Mapping, Sequence

import structlog

from ...model import ChangeClass, NodeAction, Revision
from ...ports import ApplyResult, ImageError, PowerError
from . import backend_for, image_action, mode_of

log = structlog.get_logger("autoupdate.images")


class ImageApplier:
    def __init__(self, backend, settings, power=None):
        self.backend = backend
        self.settings = settings
        self.power = power

    def apply(self, nodes: Sequence[str], target: Revision, klass: ChangeClass,
              actions: Mapping[str, Sequence[NodeAction]]) -> Mapping[str, ApplyResult]:
        results: dict[str, ApplyResult] = {}
        groups: dict[tuple[str, str], list[str]] = defaultdict(list)
        for node in nodes:
            action = image_action(actions.get(node, ()))
            if action is None or not action.detail.get("image"):
                results[node] = ApplyResult(True, "no image action", changed=False)
                continue
            groups[(action.detail["image"], mode_of(self.settings, action))].append(node)
        for (image, mode), members in sorted(groups.items()):
            results.update(self._switch(members, image, mode))
        return results

    def _switch(self, nodes: list[str], image: str, mode: str) -> dict[str, ApplyResult]:
        results: dict[str, ApplyResult] = {}
        try:
            before = _safe_get(self.backend, nodes)
            self.backend.set_image(nodes, image, mode)
        except ImageError as exc:
            failures = getattr(exc, "failures", None) or {n: str(exc) for n in nodes}
            results.update({n: ApplyResult(False, msg) for n, msg in failures.items() if n in nodes})
            nodes = [n for n in nodes if n not in results]
            if not nodes:
                return results
        try:
            now = self.backend.get_image(nodes)
        except ImageError as exc:
            return {**results, **{n: ApplyResult(False, f"set to {image}, but reading back failed: {exc}")
                                  for n in nodes}}
        for n in nodes:
            if now.get(n) != image:
                results[n] = ApplyResult(False, f"{self.backend.name} reports {now.get(n)!r} "
                                                f"after setting {image!r}")
                continue
            problem = self._network_boot(n) if mode == "reprovision" else None
            results[n] = ApplyResult(problem is None, problem or f"{self.backend.name}: boots {image} ({mode})",
                                     changed=before.get(n) != image)
        log.info("image switched", backend=self.backend.name, image=image, mode=mode,
                 ok=sum(r.ok for n, r in results.items() if n in nodes), nodes=len(nodes))
        return results


    def _network_boot(self, node: str) -> str | None:
        if self.power is None:
            return None
        try:
            self.power.set_boot_device(node, "network", persistent=False)
        except PowerError as exc:
            return f"reprovision: cannot set the next boot device to network: {exc}"
        return None


def _safe_get(backend, nodes: list[str]) -> dict[str, str]:
    """What the nodes were set to boot before (only for `changed`): unknown is not an error."""
    try:
        return dict(backend.get_image(nodes))
    except ImageError:
        return {}


def from_settings(settings, deps) -> ImageApplier:
    return ImageApplier(backend_for(settings, deps), settings, getattr(deps, "power", None))
