"""Stand-in for an Exostellar management server's image API (port 5000 in real life).

  GET /v1/image/<name>  -> the image object
  PUT /v1/image         <- the full image object (Content-Type: application/json); it must name an
                           existing image and keep its shape: same keys, same value types.
"""
from __future__ import annotations

import copy
from urllib.parse import unquote

from .httpstub import JsonStub, Reject, Request, need


def image(name: str, snapshot: str) -> dict:
    return {"ImageName": name, "CloudImageId": "ami-0a1b2c3d4e5f", "User": "rocky",
            "Volumes": [{"DeviceName": "/dev/sda1", "SnapshotId": snapshot, "SizeGB": 30}],
            "Description": f"{name} compute image"}


def same_shape(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and set(a) == set(b) and all(same_shape(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same_shape(x, y) for x, y in zip(a, b))
    return type(a) is type(b)


class ExostellarStub(JsonStub):
    def __init__(self, images: dict[str, dict], token: str | None = None):
        super().__init__(token)
        self.images = copy.deepcopy(images)
        self.puts = 0

    def snapshot(self, name: str) -> str:
        return self.images[name]["Volumes"][0]["SnapshotId"]

    def handle(self, req: Request):
        if req.method == "GET" and req.path.startswith("/v1/image/"):
            name = unquote(req.path[len("/v1/image/"):])
            if name not in self.images:
                raise Reject(404, "Not Found", f"image {name} not found")
            return 200, self.images[name]
        if req.path == "/v1/image":
            need(req.method == "PUT", f"{req.method} not allowed on /v1/image", 405, "Method Not Allowed")
            body = req.body
            need(isinstance(body, dict) and isinstance(body.get("ImageName"), str),
                 "body must be an image object with ImageName")
            name = body["ImageName"]
            if name not in self.images:
                raise Reject(404, "Not Found", f"image {name} not found")
            need(same_shape(self.images[name], body), "image object shape changed")
            self.images[name] = body
            self.puts += 1
            return 200, {"message": f"image {name} updated"}
        raise Reject(404, "Not Found", f"no route {req.method} {req.path}")
