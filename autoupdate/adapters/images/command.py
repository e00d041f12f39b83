"""Any other provisioning system through argv templates (xCAT nodeset, Bright, site scripts).

No shell: each template is an argv list; placeholders are replaced inside each argument:
  {nodes}    the nodes, comma-separated      {hostlist}  the nodes folded (node[1-4])
  {node}     one node: the command runs once per node
  {image}    the image name                  {mode}      reload | reprovision
Examples: set: [nodeset, "{nodes}", "osimage={image}"]; get: [lsdef, "{node}", -i, provmethod, -c]
(with {node}, the whole stdout is that node's image); reboot: [rpower, "{nodes}", reset].
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

from ...nodeset import fold
from ...ports import ImageError
from ..basic import expand_argv
from .base import check_mode, parse_json, run

def per_node(template: Sequence[str]) -> bool:
    return any("{node}" in arg for arg in template)


class CommandBackend:
    name = "command"

    def __init__(self, set_argv: Sequence[str], get_argv: Sequence[str], *,
                 set_reprovision: Sequence[str] = (), get_format: str = "lines",
                 reboot_argv: Sequence[str] = (), hard_reboot_argv: Sequence[str] = (),
                 timeout: float = 120.0):
        if not set_argv or not get_argv:
            raise ImageError("images.command: both `set` and `get` argv templates are required")
        self.set_argv = list(set_argv)
        self.set_reprovision = list(set_reprovision) or self.set_argv
        self.get_argv = list(get_argv)
        self.get_format = get_format
        self.reboot_argv = list(reboot_argv)
        self.hard_reboot_argv = list(hard_reboot_argv)
        self.timeout = timeout

    def _runs(self, template: Sequence[str], nodes: Sequence[str], **values: str):
        """(nodes covered, argv) for each command to run: one per node or one for all."""
        common = {"nodes": ",".join(nodes), "hostlist": fold(nodes), "image": "", "mode": "", **values}
        if per_node(template):
            return [([n], expand_argv(template, **common, node=n)) for n in nodes]
        return [(list(nodes), expand_argv(template, **common, node=""))]

    def set_image(self, nodes: Sequence[str], image: str, mode: str = "reload") -> None:
        check_mode(mode)
        template = self.set_reprovision if mode == "reprovision" else self.set_argv
        for _, argv in self._runs(template, nodes, image=image, mode=mode) if nodes else []:
            run(argv, self.timeout, "image set command")

    def get_image(self, nodes: Sequence[str]) -> Mapping[str, str]:
        found: dict[str, str] = {}
        for covered, argv in self._runs(self.get_argv, nodes) if nodes else []:
            out = run(argv, self.timeout, "image get command").stdout
            if per_node(self.get_argv):
                found[covered[0]] = out.strip()
            else:
                found.update(self._parse(out))
        missing = [n for n in nodes if n not in found]
        if missing:
            raise ImageError(f"image get command: no image reported for {', '.join(missing)}")
        return {n: found[n] for n in nodes}

    def _parse(self, out: str) -> dict[str, str]:
        if self.get_format == "json":
            data = parse_json(out, "image get command")
            if not isinstance(data, dict):
                raise ImageError("image get command: expected a JSON object {node: image}")
            return {str(k): str(v) for k, v in data.items()}
        found = {}
        for line in out.splitlines():
            parts = re.split(r"[\s:=]+", line.strip(), maxsplit=1)
            if len(parts) == 2 and parts[1]:
                found[parts[0]] = parts[1].strip()
        return found

    @property
    def has_soft_reboot(self) -> bool:
        return bool(self.reboot_argv and self.hard_reboot_argv)

    def reboot(self, nodes: Sequence[str], hard: bool) -> None:
        template = self.hard_reboot_argv if hard and self.hard_reboot_argv else self.reboot_argv
        if not template:
            raise ImageError("images.command: no reboot argv template configured")
        for _, argv in self._runs(template, nodes):
            run(argv, self.timeout, "image reboot command")


def from_settings(settings, deps=None) -> CommandBackend:
    c = settings.images.command
    return CommandBackend(c.set, c.get, set_reprovision=c.set_reprovision, get_format=c.get_format,
                          reboot_argv=c.reboot, hard_reboot_argv=c.hard_reboot,
                          timeout=settings.images.timeout)

