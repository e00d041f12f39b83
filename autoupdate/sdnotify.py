"""systemd's sd_notify protocol over $NOTIFY_SOCKET, without libsystemd (a datagram socket).

READY=1 once the service has read Slurm and the repository, WATCHDOG=1 from the control loop
(so a hung loop stops pinging and systemd restarts it), STOPPING=1, STATUS=<text>.
Outside systemd ($NOTIFY_SOCKET unset) every call is a no-op. Sending never raises: a lost
notification must not stop a rollout (systemd will say so if it matters).
"""
from __future__ import annotations

import os
import socket
import threading
import time
from typing import Mapping

import structlog

log = structlog.get_logger("autoupdate.sdnotify")


def _address(path: str) -> str | bytes:
    """'@name' is Linux's abstract namespace: a leading NUL byte."""
    if path.startswith("@"):
        return b"\0" + path[1:].encode()
    return path


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None):
        env = os.environ if environ is None else environ
        self.path = env.get("NOTIFY_SOCKET", "")
        self.watchdog_interval = self._interval(env)
        self._lock = threading.Lock()
        self._last_ping = 0.0
        self._warned = False

    @staticmethod
    def _interval(env: Mapping[str, str]) -> float | None:
        """Half of WatchdogSec (the usual advice), or None when there is no watchdog for us."""
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if not usec.isdigit() or int(usec) <= 0:
            return None
        if pid and pid != str(os.getpid()):
            return None  # meant for another process (e.g. our parent)
        return int(usec) / 1e6 / 2

    @property
    def enabled(self) -> bool:
        return bool(self.path)

    def send(self, *fields: str) -> bool:
        if not self.path:
            return False
        payload = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(_address(self.path))
                sock.sendall(payload)
            return True
        except OSError as exc:
            with self._lock:
                if not self._warned:  # once: a missing socket would otherwise log every tick
                    log.warning("sd_notify failed", socket=self.path, error=str(exc))
                    self._warned = True
            return False

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        return self.send("RELOADING=1")

    def watchdog(self, now: float | None = None) -> bool:
        """Ping the watchdog; cheap to call every tick (throttled to a few pings per interval)."""
        if self.watchdog_interval is None:
            return False
        now = time.monotonic() if now is None else now
        # Several pings per interval: one late tick must not miss a deadline.
        if now - self._last_ping < self.watchdog_interval / 4:
            return False
        self._last_ping = now
        return self.send("WATCHDOG=1")

    def watchdog_sleep_cap(self) -> float | None:
        """The longest the loop may sleep between pings (the daemon caps its waits with it)."""
        return None if self.watchdog_interval is None else self.watchdog_interval / 2
