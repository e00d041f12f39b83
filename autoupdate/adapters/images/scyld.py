"""Scyld ClusterWare through `scyld-nodectl`.

Set:  `scyld-nodectl -i NODE... set _boot_config=NAME` (the node attribute naming its boot
      configuration). Reprovision also sets `_boot_style=disked` (configurable): a disked node
      wipes its root partition, makes a file system and unpacks the image on the next boot.
Read: `scyld-nodectl --json -i NODE... ls -l`: each node's fields, its own attributes included.
Boot: `scyld-nodectl -i NODE... reboot` tries a soft reboot (ssh + /usr/sbin/reboot) and falls
      back to a hard one through the node's power_uri by itself; `reboot --soft` and
      `reboot --hard` force one or the other (used by the soft-then-hard strategy).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from ...ports import ImageError
from .base import check_mode, parse_json, run


class ScyldBackend:
    name = "scyld"

    def __init__(self, command: str = "scyld-nodectl", reprovision_boot_style: str = "disked",
                 reboot_style: str = "clusterware", timeout: float = 120.0):
        self.command = command
        self.reprovision_boot_style = reprovision_boot_style
        self.reboot_style = reboot_style
        self.timeout = timeout

    def _ids(self, nodes: Sequence[str]) -> list[str]:
        # One -i per node: the documented way to select several (no hostlist dialect to match).
        out: list[str] = []
        for n in nodes:
            out += ["-i", n]
        return out

    def set_image(self, nodes: Sequence[str], image: str, mode: str = "reload") -> None:
        check_mode(mode)
        if not nodes:
            return
        attrs = [f"_boot_config={image}"]
        if mode == "reprovision" and self.reprovision_boot_style:
            attrs.append(f"_boot_style={self.reprovision_boot_style}")
        run([self.command, *self._ids(nodes), "set", *attrs], self.timeout, "scyld-nodectl set")

    def get_image(self, nodes: Sequence[str]) -> Mapping[str, str]:
        if not nodes:
            return {}
        out = run([self.command, "--json", *self._ids(nodes), "ls", "-l"], self.timeout,
                  "scyld-nodectl ls").stdout
        listed = _by_name(parse_json(out, "scyld-nodectl ls"))
        result = {}
        for n in nodes:
            if n not in listed:
                raise ImageError(f"scyld-nodectl ls: node {n} not listed")
            attrs = listed[n].get("attributes") or {}
            result[n] = str(attrs.get("_boot_config", ""))
        return result

    @property
    def has_soft_reboot(self) -> bool:
        return self.reboot_style == "soft-then-hard"

    def reboot(self, nodes: Sequence[str], hard: bool) -> None:
        if self.reboot_style == "clusterware":
            args = ["reboot"]  # ClusterWare escalates soft -> hard (power_uri) itself
        else:
            args = ["reboot", "--hard" if hard else "--soft"]
        run([self.command, *self._ids(nodes), *args], self.timeout, "scyld-nodectl reboot")


def _by_name(data: Any) -> dict[str, dict]:
    """`ls` JSON: {name: {fields}} (a 'Nodes' wrapper tolerated) or a list of objects with 'name'."""
    if isinstance(data, dict) and set(data) == {"Nodes"}:
        data = data["Nodes"]
    if isinstance(data, dict):
        return {str(k): v for k, v in data.items() if isinstance(v, dict)}
    if isinstance(data, list):
        return {str(o["name"]): o for o in data if isinstance(o, dict) and "name" in o}
    raise ImageError(f"scyld-nodectl ls: unexpected JSON of type {type(data).__name__}")


def from_settings(settings, deps=None) -> ScyldBackend:
    sc = settings.images.scyld
    return ScyldBackend(sc.command, sc.reprovision_boot_style, sc.reboot, settings.images.timeout)
