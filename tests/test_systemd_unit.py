"""The systemd unit passes `systemd-analyze verify`; sd_notify speaks the datagram protocol."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from autoupdate.sdnotify import Notifier

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "autoupdate.service"


def _verify(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    # ExecStart must name an executable that exists here: point it at this interpreter.
    unit = tmp_path / "autoupdate.service"
    unit.write_text(unit_text.replace("/usr/local/bin/autoupdate", f"{sys.executable} -m autoupdate"))
    return subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)


needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                           reason="systemd-analyze missing (scripts/test.sh installs systemd)")


@needs_systemd_analyze
def test_unit_verifies_cleanly(tmp_path):
    result = _verify(UNIT.read_text(), tmp_path)
    # verify exits 0 on unknown keys too: any message at all is a defect.
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), result


@needs_systemd_analyze
@pytest.mark.parametrize("old,new", [
    ("WatchdogSec=120", "WatchdogSecs=120"),
    ("Type=notify", "Type=notifyy"),
])
def test_verify_catches_mistakes(tmp_path, old, new):
    # The check above is able to fail.
    text = UNIT.read_text()
    assert old in text
    result = _verify(text.replace(old, new), tmp_path)
    assert result.stderr.strip()


@pytest.mark.parametrize("needle", [
    "Type=notify", "WatchdogSec=", "Restart=on-failure", "ExecReload=/bin/kill -HUP $MAINPID",
    "StateDirectory=autoupdate", "LoadCredential=slack-token:", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
])
def test_unit_has(needle):
    assert needle in UNIT.read_text()


def _listener(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path if not path.startswith("@") else "\0" + path[1:])
    sock.settimeout(2)
    return sock


@pytest.mark.parametrize("abstract", [False, True])
def test_ready_status_watchdog_stopping(tmp_path, abstract):
    path = f"@autoupdate-test-{os.getpid()}" if abstract else str(tmp_path / "notify")
    sock = _listener(path)
    try:
        n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
        assert n.watchdog_interval == 1.0
        assert n.ready("read Slurm and the repository")
        assert sock.recv(4096) == b"READY=1\nSTATUS=read Slurm and the repository"
        assert n.watchdog(now=100.0)
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert not n.watchdog(now=100.1)  # throttled
        assert n.watchdog(now=100.3)
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert n.stopping()
        assert sock.recv(4096) == b"STOPPING=1"
    finally:
        sock.close()


@pytest.mark.parametrize("env,interval", [
    ({}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "abc"}, None),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # for another process
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
])
def test_watchdog_interval(env, interval):
    assert Notifier({"NOTIFY_SOCKET": "/nonexistent", **env}).watchdog_interval == interval


def test_without_systemd_everything_is_a_no_op():
    n = Notifier({})
    assert not n.enabled and not n.ready() and not n.watchdog() and not n.stopping()


def test_missing_socket_never_raises(tmp_path):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert n.ready() is False and n.status("x") is False
