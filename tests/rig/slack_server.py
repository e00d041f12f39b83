"""A local HTTP server that answers like Slack's Web API and an incoming webhook.

Enough of Slack for the notifier: chat.postMessage (threads), chat.update, a webhook path.
Tests script failures: `fail_next(status, headers, body)` queues answers (429 + Retry-After,
500...), `down = "500"` answers every call with 500, `down = "hang"` holds every call until
`hang_seconds` pass (a Slack that does not answer at all).
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

TOKEN = "xoxb-test-token-not-a-secret-000"


@dataclass
class Call:
    method: str  # "chat.postMessage", "chat.update", "webhook"
    body: dict
    at: float
    auth: str = ""
    status: int = 200


@dataclass
class FakeSlack:
    host: str = "127.0.0.1"
    down: str = ""  # "" | "500" | "hang"
    hang_seconds: float = 5.0
    calls: list[Call] = field(default_factory=list)
    messages: dict[str, dict] = field(default_factory=dict)  # ts -> {"text", "thread_ts", "channel"}
    _scripted: list[tuple[int, dict, dict]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seq: int = 0

    def start(self) -> "FakeSlack":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                if "json" in (self.headers.get("Content-Type") or ""):
                    body = json.loads(raw or "{}")
                else:
                    body = {k: v[0] for k, v in parse_qs(raw).items()}
                status, headers, answer = fake._answer(self.path, body, self.headers.get("Authorization", ""))
                if status is None:
                    return  # hung: the client times out
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer((self.host, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/api/"

    @property
    def webhook_url(self) -> str:
        return f"http://{self.host}:{self.port}/services/T000/B000/XXXX"

    def fail_next(self, status: int, headers: dict | None = None, body: dict | None = None, times: int = 1) -> None:
        with self._lock:
            self._scripted += [(status, headers or {}, body or {"ok": False, "error": "internal_error"})] * times

    def _answer(self, path: str, body: dict, auth: str):
        method = "webhook" if path.startswith("/services/") else path.rsplit("/", 1)[-1]
        with self._lock:
            call = Call(method, body, time.monotonic(), auth)
            self.calls.append(call)
            if self.down == "hang":
                hang = True
            else:
                hang = False
                scripted = self._scripted.pop(0) if self._scripted else None
        if hang:
            time.sleep(self.hang_seconds)
            return None, {}, {}
        if self.down == "500":
            call.status = 500
            return 500, {}, {"ok": False, "error": "fatal_error"}
        if scripted:
            call.status = scripted[0]
            return scripted
        if method == "webhook":
            return 200, {}, "ok"
        if auth != f"Bearer {TOKEN}":
            return 200, {}, {"ok": False, "error": "invalid_auth"}
        with self._lock:
            if method == "chat.postMessage":
                self._seq += 1
                ts = f"1700000000.{self._seq:06d}"
                self.messages[ts] = {"text": body.get("text", ""), "thread_ts": body.get("thread_ts"),
                                     "channel": "C0CHANNEL", "edits": 0,
                                     "broadcast": bool(body.get("reply_broadcast"))}
                return 200, {}, {"ok": True, "channel": "C0CHANNEL", "ts": ts}
            if method == "chat.update":
                msg = self.messages.get(body.get("ts", ""))
                if msg is None or body.get("channel") != "C0CHANNEL":
                    return 200, {}, {"ok": False, "error": "message_not_found"}
                msg["text"] = body.get("text", "")
                msg["edits"] += 1
                return 200, {}, {"ok": True, "channel": "C0CHANNEL", "ts": body["ts"]}
        return 200, {}, {"ok": False, "error": "unknown_method"}

    # --- views for assertions -----------------------------------------------------------------
    def roots(self) -> list[dict]:
        return [dict(m, ts=ts) for ts, m in self.messages.items() if not m["thread_ts"]]

    def replies(self, thread_ts: str) -> list[dict]:
        return [dict(m, ts=ts) for ts, m in self.messages.items() if m["thread_ts"] == thread_ts]

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if predicate(self):
                    return True
            time.sleep(0.02)
        return False
