"""A small simulated cluster + a real git repository + a config file, for service-level tests
(the real daemon as a process, or the Service in a thread)."""
from __future__ import annotations

import copy
import socket
import time
from pathlib import Path

import yaml

from autoupdate.demo import make_repo


def sim_config(root: Path, bare: Path, **sections) -> dict:
    """8 nodes in two partitions, short jobs, a fast clock: a DRAIN rollout takes seconds."""
    cfg = {
        "cluster": {"backend": "sim", "sim": {
            "partitions": {"batch": "node[01-04]", "gpu": "node[05-08]"},
            "reboot_seconds": 60, "job_seconds": [60, 600], "jobs_per_node": 0.5, "speed": 300, "seed": 7}},
        "repository": {"url": str(bare), "fetch_interval": 0.2},
        "nodes": {"canaries": "node01"},
        "detectors": [{"type": "path_rules", "rules": [
            {"glob": "docs/*", "class": "good"},
            {"glob": "roles/motd/*", "class": "hot"},
            {"glob": "roles/kernel/*", "class": "drain"}]}],
        "rollout": {"canary_count": 1, "soak_seconds": 0, "max_unavailable": "50%",
                    "retry_backoff_seconds": 10},
        "apply": {"backend": "sim"}, "reboot": {"strategy": "sim", "timeout": 3600},
        "notify": {"log": True},
        "control": {"state_dir": str(root / "state"), "poll_interval": 0.05, "log_level": "info",
                    "log_format": "json"},
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(name), dict):
            cfg[name] = {**cfg[name], **value}
        else:
            cfg[name] = value
    return cfg


class Setup:
    """tmp dir with a bare repo, a work clone and a config file."""

    def __init__(self, root: Path, **sections):
        self.root = root
        self.bare, self.work = make_repo(root)
        self.config_path = root / "autoupdate.yaml"
        self.config = sim_config(root, self.bare, **sections)
        self.write_config()

    def write_config(self, config: dict | None = None, raw: str | None = None) -> None:
        if config is not None:
            self.config = config
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(raw if raw is not None else yaml.safe_dump(self.config))
        tmp.replace(self.config_path)

    def changed(self, **sections) -> dict:
        cfg = copy.deepcopy(self.config)
        for name, value in sections.items():
            cfg[name] = {**cfg.get(name, {}), **value}
        return cfg

    def commit(self, path: str, text: str, message: str = "change") -> str:
        full = self.root / "work" / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_text(text)
        self.work.index.add([path])
        sha = self.work.index.commit(message).hexsha
        self.work.remotes.origin.push("main:main")
        return sha


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.02, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
