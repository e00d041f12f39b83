"""Admin requests (`autoupdate retry|skip NODES`) handed from the CLI to the running service.

The service is the only writer of the state store, so the CLI drops a small JSON file into
<state_dir>/requests/ and the service carries it out at its next tick (engine.retry / skip).
A request file is written atomically (temp file + rename) and removed once handled.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

ACTIONS = ("retry", "skip")


@dataclass(frozen=True)
class AdminRequest:
    action: str
    nodes: tuple[str, ...]
    by: str = ""
    at: float = 0.0


def spool(state_dir: Path) -> Path:
    return Path(state_dir) / "requests"


def submit(state_dir: Path, action: str, nodes: list[str], by: str) -> Path:
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    directory = spool(state_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = time.time()
    name = f"{now:.6f}-{os.getpid()}-{action}"
    tmp = directory / f".{name}.tmp"
    tmp.write_text(json.dumps({"action": action, "nodes": nodes, "by": by, "at": now}))
    final = directory / f"{name}.json"
    tmp.replace(final)
    return final


def take(state_dir: Path) -> list[AdminRequest]:
    """Every waiting request, oldest first; each file is removed as it is read. Unreadable or
    malformed files are removed too (returned as nothing): they would never become valid."""
    directory = spool(state_dir)
    try:
        names = sorted(p for p in directory.iterdir() if p.suffix == ".json")
    except FileNotFoundError:
        return []
    out = []
    for path in names:
        try:
            data = json.loads(path.read_text())
            req = AdminRequest(str(data["action"]), tuple(str(n) for n in data["nodes"]),
                               str(data.get("by", "")), float(data.get("at", 0.0)))
            if req.action in ACTIONS:
                out.append(req)
        except (OSError, ValueError, KeyError, TypeError):
            pass
        finally:
            path.unlink(missing_ok=True)
    return out
