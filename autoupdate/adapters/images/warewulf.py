"""Warewulf 4 through `wwctl`.

Set:  `wwctl node set --yes --image NAME NODE...` (Warewulf >= 4.6; `--container` before, when
      images were still called containers). --yes skips wwctl's confirmation prompt.
Read: `wwctl node list -a NODE...`: the merged view (node + its profiles), one row per field,
      NODE FIELD PROFILE VALUE; the image is the ImageName (4.6+) or ContainerName row.
Boot: `wwctl power cycle NODE...` (IPMI through Warewulf). Warewulf nodes are stateless and
      always boot from the network, so reprovision is a reload (no wipe option exists).
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

from ...ports import ImageError
from .base import check_mode, run

IMAGE_FIELDS = ("ImageName", "ContainerName", "Container")


class WarewulfBackend:
    name = "warewulf"

    def __init__(self, command: str = "wwctl", image_flag: str = "auto",
                 reboot_args: Sequence[str] = ("power", "cycle"), timeout: float = 120.0):
        self.command = command
        self.image_flag = image_flag
        self.reboot_args = list(reboot_args)
        self.timeout = timeout
        self._flag: str | None = None

    # -- which flag the installed wwctl wants ---------------------------------------------------
    def flag(self) -> str:
        if self._flag is None:
            if self.image_flag != "auto":
                self._flag = f"--{self.image_flag}"
            else:
                out = run([self.command, "version"], self.timeout, "wwctl version").stdout
                self._flag = "--image" if _version(out) >= (4, 6) else "--container"
        return self._flag

    def set_image(self, nodes: Sequence[str], image: str, mode: str = "reload") -> None:
        check_mode(mode)
        if nodes:
            run([self.command, "node", "set", "--yes", self.flag(), image, *nodes], self.timeout,
                "wwctl node set")

    def get_image(self, nodes: Sequence[str]) -> Mapping[str, str]:
        if not nodes:
            return {}
        out = run([self.command, "node", "list", "-a", *nodes], self.timeout, "wwctl node list").stdout
        found = parse_list_all(out)
        missing = [n for n in nodes if n not in found]
        if missing:
            raise ImageError(f"wwctl node list: no image listed for {', '.join(missing)}")
        return {n: found[n] for n in nodes}

    def reboot(self, nodes: Sequence[str], hard: bool) -> None:
        """Warewulf has one way: through the BMC (hard). `hard` is accepted for the interface."""
        run([self.command, *self.reboot_args, *nodes], self.timeout, "wwctl power")

    has_soft_reboot = False


def _version(text: str) -> tuple[int, int]:
    m = re.search(r"(\d+)\.(\d+)", text)
    if not m:
        raise ImageError(f"wwctl version: cannot tell the version from {text.strip()[:80]!r}")
    return int(m.group(1)), int(m.group(2))


def parse_list_all(text: str) -> dict[str, str]:
    """`wwctl node list -a` -> {node: image}. '--' (unset) becomes ''."""
    images: dict[str, str] = {}
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 3 and cols[1] in IMAGE_FIELDS:
            value = cols[3] if len(cols) >= 4 else ""
            images[cols[0]] = "" if value in ("--", "(none)") else value
    return images


def from_settings(settings, deps=None) -> WarewulfBackend:
    ww = settings.images.warewulf
    return WarewulfBackend(ww.command, ww.image_flag, ww.reboot, settings.images.timeout)
