"""Shared by the command-line stand-ins (wwctl, scyld-nodectl): state in one JSON file.

Each stand-in is a script run through a wrapper put on PATH (install_bin); its state file comes
from an environment variable. A `fail` entry in the state makes a named sub-command fail with
the given message (exit 1), the way a broken provisioning server would. Every call is appended
to `calls` so tests can see exactly which argv ran.
"""
from __future__ import annotations

import fcntl
import json
import os
import stat
import sys
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent


@contextmanager
def locked_state(env_var: str):
    path = Path(os.environ[env_var])
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = json.loads(path.read_text())
        yield state
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(path)


def die(message: str, code: int = 1) -> None:
    print(message, file=sys.stderr)
    raise SystemExit(code)


def known_nodes(state: dict, patterns: list[str], bad_pattern: str, unknown: str) -> list[str]:
    """Expand hostlist patterns; every node must exist (messages in the tool's own words)."""
    from ClusterShell.NodeSet import NodeSet, NodeSetException
    try:
        wanted = [n for p in patterns for n in NodeSet(p)]
    except NodeSetException as exc:
        die(f"{bad_pattern}: {exc}")
    missing = [n for n in wanted if n not in state["nodes"]]
    if missing:
        die(f"{unknown}: {', '.join(missing)}")
    return wanted


def install_bin(bin_dir: Path) -> Path:
    """Wrappers named like the real tools, running the stand-ins with this Python."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, script in (("wwctl", "wwctl.py"), ("scyld-nodectl", "scyld_nodectl.py")):
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HERE / script}" "$@"\n')
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bin_dir


def write_state(path: Path, state: dict) -> Path:
    path.write_text(json.dumps(state, indent=1))
    return path


def read_state(path: Path) -> dict:
    return json.loads(Path(path).read_text())
