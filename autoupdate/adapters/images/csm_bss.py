"""HPE Cray CSM: the Boot Script Service (BSS) REST API, by xname.

Per node, as CSM documents it for pointing nodes at a customised image:
  GET  {url}/bootparameters?name=XNAME          -> [{"hosts": [XNAME], "kernel", "initrd", "params", ...}]
  PUT  {url}/bootparameters  {"hosts": [XNAME], "kernel": "<s3>/<id>/kernel",
                              "initrd": "<s3>/<id>/initrd", "params": "... metal.server=<s3>/<id>/rootfs ..."}
PUT replaces kernel, initrd and the whole params string, so every other kernel parameter is
sent back exactly as read (order kept). Reprovision also sets metal.no-wipe=0, the CSM switch that
lets the node wipe its disks and reinstall. The image id is the S3 path under the bucket
('8f41cc54-...' or 'k8s/0.3.49'). Reboots go through autoupdate's own power strategies.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from ...ports import ImageError
from .base import JsonHttp, PartialImageError, check_mode

_ROOTFS = re.compile(r"/boot-images/(\S+)/rootfs$")


class CsmBssBackend:
    name = "csm_bss"
    has_soft_reboot = False

    def __init__(self, http: JsonHttp, xname_of, s3_prefix: str = "s3://boot-images"):
        self.http = http
        self.xname_of = xname_of
        self.s3_prefix = s3_prefix.rstrip("/")

    def artifact(self, image: str, name: str) -> str:
        return f"{self.s3_prefix}/{image.strip('/')}/{name}"

    def _entry(self, xname: str) -> dict:
        data = self.http.request("GET", "/bootparameters", params={"name": xname})
        entries = [e for e in _entries(data) if xname in (e.get("hosts") or [])]
        if not entries:
            raise ImageError(f"BSS GET /bootparameters: no boot parameters for {xname}")
        return entries[0]

    def set_image(self, nodes: Sequence[str], image: str, mode: str = "reload") -> None:
        check_mode(mode)
        failures: dict[str, str] = {}
        for node in nodes:
            try:
                xname = self.xname_of(node)
                entry = self._entry(xname)
                body: dict[str, Any] = {
                    "hosts": [xname],
                    "kernel": self.artifact(image, "kernel"),
                    "initrd": self.artifact(image, "initrd"),
                    "params": rewrite_params(str(entry.get("params", "")),
                                             self.artifact(image, "rootfs"), mode),
                }
                if entry.get("cloud-init"):
                    body["cloud-init"] = entry["cloud-init"]  # PUT replaces: keep it as it was
                self.http.request("PUT", "/bootparameters", body=body, expect_json=False)
            except ImageError as exc:
                failures[node] = str(exc)
        if failures:
            raise PartialImageError(failures)

    def get_image(self, nodes: Sequence[str]) -> Mapping[str, str]:
        if not nodes:
            return {}
        xnames = {node: self.xname_of(node) for node in nodes}
        # BSS takes a comma-separated list: one request for the whole batch.
        data = self.http.request("GET", "/bootparameters", params={"name": ",".join(xnames.values())})
        by_host = {h: e for e in _entries(data) for h in (e.get("hosts") or [])}
        result = {}
        for node, xname in xnames.items():
            entry = by_host.get(xname)
            if entry is None:
                raise ImageError(f"BSS GET /bootparameters: no boot parameters for {xname} ({node})")
            result[node] = self.image_of(entry)
        return result

    def image_of(self, entry: Mapping[str, Any]) -> str:
        """The image id metal.server points at, if kernel and initrd agree; else a description."""
        server = param_value(str(entry.get("params", "")), "metal.server")
        m = _ROOTFS.search(server or "")
        if not m:
            return f"<metal.server={server or 'unset'}>"
        image = m.group(1)
        for part in ("kernel", "initrd"):
            if entry.get(part) != self.artifact(image, part):
                return f"<mixed: rootfs {image}, {part} {entry.get(part)}>"
        return image


def _entries(data: Any) -> list[dict]:
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise ImageError("BSS GET /bootparameters: expected a JSON list of boot parameter objects")
    return data


def param_value(params: str, key: str) -> str | None:
    for token in params.split():
        name, sep, value = token.partition("=")
        if name == key and sep:
            return value
    return None


def rewrite_params(params: str, rootfs: str, mode: str) -> str:
    """Point metal.server at `rootfs`; reprovision: metal.no-wipe=0. Everything else untouched."""
    wanted = {"metal.server": rootfs}
    if mode == "reprovision":
        wanted["metal.no-wipe"] = "0"
    out, seen = [], set()
    for token in params.split():
        name = token.partition("=")[0]
        if name in wanted:
            if name in seen:
                continue  # a duplicate would leave the old value in force
            token = f"{name}={wanted[name]}"
            seen.add(name)
        out.append(token)
    out += [f"{k}={v}" for k, v in wanted.items() if k not in seen]
    return " ".join(out)


def xname_mapper(xnames: Mapping[str, str], regex: str = "", template: str = "{node}"):
    """node -> xname: the explicit map first, else the regex's named groups in the template."""
    pattern = re.compile(regex) if regex else None

    def xname_of(node: str) -> str:
        if node in xnames:
            return xnames[node]
        fields: dict[str, Any] = {"node": node}
        if pattern is not None:
            m = pattern.fullmatch(node)
            if not m:
                raise ImageError(f"node {node}: no xname (not in csm_bss.xnames and does not match "
                                 f"xname_regex {pattern.pattern!r})")
            fields.update({k: int(v) if v.isdigit() else v for k, v in m.groupdict().items()})
        try:
            return template.format(**fields)
        except (KeyError, ValueError, IndexError) as exc:
            raise ImageError(f"node {node}: xname_template {template!r} cannot be filled: {exc}") from None

    return xname_of


def from_settings(settings, deps=None) -> CsmBssBackend:
    cs = settings.images.csm_bss
    http = JsonHttp("BSS", cs.url, token_file=cs.token_file, timeout=settings.images.timeout,
                    verify=cs.ca_bundle or True)
    return CsmBssBackend(http, xname_mapper(cs.xnames, cs.xname_regex, cs.xname_template), cs.s3_prefix)
