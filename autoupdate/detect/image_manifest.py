"""The "image_manifest" detector: a YAML file in the repository names the boot image per node group.

    groups:
      compute:
        nodes: node[001-128]        # hostlist
        image: rocky9-compute-2024.05   # the image back-end's own name for it, passed as is
        version: "2024.05.1"        # optional: a change of version alone is a change too
        mode: reload                # optional: reload (set image + reboot) | reprovision

A node whose image (or version) differs from the base commit's manifest is DRAIN with the action
NodeAction("image", {"image", "version", "group", "mode"}); the engine hands it to the applier
("image" applier, or the "ansible" one which switches images before running the playbook),
which calls ports.ImageBackend.set_image(nodes, image, mode) once per (image, mode) group.
A manifest that does not parse, names a node twice or names nodes the cluster does not know
makes the commit ERROR.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import yaml

from ..model import ChangeClass, DetectorVerdict, NodeAction
from ..nodeset import HostlistError, expand, fold
from ..ports import AdapterError, DetectContext, SourceError
from ..registry import BackendError

MODES = ("reload", "reprovision")


@dataclass(frozen=True)
class ImageEntry:
    group: str
    image: str
    version: str
    mode: str

    @property
    def identity(self) -> tuple[str, str]:
        return (self.image, self.version)

    def action(self) -> NodeAction:
        return NodeAction("image", {"image": self.image, "version": self.version,
                                    "group": self.group, "mode": self.mode})

    def describe(self) -> str:
        return self.image + (f" ({self.version})" if self.version else "")


class ManifestError(ValueError):
    pass


def parse_manifest(raw: bytes, path: str, default_mode: str = "reload") -> dict[str, ImageEntry]:
    """node -> its entry. Raises ManifestError naming the file and the key."""
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: invalid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict) or not isinstance(data.get("groups"), dict):
        raise ManifestError(f"{path}: expected a mapping with 'groups: {{name: {{nodes, image}}}}'")
    nodes: dict[str, ImageEntry] = {}
    for group, spec in data["groups"].items():
        where = f"{path}: groups.{group}"
        if not isinstance(spec, dict) or not spec.get("nodes") or not spec.get("image"):
            raise ManifestError(f"{where}: needs 'nodes' (a hostlist) and 'image'")
        unknown = set(spec) - {"nodes", "image", "version", "mode"}
        if unknown:
            raise ManifestError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        mode = str(spec.get("mode") or default_mode)
        if mode not in MODES:
            raise ManifestError(f"{where}.mode: expected reload or reprovision, got {mode!r}")
        try:
            members = expand(str(spec["nodes"]))
        except HostlistError as exc:
            raise ManifestError(f"{where}.nodes: {exc}") from None
        entry = ImageEntry(str(group), str(spec["image"]), str(spec.get("version") or ""), mode)
        for node in members:
            if node in nodes:
                raise ManifestError(f"{where}: node {node} is already in group {nodes[node].group}")
            nodes[node] = entry
    return nodes


class ImageManifestDetector:
    name = "image_manifest"

    def __init__(self, path: str = "images.yml", default_mode: str = "reload",
                 known_nodes: Callable[[], Iterable[str]] | None = None):
        self.path = path
        self.default_mode = default_mode
        self.known_nodes = known_nodes  # every node the cluster has (managed or not); None: managed

    def _load(self, ctx: DetectContext, sha: str | None) -> dict[str, ImageEntry] | None:
        if sha is None:
            return None
        raw = ctx.source.read(sha, self.path)
        return None if raw is None else parse_manifest(raw, self.path, self.default_mode)

    def detect(self, ctx: DetectContext) -> DetectorVerdict:
        if ctx.old is not None and self.path not in ctx.changed_paths:
            return DetectorVerdict(self.name, notes=(f"{self.path} unchanged",))
        try:
            new = self._load(ctx, ctx.new)
            if new is None:
                if ctx.old is not None and ctx.source.read(ctx.old, self.path) is not None:
                    return DetectorVerdict(self.name, error=f"{self.path} was deleted: "
                                           "restore it, or remove the image_manifest detector")
                return DetectorVerdict(self.name, notes=(f"no {self.path} in this commit",))
            try:
                old = self._load(ctx, ctx.old) or {}
            except ManifestError as exc:  # a broken base is no reason to refuse a fixed head
                old = {}
                base_note = (f"base manifest unreadable ({exc}): every node counts as changed",)
            else:
                base_note = ()
        except ManifestError as exc:
            return DetectorVerdict(self.name, error=str(exc))
        except SourceError as exc:
            return DetectorVerdict(self.name, error=f"{self.path}: {exc}")

        managed = set(ctx.managed)
        known = managed | set(self.known_nodes() if self.known_nodes else ())
        unknown = sorted(set(new) - known)
        if unknown:
            return DetectorVerdict(self.name, error=f"{self.path} names node(s) the cluster does "
                                   f"not have: {fold(unknown)}")
        classes: dict[str, ChangeClass] = {}
        actions: dict[str, tuple[NodeAction, ...]] = {}
        by_change: dict[str, list[str]] = {}
        for node, entry in new.items():
            before = old.get(node)
            if before is not None and before.identity == entry.identity:
                continue
            if node not in managed:
                by_change.setdefault(f"not managed, left alone: {entry.describe()}", []).append(node)
                continue
            classes[node] = ChangeClass.DRAIN
            actions[node] = (entry.action(),)
            was = before.describe() if before else "(none)"
            by_change.setdefault(f"group {entry.group}: {was} -> {entry.describe()}, {entry.mode}",
                                 []).append(node)
        notes = base_note + tuple(f"{fold(nodes)}: {text}" for text, nodes in sorted(by_change.items()))
        return DetectorVerdict(self.name, classes=classes, notes=notes or ("no image changed",),
                               actions=actions)


def from_settings(settings, deps) -> ImageManifestDetector:
    blacklist = expand(deps.settings.nodes.blacklist)

    def known() -> set[str]:
        # The workload manager knows every node; the blacklist is known even when it is not managed.
        try:
            return set(deps.workload_manager.snapshot().nodes) | set(blacklist)
        except (AdapterError, BackendError):  # no cluster now: managed + blacklisted are known
            return set(blacklist)

    return ImageManifestDetector(settings.path, settings.mode, known)
