"""Ansible's own view of an inventory: groups, hosts and what host patterns match.

Run as `python -m autoupdate.adapters.ansible_inventory` through autoupdate.proc, so Ansible's
InventoryManager (with its global state) lives in a short child process, never in the service.
The JSON it prints: {"groups": {group: [host...]}, "hosts": {host: fingerprint},
"patterns": {pattern: [host...]}, "errors": {pattern: message}}.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .. import proc


@dataclass(frozen=True)
class InventoryView:
    groups: dict[str, tuple[str, ...]]
    hosts: dict[str, str]  # host -> fingerprint of its groups and inventory variables
    patterns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def all_hosts(self) -> tuple[str, ...]:
        return tuple(sorted(self.hosts))

    def group(self, name: str) -> tuple[str, ...]:
        return self.all_hosts if name == "all" else self.groups.get(name, ())

    def match(self, pattern: str) -> tuple[str, ...] | None:
        """Hosts a play's `hosts:` pattern selects; None if Ansible could not say (templated)."""
        return self.patterns.get(pattern)


class InventoryError(Exception):
    pass


def load_inventory(inventory: str, workdir: Path, patterns: Iterable[str] = (),
                   timeout: float = 120.0) -> InventoryView:
    argv = [sys.executable, "-m", "autoupdate.adapters.ansible_inventory", "--inventory", inventory]
    for p in sorted(set(patterns)):
        argv += ["--pattern", p]
    try:
        res = proc.run(argv, timeout=timeout, cwd=str(workdir), env={"ANSIBLE_NOCOLOR": "1"})
    except proc.CommandError as exc:
        raise InventoryError(f"inventory {inventory}: {exc}") from None
    if not res.ok:
        raise InventoryError(f"inventory {inventory}: {res.brief()}")
    try:
        data = json.loads(res.stdout)
    except ValueError:
        raise InventoryError(f"inventory {inventory}: unreadable answer from the inventory probe") from None
    return InventoryView(groups={g: tuple(h) for g, h in data["groups"].items()}, hosts=data["hosts"],
                         patterns={p: tuple(h) for p, h in data["patterns"].items()},
                         errors=data.get("errors", {}))


_WHERE_DEFINED = frozenset({"inventory_file", "inventory_dir"})  # differ per checkout


def _fingerprint(host) -> str:
    groups = sorted(g.get_name() for g in host.get_groups())
    own = {k: v for k, v in host.get_vars().items() if k not in _WHERE_DEFINED}
    text = json.dumps({"groups": groups, "vars": own}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inventory", required=True)
    ap.add_argument("--pattern", action="append", default=[])
    args = ap.parse_args(argv)

    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    path = Path(args.inventory)
    if not path.exists():
        print(f"{args.inventory}: no such inventory", file=sys.stderr)
        return 2
    loader = DataLoader()
    inv = InventoryManager(loader=loader, sources=[str(path)])
    groups = {name: sorted(h.get_name() for h in g.get_hosts()) for name, g in inv.groups.items()}
    hosts = {h.get_name(): _fingerprint(h) for h in inv.get_hosts("all")}
    patterns: dict[str, list[str]] = {}
    errors: dict[str, str] = {}
    for pattern in args.pattern:
        if "{{" in pattern or "{%" in pattern:
            errors[pattern] = "templated pattern"
            continue
        try:
            patterns[pattern] = sorted(h.get_name() for h in inv.get_hosts(pattern))
        except Exception as exc:  # Ansible's error for a bad pattern: report it, do not guess
            errors[pattern] = str(exc).splitlines()[0]
    json.dump({"groups": groups, "hosts": hosts, "patterns": patterns, "errors": errors}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
