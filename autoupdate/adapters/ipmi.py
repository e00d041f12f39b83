"""PowerController over IPMI-over-LAN (pyghmi), one throw-away worker process per BMC call.

- Address per node: `power.addresses[node]` ("host" or "host:port"), else `power.address` with
  {node} replaced; `power.port` when the address names none.
- Credentials: `power.credentials_file` (YAML/JSON mapping {username, password}, or one line
  "user:password"), else the environment variables named by `power.username_env` /
  `power.password_env`. Never in the main YAML; never logged; redacted from every message.
- Every call has its own deadline (`power.timeout`): the worker (autoupdate.adapters.ipmi_worker,
  run through autoupdate.proc) is killed when it passes, so a hung BMC costs seconds, never
  the service loop. `many()` acts on many BMCs at once with a bounded pool.
"""
from __future__ import annotations

import json
import os
import stat
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, TypeVar

import structlog
import yaml

from .. import proc
from ..ports import PowerError
from ..textfile import read_text

log = structlog.get_logger("autoupdate.ipmi")

T = TypeVar("T")
POWER_ACTIONS = ("on", "off", "reset", "cycle", "soft")
# Config spelling -> pyghmi's boot device names (set_bootdev).
BOOT_DEVICES = {"network": "network", "pxe": "network", "disk": "hd", "hd": "hd",
                "default": "default", "cdrom": "optical", "bios": "setup"}
WORKER = (sys.executable, "-m", "autoupdate.adapters.ipmi_worker")


class CredentialsError(PowerError):
    """The BMC credentials cannot be found or read (a configuration problem)."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)  # never in a repr, a log line or an exception

    def redact(self, text: str) -> str:
        return text.replace(self.password, "***") if self.password else text


def _parse_credentials(text: str, where: str) -> Credentials:
    """One line "user:password" (the password may hold any character, ':' included), or a
    YAML/JSON mapping with `username` and `password`."""
    stripped = text.strip()
    if "\n" not in stripped and not stripped.startswith("{"):
        user, sep, password = stripped.partition(":")
        if not sep or not user:
            raise CredentialsError(f"{where}: expected 'user:password' or a mapping with "
                                   "'username' and 'password'")
        return Credentials(user, password)
    try:
        data = yaml.safe_load(stripped)  # JSON is YAML too
    except yaml.YAMLError:
        data = None
    if not isinstance(data, dict):
        raise CredentialsError(f"{where}: not a YAML/JSON mapping")
    user, password = data.get("username"), data.get("password")
    if not isinstance(user, str) or not user or not isinstance(password, (str, int)):
        raise CredentialsError(f"{where}: expected keys 'username' and 'password'")
    return Credentials(user, str(password))


def load_credentials(file: str, username_env: str, password_env: str,
                     environ: Mapping[str, str] | None = None) -> Credentials:
    environ = os.environ if environ is None else environ
    if file:
        path = Path(file)
        if not path.is_absolute():  # systemd LoadCredential=: a name under $CREDENTIALS_DIRECTORY
            base = environ.get("CREDENTIALS_DIRECTORY")
            if not base:
                raise CredentialsError(f"BMC credentials file {file!r} is relative but "
                                       "$CREDENTIALS_DIRECTORY is not set (use an absolute path, "
                                       "or systemd's LoadCredential=)")
            path = Path(base) / path
        try:
            mode = path.stat().st_mode
            text = read_text(path)
        except OSError as exc:
            raise CredentialsError(f"BMC credentials file {path}: cannot read: "
                                   f"{exc.strerror or exc}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("bmc credentials file readable by others; chmod 600 it", file=str(path))
        return _parse_credentials(text, f"BMC credentials file {path}")
    user, password = environ.get(username_env), environ.get(password_env)
    if not user or password is None:
        raise CredentialsError(f"BMC credentials: set power.credentials_file, or the environment "
                               f"variables {username_env} and {password_env}")
    return Credentials(user, password)


def _split_address(address: str, default_port: int) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if sep and port.isdigit() and host and not host.endswith(":"):  # not a bare IPv6 address
        return host.strip("[]"), int(port)
    return address.strip("[]"), default_port


class IpmiPowerController:
    """PowerController (autoupdate.ports) for nodes with an IPMI-over-LAN BMC."""

    def __init__(self, credentials: Credentials, address: str = "{node}-bmc",
                 addresses: Mapping[str, str] | None = None, port: int = 623,
                 timeout: float = 20.0, concurrency: int = 8,
                 run: Callable[..., proc.Result] = proc.run):
        self.credentials = credentials
        self.address_pattern = address
        self.addresses = dict(addresses or {})
        self.port = port
        self.timeout = timeout
        self.concurrency = max(1, concurrency)
        self._run = run
        # A limit for the whole process: reboot strategies call from the engine's worker threads.
        self._slots = threading.BoundedSemaphore(self.concurrency)

    # --- the PowerController protocol ------------------------------------------------------
    def power_state(self, node: str) -> str:
        return self._call(node, [{"op": "status"}])[0]

    def power(self, node: str, action: str) -> None:
        if action not in POWER_ACTIONS:
            raise PowerError(f"{node}: unknown power action {action!r} "
                             f"(expected {', '.join(POWER_ACTIONS)})")
        self._call(node, [{"op": "power", "action": action}])

    def set_boot_device(self, node: str, device: str, persistent: bool = False) -> None:
        self._call(node, [self._bootdev_op(node, device, persistent)])

    # --- more than the protocol ------------------------------------------------------------
    def reboot(self, node: str, action: str = "reset", boot_device: str = "",
               persistent: bool = False) -> str:
        """Reset (or cycle) the node, powering it on if it is off; optionally set the next boot
        device first. One BMC session. Returns what was done ("reset", "cycle" or "on")."""
        if action not in ("reset", "cycle"):
            raise PowerError(f"{node}: a reboot is 'reset' or 'cycle', not {action!r}")
        ops = [self._bootdev_op(node, boot_device, persistent)] if boot_device else []
        ops.append({"op": "boot", "action": action})
        return self._call(node, ops)[-1]

    def many(self, nodes: Iterable[str], fn: Callable[[str], T]) -> dict[str, T | PowerError]:
        """fn(node) for every node, at most `concurrency` at once; errors are returned, not
        raised, so one dead BMC does not hide the others' results."""
        nodes = list(nodes)

        def one(node: str):
            try:
                return fn(node)
            except PowerError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(nodes))),
                                thread_name_prefix="bmc") as pool:
            return dict(zip(nodes, pool.map(one, nodes)))

    def bmc_address(self, node: str) -> tuple[str, int]:
        address = self.addresses.get(node) or self.address_pattern.replace("{node}", node)
        return _split_address(address, self.port)

    # --- internals -------------------------------------------------------------------------
    @staticmethod
    def _bootdev_op(node: str, device: str, persistent: bool) -> dict:
        if device not in BOOT_DEVICES:
            raise PowerError(f"{node}: unknown boot device {device!r} "
                             f"(expected {', '.join(sorted(BOOT_DEVICES))})")
        return {"op": "bootdev", "device": BOOT_DEVICES[device], "persistent": persistent}

    def _call(self, node: str, ops: list[dict]) -> list:
        host, port = self.bmc_address(node)
        where = f"{node}: BMC {host}:{port}"
        request = json.dumps({"host": host, "port": port, "username": self.credentials.username,
                              "password": self.credentials.password, "ops": ops})
        what = ",".join(o.get("action", o["op"]) if o["op"] != "bootdev" else f"bootdev={o['device']}"
                        for o in ops)
        started = time.monotonic()
        try:
            with self._slots:
                result = self._run(list(WORKER), timeout=self.timeout, input=request)
        except proc.CommandError as exc:
            seconds = time.monotonic() - started
            log.warning("bmc call failed", node=node, ops=what, seconds=round(seconds, 2))
            if "timed out" in str(exc):
                raise PowerError(f"{where}: no answer within {self.timeout:g}s ({what})") from None
            raise PowerError(f"{where}: {self.credentials.redact(str(exc))}") from None
        seconds = time.monotonic() - started
        answer = self._answer(result)
        if not answer.get("ok"):
            message = self._explain(self.credentials.redact(str(answer.get("error", ""))),
                                    answer.get("stage", ""))
            log.warning("bmc call failed", node=node, ops=what, seconds=round(seconds, 2),
                        error=message)
            raise PowerError(f"{where}: {message}")
        log.info("bmc call", node=node, ops=what, seconds=round(seconds, 2))
        return answer["results"]

    def _answer(self, result: proc.Result) -> dict:
        lines = result.stdout.strip().splitlines()
        try:
            answer = json.loads(lines[-1]) if lines else None  # the worker's answer is last
            if isinstance(answer, dict):
                return answer
        except ValueError:
            pass
        tail = self.credentials.redact(result.brief(200))
        return {"ok": False, "stage": "worker", "error": f"IPMI worker failed: {tail}"}

    @staticmethod
    def _explain(error: str, stage: str) -> str:
        if error in ("", "None"):  # pyghmi's login timeout carries no text
            error = "no answer (timed out)"
        if stage == "login":
            hint = ""
            if "password" in error.lower() or "unauthorized name" in error.lower():
                hint = " (check the BMC credentials)"
            return f"login failed: {error}{hint}"
        return error


def from_settings(settings, deps) -> IpmiPowerController:
    p = settings.power
    credentials = load_credentials(p.credentials_file, p.username_env, p.password_env)
    return IpmiPowerController(credentials, address=p.address, addresses=p.addresses, port=p.port,
                               timeout=p.timeout, concurrency=p.concurrency)


def no_power(settings, deps) -> None:
    """power.backend: none. Strategies that need a BMC say so when they are built."""
    return None
