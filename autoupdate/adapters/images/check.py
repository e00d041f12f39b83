"""Before a node with an image action is resumed: is it set to boot, and did it boot, that image?

Both are checked: the back-end's setting (get_image) and the node's own report. The node
reports its image in one of these ways (config `images.booted.source`):
  extra     Slurm's Extra field: JSON {"image": NAME} or tokens 'image=NAME' (key configurable)
  features  a node feature 'image:NAME' or 'image=NAME'
  command   an argv run per node ({node} replaced), e.g. [ssh, "{node}", cat, /etc/image-id];
            its stdout is the image
  none      not checked (e.g. Exostellar without recycling: nodes change image on their own)
"""
from __future__ import annotations

from ...model import ClusterSnapshot, NodeInfo, NodeRecord
from ...ports import ImageError
from ..basic import expand_argv
from ..revision_check import from_extra  # same Extra conventions as the revision check
from . import backend_for, image_action
from .base import run


def from_features(info: NodeInfo, key: str) -> str | None:
    for feature in info.features:
        for sep in (":", "="):
            if feature.startswith(key + sep):
                return feature[len(key) + 1:]
    return None


class BootedImage:
    """Reads what a node says it booted."""

    def __init__(self, source: str = "extra", key: str = "image", command: list[str] | None = None,
                 timeout: float = 60.0):
        if source == "command" and not command:
            raise ImageError("images.booted.command is empty but images.booted.source is 'command'")
        self.source = source
        self.key = key
        self.command = list(command or [])
        self.timeout = timeout

    def read(self, node: str, snapshot: ClusterSnapshot) -> str | None:
        """The booted image, None when the node does not say (a failure for the check)."""
        if self.source == "command":
            argv = expand_argv(self.command, node=node)
            return run(argv, self.timeout, "booted-image command").stdout.strip() or None
        info = snapshot.nodes.get(node)
        if info is None:
            return None
        if self.source == "extra":
            return from_extra(info.extra, self.key)
        return from_features(info, self.key)


class ImageCheck:
    def __init__(self, backend, booted: BootedImage, check_booted: bool = True):
        self.backend = backend
        self.booted = booted
        self.check_booted = check_booted and booted.source != "none"

    def check(self, record: NodeRecord, snapshot: ClusterSnapshot) -> str | None:
        action = image_action(record.actions)
        if action is None:
            return None
        want = action.detail.get("image", "")
        node = record.node
        try:
            setting = self.backend.get_image([node]).get(node)
        except ImageError as exc:
            return f"cannot read what {self.backend.name} boots: {exc}"
        if setting != want:
            return f"{self.backend.name} is set to boot {setting!r}, not {want!r}"
        if not self.check_booted:
            return None
        try:
            booted = self.booted.read(node, snapshot)
        except ImageError as exc:
            return f"cannot read the booted image: {exc}"
        if booted is None:
            return f"node does not report its booted image (images.booted.source={self.booted.source})"
        if booted != want:
            return f"node booted {booted!r}, expected {want!r}"
        return None


def from_settings(settings, deps) -> ImageCheck:
    b = settings.images.booted
    backend = backend_for(settings, deps)
    booted = BootedImage(b.source, b.key, b.command, settings.images.timeout)
    # Exostellar without recycling: nodes move to the new image on their own schedule.
    recycling = getattr(backend, "recycle", True)
    return ImageCheck(backend, booted, check_booted=recycling)


def checks_from_settings(settings, deps) -> list:
    """The image check when an image back-end is configured (for the verification list)."""
    return [from_settings(settings, deps)] if settings.images.backend else []
