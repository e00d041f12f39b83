"""Exostellar: the management server's image API.

As Exostellar documents a fast image update: read the image JSON, put the new snapshot id in it,
write it back with PUT:
  GET {url}/v1/image/<image name>  -> the image object (JSON)
  PUT {url}/v1/image               <- the same object with the new snapshot id
The "image" autoupdate rolls out is that snapshot id ('snap-0123...'). The swap is one call for
every node using the Exostellar image; running jobs keep the old image and jobs started later
get the new one. How that maps to the engine (see README "Image back-ends"):
  * recycle: true  - the image action is DRAIN: the engine drains each node, waits until it is
    idle, the image applier makes the (idempotent) swap, the reboot strategy recycles the node,
    and verification checks it booted the new snapshot before resuming it.
  * recycle: false - nodes pick the new image up at their next natural recycle; the applier
    swaps and verifies the setting, and the booted-image check is not made for this back-end.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence
from urllib.parse import quote

from ...nodeset import expand
from ...ports import ImageError
from .base import JsonHttp, check_mode

SNAPSHOT = re.compile(r"^snap-[0-9a-f]+$")


class ExostellarBackend:
    name = "exostellar"
    has_soft_reboot = False

    def __init__(self, http: JsonHttp, image_name: str = "", image_names: Mapping[str, str] | None = None,
                 snapshot_key: str = "", recycle: bool = True):
        self.http = http
        self.default_name = image_name
        self.names: dict[str, str] = {}
        for hostlist, name in (image_names or {}).items():
            for node in expand(hostlist):
                self.names[node] = name
        self.snapshot_key = snapshot_key
        self.recycle = recycle

    def image_name(self, node: str) -> str:
        name = self.names.get(node, self.default_name)
        if not name:
            raise ImageError(f"node {node}: no Exostellar image name (set exostellar.image_name "
                             f"or exostellar.image_names)")
        return name

    def _read(self, name: str) -> dict:
        data = self.http.request("GET", f"/v1/image/{quote(name, safe='')}")
        if not isinstance(data, dict):
            raise ImageError(f"Exostellar GET /v1/image/{name}: expected a JSON object")
        return data

    def set_image(self, nodes: Sequence[str], image: str, mode: str = "reload") -> None:
        check_mode(mode)  # both modes: a new VM from the new snapshot (nothing to wipe)
        for name in sorted({self.image_name(n) for n in nodes}):
            data = self._read(name)
            path = self.snapshot_path(data, name)
            if _get(data, path) == image:
                continue  # already swapped (another batch did it): idempotent
            _set(data, path, image)
            self.http.request("PUT", "/v1/image", body=data, expect_json=False)

    def get_image(self, nodes: Sequence[str]) -> Mapping[str, str]:
        snapshots: dict[str, str] = {}
        for name in sorted({self.image_name(n) for n in nodes}):
            data = self._read(name)
            snapshots[name] = str(_get(data, self.snapshot_path(data, name)))
        return {n: snapshots[self.image_name(n)] for n in nodes}

    def snapshot_path(self, data: dict, name: str) -> tuple:
        """Where the snapshot id lives: the configured key, or the one value shaped 'snap-...'."""
        if self.snapshot_key:
            path = tuple(self.snapshot_key.split("."))
            try:
                _get(data, path)
            except (KeyError, TypeError, IndexError):
                raise ImageError(f"Exostellar image {name}: no field {self.snapshot_key!r}") from None
            return path
        found = [p for p, v in _walk(data) if isinstance(v, str) and SNAPSHOT.match(v)]
        if len(found) != 1:
            what = "no field holds" if not found else f"{len(found)} fields hold"
            raise ImageError(f"Exostellar image {name}: {what} a snapshot id; set exostellar.snapshot_key")
        return found[0]


def _walk(data: Any, path: tuple = ()):
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _walk(v, path + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _walk(v, path + (i,))
    else:
        yield path, data


def _get(data: Any, path: tuple) -> Any:
    for key in path:
        data = data[int(key) if isinstance(data, list) else key]
    return data


def _set(data: Any, path: tuple, value: Any) -> None:
    parent = _get(data, path[:-1])
    parent[int(path[-1]) if isinstance(parent, list) else path[-1]] = value


def from_settings(settings, deps=None) -> ExostellarBackend:
    ex = settings.images.exostellar
    http = JsonHttp("Exostellar", ex.url, token_file=ex.token_file, timeout=settings.images.timeout)
    return ExostellarBackend(http, ex.image_name, ex.image_names, ex.snapshot_key, ex.recycle)
