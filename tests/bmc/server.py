"""Test BMCs: real IPMI-over-LAN servers (pyghmi's Bmc) on 127.0.0.1, one UDP port per node.

Everything here runs in the BMC process (started by tests.bmc.fleet.BmcFleet with the
multiprocessing "spawn" method): pyghmi keeps global state, so the BMCs never share a process
with the pyghmi *client* the tests exercise.

Wire protocol with the parent, two pipes:
- control (request -> reply): ("state", node) | ("silence", node, bool) | ("set", node, key, value)
  | ("stop",)
- events (BMC -> parent, one way): (node, action) for every chassis control that was obeyed,
  so the parent can, e.g., restart that node's slurmd.

Two pyghmi server quirks are worked around (see ../shared/TESTRIG.md):
- the server accepts the client's first offer (cipher suite 17, SHA-256) but only implements
  suite 3 and then breaks at login: here an open-session request that does not propose
  HMAC-SHA1 is refused, and the client falls back to suite 3;
- an unknown user name is silently ignored by the server (the client then waits for its
  timeout); real BMCs answer "Unauthorized name", and so does this one.
"""
from __future__ import annotations

import os
import threading
from typing import Any

import pyghmi.ipmi.bmc as bmc
import pyghmi.ipmi.private.constants as constants
import pyghmi.ipmi.private.serversession as serversession
import pyghmi.ipmi.private.session as ipmisession

RMCP_NO_CIPHER_SUITE_MATCH = 0x11
RMCP_UNAUTHORIZED_NAME = 0x0D
IPMI_CANNOT_EXECUTE_NOW = 0xD5  # "command not supported in present state"
HMAC_SHA1 = 1


class _Sha1OnlySession(serversession.ServerSession):
    """A server session that refuses any cipher suite but 3 (HMAC-SHA1 authentication)."""

    def create_open_session_response(self, request):
        # request: tag, privilege, 2 reserved, client session id (4), then the proposed
        # authentication payload whose algorithm is byte 12.
        if len(request) > 12 and request[12] != HMAC_SHA1:
            return bytearray([request[0], RMCP_NO_CIPHER_SUITE_MATCH, 0, 0]) + request[4:8]
        return super().create_open_session_response(request)

    def _got_rakp1(self, data):
        name = bytes(data[28:]).decode("utf-8", "replace")
        if data[27] and self.authdata.get(name) is None:
            # Real BMCs say so (the pyghmi server stays silent and the client waits).
            self.clientsessionid = self.clientsessionid or bytearray(4)
            reply = bytearray([data[0], RMCP_UNAUTHORIZED_NAME, 0, 0]) + self.clientsessionid
            self.send_payload(reply, constants.payload_types["rakp2"], retry=False)
            return
        super()._got_rakp1(data)


class _Gate:
    """Wraps a BMC's UDP socket; while `silent`, every packet in or out is dropped.

    That is a BMC that does not answer (hung firmware, unplugged LAN) with the port still
    bound, so the client sees silence and not an ICMP 'port unreachable'.
    """

    def __init__(self, sock):
        self.sock = sock
        self.silent = False

    def fileno(self):
        return self.sock.fileno()

    def setblocking(self, flag):
        self.sock.setblocking(flag)

    def getsockname(self):
        return self.sock.getsockname()

    def recvfrom(self, size):
        data = self.sock.recvfrom(size)
        while self.silent:  # drain and drop everything that is waiting
            data = self.sock.recvfrom(size)  # raises BlockingIOError when empty
        return data

    def sendto(self, packet, addr):
        if not self.silent:
            return self.sock.sendto(packet, addr)
        return len(packet)


class TestBmc(bmc.Bmc):
    """One node's BMC: power state, boot device, and a record of what it was told."""

    __test__ = False  # not a pytest class

    def __init__(self, node: str, users: dict[str, str], events, lock: threading.Lock):
        super().__init__(users, port=0, address="127.0.0.1")
        self.node = node
        self._events = events
        self._events_lock = lock
        self.powered = True
        self.bootdev = "default"
        self.boot_persistent = False
        self.history: list[str] = []
        self.fail_power = False  # answer chassis control with an error code
        # Bound to port 0: learn the real port (pyghmi keys its session table by it).
        self.port = self.serversocket.getsockname()[1]
        self._install_gate()

    def _install_gate(self) -> None:
        sock = self.serversocket
        self.gate = _Gate(sock)
        idx = ipmisession.iosockets.index(sock)
        ipmisession.iosockets[idx] = self.gate
        ipmisession.Session.bmc_handlers[self.gate] = ipmisession.Session.bmc_handlers.pop(sock)
        self.serversocket = self.gate

    # --- sessions: refuse non-SHA1 suites (see module docstring) ---------------------------
    def sessionless_data(self, data, sockaddr):
        data = bytearray(data)
        if len(data) >= 22 and data[0] == 6 and data[2:4] == b"\xff\x07" and data[4] == 6 \
                and data[5] == constants.payload_types["rmcpplusopenreq"]:
            _Sha1OnlySession(self.authdata, self.kg, sockaddr, self.serversocket, data[16:],
                             self.uuid, bmc=self)
            return
        super().sessionless_data(data, sockaddr)

    # --- what the node does ------------------------------------------------------------------
    def _record(self, action: str) -> int:
        if self.fail_power:
            return IPMI_CANNOT_EXECUTE_NOW
        self.history.append(action)
        with self._events_lock:
            self._events.send((self.node, action))
        return 0

    def get_power_state(self):
        return "on" if self.powered else "off"

    def power_on(self):
        if self.powered:
            return 0
        rc = self._record("on")
        self.powered = self.powered or rc == 0
        return rc

    def power_off(self):
        rc = self._record("off")
        self.powered = self.powered and rc != 0
        return rc

    def power_shutdown(self):  # ACPI soft off
        rc = self._record("soft")
        self.powered = self.powered and rc != 0
        return rc

    def power_reset(self):
        if not self.powered:
            return IPMI_CANNOT_EXECUTE_NOW
        return self._record("reset")

    def power_cycle(self):
        if not self.powered:
            return IPMI_CANNOT_EXECUTE_NOW
        return self._record("cycle")

    def get_boot_device(self):
        return self.bootdev

    def set_boot_device(self, bootdevice):
        self.bootdev = bootdevice

    def set_system_boot_options(self, request, session):
        if request["data"][0] == 5:  # boot flags: remember "persistent" (bit 6), pyghmi drops it
            self.boot_persistent = bool(request["data"][1] & 0x40)
            if request["data"][1] == 0:
                self.bootdev = "default"
                return session.send_ipmi_response()
        return super().set_system_boot_options(request, session)

    def state(self) -> dict[str, Any]:
        return {"node": self.node, "port": self.port, "power": self.get_power_state(),
                "bootdev": self.bootdev, "persistent": self.boot_persistent,
                "history": list(self.history), "silent": self.gate.silent}


def serve(nodes: list[str], users: dict[str, str], control, events) -> None:
    """Entry point of the BMC process: create the BMCs, report their ports, serve forever."""
    # A plain client socket first: pyghmi wakes its I/O thread through iosockets[0], which
    # must never be a gated BMC socket.
    ipmisession.Session._assignsocket()
    lock = threading.Lock()
    bmcs = {n: TestBmc(n, users, events, lock) for n in nodes}
    control.send({n: b.port for n, b in bmcs.items()})
    stop = threading.Event()

    def handle(request):
        op, *args = request
        if op == "stop":
            stop.set()
            return True
        b = bmcs[args[0]]
        if op == "silence":
            b.gate.silent = bool(args[1])
        elif op == "set":
            setattr(b, args[1], args[2])
        return b.state()

    def control_loop():
        while not stop.is_set():
            try:
                request = control.recv()
            except EOFError:
                stop.set()
                return
            try:
                control.send(handle(request))
            except Exception as exc:  # answer, never die: the parent waits for a reply
                control.send({"error": f"{type(exc).__name__}: {exc}"})

    threading.Thread(target=control_loop, daemon=True).start()
    while not stop.is_set():
        ipmisession.Session.wait_for_rsp(0.2)
    os._exit(0)  # pyghmi's I/O thread is not a daemon: leave at once

