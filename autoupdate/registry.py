"""Adapters chosen by name in the configuration (ReFrame-style backend registry).

Each entry is "module:factory" and is imported only when chosen, so the core never imports
Slurm, IPMI, git, Ansible or Slack libraries, and a missing optional dependency becomes one
clear error naming the backend. A factory is called as factory(settings, deps) where `deps`
(autoupdate.wiring.Deps) builds the shared pieces (clock, workload manager, power...) lazily.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

REGISTRY: dict[str, dict[str, str]] = {
    "workload_manager": {
        "slurm": "autoupdate.adapters.slurm:from_settings",
        "pyslurm": "autoupdate.adapters.pyslurm_wm:from_settings",
        "sim": "autoupdate.sim.cluster:from_settings",
    },
    "detector": {
        "path_rules": "autoupdate.detect.path_rules:from_settings",
        "tags": "autoupdate.detect.tags:from_settings",
        "ansible_check": "autoupdate.detect.ansible_check:from_settings",
        "ansible_syntax": "autoupdate.detect.ansible_check:syntax_from_settings",
        "image_manifest": "autoupdate.detect.image_manifest:from_settings",
        "external": "autoupdate.detect.external:from_settings",
    },
    "applier": {
        "none": "autoupdate.adapters.basic:no_applier",
        "sim": "autoupdate.sim.cluster:applier_from_settings",
        "command": "autoupdate.adapters.basic:command_applier",
        "ansible": "autoupdate.adapters.ansible_apply:from_settings",
        "image": "autoupdate.adapters.images.applier:from_settings",
    },
    "rebooter": {
        "slurm": "autoupdate.adapters.slurm:rebooter_from_settings",
        "sim": "autoupdate.sim.cluster:rebooter_from_settings",
        "none": "autoupdate.adapters.basic:no_rebooter",
        "image": "autoupdate.adapters.images.reboot:from_settings",
        "ipmi": "autoupdate.adapters.reboot_strategies:ipmi_rebooter",
        "soft-then-hard": "autoupdate.adapters.reboot_strategies:soft_then_hard_rebooter",
    },
    "notifier": {
        "log": "autoupdate.adapters.basic:log_notifier",
        "slack": "autoupdate.adapters.slack:from_settings",
    },
    "power": {
        "ipmi": "autoupdate.adapters.ipmi:from_settings",
        "none": "autoupdate.adapters.ipmi:no_power",
    },
    "image_backend": {
        "scyld": "autoupdate.adapters.images.scyld:from_settings",
        "csm_bss": "autoupdate.adapters.images.csm_bss:from_settings",
        "exostellar": "autoupdate.adapters.images.exostellar:from_settings",
        "warewulf": "autoupdate.adapters.images.warewulf:from_settings",
        "command": "autoupdate.adapters.images.command:from_settings",
    },
}


class BackendError(Exception):
    """A backend named in the configuration is unknown or cannot be loaded."""


def names(kind: str) -> list[str]:
    return sorted(REGISTRY[kind])


def resolve(kind: str, name: str) -> Callable[..., Any]:
    try:
        target = REGISTRY[kind][name]
    except KeyError:
        raise BackendError(f"unknown {kind.replace('_', ' ')} backend {name!r} "
                           f"(known: {', '.join(names(kind)) or 'none'})") from None
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(f"{kind.replace('_', ' ')} backend {name!r} cannot be loaded: {exc}") from None
    return getattr(module, attr)


def build(kind: str, name: str, settings: Any, deps: Any) -> Any:
    return resolve(kind, name)(settings, deps)
