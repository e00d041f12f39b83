"""The real service (`autoupdate run`) against the real Slurm rig and a real git repository.

    h = RolloutHarness(tmp_path, rig)          # config: slurm backend, command applier, slurm reboots
    h.baseline()                              # first run: HEAD becomes the baseline, nothing to do
    sha = h.commit("kernel/version", "2")     # a DRAIN change (path rules below)
    assert h.run() == 0                       # --exit-when-done

The applier writes the target commit into the node's `staged` file (and `booted` too for a HOT
change: applied live); a reboot through Slurm's RebootProgram boots staged -> booted; the
verification reads `booted` back (verify.revision, command source).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from autoupdate.store import Store

from .slurm import SlurmRig


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def stage_command(rig: SlurmRig) -> list[str]:
    """apply.command: DRAIN stages the commit for the next boot; HOT applies it live too."""
    nodes = f"{rig.dir}/nodes/{{node}}"
    return ["sh", "-c", f"echo {{target}} > {nodes}/staged && "
                        f"if [ {{class}} = hot ]; then cp {nodes}/staged {nodes}/booted; fi"]


def merge(config: dict, overrides: dict) -> dict:
    out = dict(config)
    for section, values in overrides.items():
        out[section] = {**out.get(section, {}), **values} if isinstance(values, dict) else values
    return out


class RolloutHarness:
    def __init__(self, tmp: Path, rig: SlurmRig, **overrides):
        self.rig = rig
        self.tmp = tmp
        self.repo = tmp / "repo"
        self.repo.mkdir()
        git(self.repo, "init", "-q", "-b", "main")
        git(self.repo, "config", "user.email", "t@example.org")
        git(self.repo, "config", "user.name", "t")
        self.commit("kernel/version", "1", "initial")
        self.state_dir = tmp / "state"
        config = {
            "cluster": {"backend": "slurm", "slurm": {"slurm_conf": str(rig.conf), "command_timeout": 15}},
            "repository": {"url": str(self.repo), "branch": "main", "fetch_interval": 0.5},
            "nodes": {"canaries": rig.nodes[0]},
            "detectors": [{"type": "path_rules", "rules": [
                {"glob": "kernel/**", "class": "drain"}, {"glob": "motd/**", "class": "hot"}]}],
            "rollout": {"canary_count": 1, "soak_seconds": 0, "max_unavailable": 2, "max_attempts": 2,
                        "retry_backoff_seconds": 0.5, "retry_backoff_max_seconds": 1, "failure_budget": 1},
            "apply": {"backend": "command", "command": stage_command(rig), "timeout": 30},
            "reboot": {"strategy": "slurm", "timeout": 20},
            "verify": {"revision": {"source": "command", "command": ["cat", f"{rig.dir}/nodes/{{node}}/booted"]}},
            "control": {"state_dir": str(self.state_dir), "poll_interval": 0.5, "log_format": "json",
                        "log_level": "info"},
        }
        self.config = tmp / "autoupdate.yaml"
        self.config.write_text(yaml.safe_dump(merge(config, overrides)))
        self.log = tmp / "service.log"

    def commit(self, path: str, content: str, message: str = "change") -> str:
        f = self.repo / path
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(content + "\n")
        git(self.repo, "add", path)
        git(self.repo, "commit", "-q", "-m", message)
        return git(self.repo, "rev-parse", "HEAD")

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "autoupdate.cli", "--config", str(self.config), *args],
                              capture_output=True, text=True, timeout=60, env=self.rig.env)

    def start(self, max_seconds: float = 120) -> subprocess.Popen:
        with open(self.log, "a") as out:
            return subprocess.Popen([sys.executable, "-m", "autoupdate.cli", "--config", str(self.config),
                                     "run", "--exit-when-done", "--max-seconds", str(max_seconds)],
                                    stdout=out, stderr=subprocess.STDOUT, env=self.rig.env)

    def run(self, max_seconds: float = 120) -> int:
        return self.start(max_seconds).wait(max_seconds + 30)

    def baseline(self) -> None:
        code = self.run(30)
        assert code == 0, self.tail()

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text()[-chars:] if self.log.exists() else "(no log)"

    def store(self) -> Store:
        return Store(self.state_dir / "state.db")

    def records(self):
        store = self.store()
        try:
            return store.records()
        finally:
            store.close()

    def history(self) -> list[dict]:
        """Oldest first."""
        store = self.store()
        try:
            return list(reversed(store.history(limit=10_000)))
        finally:
            store.close()

    def wait_records(self, predicate, timeout: float = 60.0, what: str = "records"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.state_dir / "state.db").exists():
                recs = self.records()
                if predicate(recs):
                    return recs
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}: {self.tail()}")


def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass
    proc.wait(30)


class StateSampler:
    """Samples the rig's node states in a thread: what Slurm showed during a rollout."""

    def __init__(self, rig: SlurmRig, interval: float = 0.2):
        self.rig = rig
        self.interval = interval
        self.samples: list[dict[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.rig.node_states())
            self._stop.wait(self.interval)

    def __enter__(self) -> "StateSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def out_of_service(self, exclude: set[str] = frozenset()) -> int:
        """Most nodes at once that were drained, down or rebooting."""
        def out(state: str) -> bool:
            return any(w in state for w in ("DRAIN", "DOWN", "REBOOT"))
        return max((sum(1 for n, s in sample.items() if n not in exclude and out(s))
                    for sample in self.samples), default=0)

    def ever(self, node: str, word: str) -> bool:
        return any(word in sample.get(node, "") for sample in self.samples)
