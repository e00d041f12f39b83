"""Stand-in for CSM's Boot Script Service (/apis/bss/boot/v1), as its API spec describes it.

State: xname -> boot parameters {"hosts": [xname], "kernel", "initrd", "params", "cloud-init"}.
  GET   /bootparameters?name=a,b   the entries of those hosts (404 if one is unknown)
  PUT   /bootparameters            replace kernel, initrd and params of `hosts` (all three needed)
  PATCH /bootparameters            replace params only, keep kernel and initrd
Every request needs the bearer token; bodies must be JSON objects of the documented shape.
"""
from __future__ import annotations

import copy

from .httpstub import JsonStub, Reject, Request, need

BASE = "/apis/bss/boot/v1"
FIELDS = {"hosts", "macs", "nids", "kernel", "initrd", "params", "cloud-init"}


def entry(xname: str, image: str, extra: str = "console=ttyS0,115200 metal.no-wipe=1 ip=dhcp") -> dict:
    s3 = f"s3://boot-images/{image}"
    return {"hosts": [xname], "kernel": f"{s3}/kernel", "initrd": f"{s3}/initrd",
            "params": f"{extra} metal.server={s3}/rootfs root=live:LABEL=SQFSRAID",
            "cloud-init": {"meta-data": {"xname": xname}, "user-data": {}}}


class BssStub(JsonStub):
    def __init__(self, token: str, entries: dict[str, dict]):
        super().__init__(token)
        self.state = copy.deepcopy(entries)

    @property
    def base_url(self) -> str:
        return self.url + BASE

    def handle(self, req: Request):
        if req.path != BASE + "/bootparameters":
            raise Reject(404, "Not Found", f"no route {req.path}")
        if req.method == "GET":
            return self._get(req)
        if req.method in ("PUT", "PATCH"):
            return self._update(req)
        raise Reject(405, "Method Not Allowed", req.method)

    def _get(self, req: Request):
        names = [n for v in req.query.get("name", []) for n in v.split(",") if n]
        if not names:
            return 200, list(self.state.values())
        unknown = [n for n in names if n not in self.state]
        if unknown:
            raise Reject(404, "Not Found", f"cannot find host {','.join(unknown)}")
        return 200, [self.state[n] for n in names]

    def _update(self, req: Request):
        body = req.body
        need(isinstance(body, dict), "body must be a JSON object of boot parameters")
        need(set(body) <= FIELDS, f"unknown fields {sorted(set(body) - FIELDS)}")
        hosts = body.get("hosts")
        need(isinstance(hosts, list) and hosts and all(isinstance(h, str) for h in hosts),
             "hosts must be a non-empty list of xnames")
        need(isinstance(body.get("params"), str), "params must be a string")
        if req.method == "PUT":
            for key in ("kernel", "initrd"):
                need(isinstance(body.get(key), str) and body[key].startswith("s3://"),
                     f"{key} must be an s3:// URL")
        else:
            need("kernel" not in body and "initrd" not in body, "PATCH keeps kernel and initrd")
        for host in hosts:
            if host not in self.state:
                raise Reject(404, "Not Found", f"cannot find host {host}")
        for host in hosts:
            current = self.state[host]
            current["params"] = body["params"]
            if req.method == "PUT":
                current["kernel"], current["initrd"] = body["kernel"], body["initrd"]
                if "cloud-init" in body:
                    current["cloud-init"] = body["cloud-init"]
        return 200, None
