"""A small threaded JSON HTTP server on 127.0.0.1 for stand-ins of provisioning REST APIs.

Subclasses implement `handle(req) -> (status, body)`; the base checks the bearer token (when one
is set), records every request, and can be told to answer the next request(s) with a fault
(status + raw body: a 500, a body that is not JSON...). Request problems a real server would
refuse (wrong method, wrong content type, bad JSON, wrong shape) become 4xx answers, and are
also listed in `violations` so a test can assert the client never sent one.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any = None  # parsed JSON, or the raw text when it is not JSON
    raw: str = ""


class Reject(Exception):
    def __init__(self, status: int, title: str, detail: str = ""):
        self.status, self.title, self.detail = status, title, detail
        super().__init__(f"{status} {title}: {detail}")


@dataclass
class Fault:
    status: int
    body: str
    method: str = ""  # empty: any


class JsonStub:
    def __init__(self, token: str | None = None):
        self.token = token
        self.requests: list[Request] = []
        self.violations: list[str] = []
        self.faults: list[Fault] = []
        self.delay = 0.0  # seconds before answering (a slow server)
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _serve(self):
                stub._dispatch(self)

            do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def inject(self, status: int, body: str, method: str = "") -> None:
        """Answer the next matching request with this status and raw body, once."""
        self.faults.append(Fault(status, body, method))

    # -- subclasses ------------------------------------------------------------------------------
    def handle(self, req: Request) -> tuple[int, Any]:
        raise NotImplementedError

    # -- plumbing --------------------------------------------------------------------------------
    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length).decode() if length else ""
        time.sleep(self.delay)
        req = Request(h.command, parts.path, parse_qs(parts.query), {k.lower(): v for k, v in h.headers.items()},
                      raw=raw)
        with self.lock:
            self.requests.append(req)
            fault = next((f for f in self.faults if f.method in ("", req.method)), None)
            if fault is not None:
                self.faults.remove(fault)
                return self._send(h, fault.status, fault.body, raw_body=True)
            try:
                self._authorise(req)
                if raw:
                    if not req.headers.get("content-type", "").startswith("application/json"):
                        raise Reject(415, "Unsupported Media Type", "expected Content-Type: application/json")
                    try:
                        req.body = json.loads(raw)
                    except ValueError as exc:
                        raise Reject(400, "Bad Request", f"body is not JSON: {exc}") from None
                status, body = self.handle(req)
            except Reject as rej:
                if rej.status != 401:
                    self.violations.append(f"{req.method} {req.path}: {rej}")
                status, body = rej.status, {"type": "about:blank", "title": rej.title,
                                            "detail": rej.detail, "status": rej.status}
        self._send(h, status, body)

    def _authorise(self, req: Request) -> None:
        if self.token is None:
            return
        if req.headers.get("authorization") != f"Bearer {self.token}":
            raise Reject(401, "Unauthorized", "missing or invalid bearer token")

    @staticmethod
    def _send(h, status: int, body: Any, raw_body: bool = False) -> None:
        data = (body if raw_body else ("" if body is None else json.dumps(body))).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout): nothing to answer


def need(cond: bool, detail: str, status: int = 400, title: str = "Bad Request") -> None:
    if not cond:
        raise Reject(status, title, detail)

