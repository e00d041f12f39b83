"""Image back-ends: the provisioning systems that decide what a node boots.

Each back-end implements ports.ImageBackend (set_image / get_image) and, where the system can
reboot nodes itself, `reboot(nodes, hard)` with `has_soft_reboot`. They are chosen by name
(registry kind "image_backend", config `images.backend`). Around them:
  applier.py  the "image" Applier: switch drained nodes per image group, read back, verify
  check.py    the HealthCheck: back-end setting and booted image both match, before resume
  reboot.py   the "image" reboot strategy: through the back-end, soft first, then hard
"""
from __future__ import annotations

import weakref
from typing import Any

from ...model import NodeAction

_BACKENDS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def backend_for(settings, deps) -> Any:
    """The one back-end instance for this wiring (applier, check and rebooter share it)."""
    from ...ports import ImageError
    from ...registry import build

    existing = getattr(deps, "image_backend", None) if deps is not None else None
    if existing is not None:
        return existing
    if deps is not None and deps in _BACKENDS:
        return _BACKENDS[deps]
    name = settings.images.backend
    if not name:
        raise ImageError("images.backend is not set: name the provisioning system "
                         "(scyld, csm_bss, exostellar, warewulf or command)")
    backend = build("image_backend", name, settings, deps)
    if deps is not None:
        _BACKENDS[deps] = backend
    return backend


def image_action(actions) -> NodeAction | None:
    """The node's image action (the manifest detector gives at most one per node)."""
    for action in actions or ():
        if action.kind == "image":
            return action
    return None


def mode_of(settings, action: NodeAction) -> str:
    """Per image group in the configuration; else what the manifest says; else reload."""
    detail = action.detail
    return settings.images.mode_for(detail.get("group", ""), detail.get("mode", ""))
