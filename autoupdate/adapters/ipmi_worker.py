"""One BMC conversation in a throw-away process: `python -m autoupdate.adapters.ipmi_worker`.

Why a process per call: pyghmi keeps global state (a session cache, a shared I/O thread), a
call to a dying BMC can block for half a minute, and a thread cannot be killed. The parent
(autoupdate.adapters.ipmi) runs this through autoupdate.proc with a hard deadline, so a hung
BMC costs one killed child, never the service loop.

Request on stdin (JSON; the password travels only here, never in argv or the environment):
    {"host": "10.0.0.5", "port": 623, "username": "admin", "password": "...",
     "ops": [{"op": "status"}, {"op": "bootdev", "device": "network", "persistent": false},
             {"op": "power", "action": "reset"}, {"op": "boot", "action": "cycle"}]}
Answer on stdout (JSON): {"ok": true, "results": [...]} or {"ok": false, "error": "...",
"stage": "login" | "<op>"}. Messages never contain the password (redacted here and again in
the parent).

Only plain IPMI commands are used (chassis status / control, boot options): no OEM detection,
which on some vendors would open other protocols.
"""
from __future__ import annotations

import json
import os
import sys

NETFN_CHASSIS = 0
CMD_CHASSIS_STATUS = 1
CMD_CHASSIS_CONTROL = 2
CHASSIS_CONTROL = {"off": 0, "on": 1, "cycle": 2, "reset": 3, "soft": 5}


class OpError(Exception):
    pass


def _check(rsp: dict, what: str) -> dict:
    if "error" in rsp:
        raise OpError(f"{what}: {rsp['error']}")
    return rsp


def _status(cmd) -> str:
    rsp = _check(cmd.raw_command(netfn=NETFN_CHASSIS, command=CMD_CHASSIS_STATUS), "power status")
    return "on" if rsp["data"][0] & 1 else "off"


def _control(cmd, action: str) -> str:
    if action not in CHASSIS_CONTROL:
        raise OpError(f"unknown power action {action!r}")
    # cycle has no pyghmi set_power() name: chassis control 2 is sent raw, like all others.
    _check(cmd.raw_command(netfn=NETFN_CHASSIS, command=CMD_CHASSIS_CONTROL,
                           data=[CHASSIS_CONTROL[action]]), f"power {action}")
    return action


def run_op(cmd, op: dict):
    kind = op.get("op")
    if kind == "status":
        return _status(cmd)
    if kind == "power":
        return _control(cmd, op["action"])
    if kind == "boot":  # a reboot that also works on a node that is powered off
        return _control(cmd, "on" if _status(cmd) == "off" else op.get("action", "reset"))
    if kind == "bootdev":
        rsp = cmd.set_bootdev(op["device"], persist=bool(op.get("persistent")))
        if isinstance(rsp, dict) and "error" in rsp:
            raise OpError(f"boot device: {rsp['error']}")
        return op["device"]
    raise OpError(f"unknown operation {kind!r}")


def redact(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def main() -> int:
    request = json.loads(sys.stdin.read())
    secret = request.get("password", "")
    stage = "login"
    answer: dict
    try:
        from pyghmi.ipmi import command  # imported here: a missing pyghmi is one clear line
        # bytes, never str: with str a second Command() to the same BMC hangs (session cache).
        cmd = command.Command(bmc=request["host"], port=int(request.get("port", 623)),
                              userid=request["username"].encode(), password=secret.encode())
        results = []
        for op in request["ops"]:
            stage = op.get("op", "?")
            results.append(run_op(cmd, op))
        answer = {"ok": True, "results": results}
        try:
            cmd.ipmi_session.logout()  # free the BMC's session slot (they are few)
        except Exception:
            pass
    except Exception as exc:  # every failure becomes one line for the parent
        message = str(exc) or type(exc).__name__
        answer = {"ok": False, "stage": stage, "error": redact(message, secret)}
    # On a line of its own, last: pyghmi itself sometimes prints to stdout.
    sys.stdout.write("\n" + json.dumps(answer) + "\n")
    sys.stdout.flush()
    os._exit(0)  # pyghmi's I/O thread is not a daemon thread: do not wait for it


if __name__ == "__main__":
    sys.exit(main())
