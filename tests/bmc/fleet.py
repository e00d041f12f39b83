"""Parent side of the test BMCs: start them in their own process, steer them, hear them.

    with BmcFleet(["node1", "node2"], users={"admin": "s3cret"}, on_power=hook) as fleet:
        fleet.addresses()          # {"node1": "127.0.0.1:40123", ...} for power.addresses
        fleet.silence("node2")     # node2's BMC stops answering (port stays bound)
        fleet.state("node1")       # {"power": "on", "bootdev": "network", "history": [...]}

`on_power(node, action)` runs in a listener thread of this process for every chassis control
a BMC obeyed (action: on | off | soft | reset | cycle): the Slurm rig hooks a node's slurmd
restart there, so a BMC power reset really reboots that node.
"""
from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any, Callable, Iterable

from .server import serve

PowerHook = Callable[[str, str], None]


class BmcFleet:
    def __init__(self, nodes: Iterable[str], users: dict[str, str] | None = None,
                 on_power: PowerHook | None = None, start_timeout: float = 15.0):
        self.nodes = list(nodes)
        self.users = dict(users or {"admin": "s3cret"})
        self.on_power = on_power
        self.start_timeout = start_timeout
        self.ports: dict[str, int] = {}
        self.events: list[tuple[float, str, str]] = []  # (monotonic time, node, action)
        self.hook_errors: list[str] = []
        self._lock = threading.Lock()
        self._proc = None
        self._control = None
        self._events_in = None
        self._listener: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "BmcFleet":
        ctx = multiprocessing.get_context("spawn")  # never fork a process holding pyghmi state
        self._control, child_control = ctx.Pipe()
        self._events_in, child_events = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=serve, args=(self.nodes, self.users, child_control,
                                                     child_events), daemon=True,
                                 name="test-bmcs")
        self._proc.start()
        child_control.close()
        child_events.close()
        try:
            if not self._control.poll(self.start_timeout):
                raise EOFError
            self.ports = self._control.recv()
        except (EOFError, OSError):
            self.stop()
            raise RuntimeError(f"test BMCs did not start within {self.start_timeout:g}s") from None
        self._listener = threading.Thread(target=self._listen, daemon=True, name="bmc-events")
        self._listener.start()
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            self._control.send(("stop",))
        except (OSError, EOFError, BrokenPipeError):
            pass
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        self._control.close()
        if self._listener is not None:
            self._listener.join(5)

    def __enter__(self) -> "BmcFleet":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    # --- what tests use ----------------------------------------------------------------------
    def addresses(self) -> dict[str, str]:
        return {n: f"127.0.0.1:{p}" for n, p in self.ports.items()}

    def state(self, node: str) -> dict[str, Any]:
        return self._ask(("state", node))

    def silence(self, node: str, silent: bool = True) -> None:
        self._ask(("silence", node, silent))

    def set(self, node: str, key: str, value: Any) -> None:
        """Change a BMC attribute, e.g. set(node, "powered", False) or ("fail_power", True)."""
        self._ask(("set", node, key, value))

    def actions(self, node: str) -> list[str]:
        with self._lock:
            return [a for _, n, a in self.events if n == node]

    def wait_for_action(self, node: str, action: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if action in self.actions(node):
                return True
            time.sleep(0.05)
        return False

    # --- internals ---------------------------------------------------------------------------
    def _ask(self, request: tuple) -> Any:
        with self._lock:
            self._control.send(request)
            if not self._control.poll(10):
                raise RuntimeError(f"test BMC process did not answer {request[0]!r}")
            reply = self._control.recv()
        if isinstance(reply, dict) and "error" in reply:
            raise RuntimeError(f"test BMC: {reply['error']}")
        return reply

    def _listen(self) -> None:
        while True:
            try:
                node, action = self._events_in.recv()
            except (EOFError, OSError):
                return
            with self._lock:
                self.events.append((time.monotonic(), node, action))
            if self.on_power is not None:
                try:
                    self.on_power(node, action)
                except Exception as exc:  # a hook failure must show up in the test, not vanish
                    self.hook_errors.append(f"{node} {action}: {type(exc).__name__}: {exc}")
