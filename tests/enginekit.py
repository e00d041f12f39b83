"""Helpers for engine scenarios: an in-memory repository, a simulated cluster on a manual clock,
and an engine wired to them with work run inline (deterministic)."""
from __future__ import annotations

import hashlib
from pathlib import Path

from autoupdate.config import parse_config
from autoupdate.engine.engine import Engine, InlineExecutor
from autoupdate.model import Revision
from autoupdate.ports import SourceError
from autoupdate.sim.cluster import SimApplier, SimCluster, SimJob, SimRebooter, SimRevisionCheck
from autoupdate.sim.clock import ManualClock
from autoupdate.store import Store
from autoupdate.detect.path_rules import from_settings as path_rules


class MemorySource:
    """A linear history of {path: content} trees; `rewrite()` imitates a force-push."""

    def __init__(self, files: dict[str, str]):
        self.trees: dict[str, dict[str, str]] = {}
        self.parents: dict[str, str | None] = {}
        self.branch: list[str] = []
        self.fail_fetch = False
        self.commit(files, "initial")

    def commit(self, changes: dict[str, str | None], summary: str = "change") -> str:
        tree = dict(self.trees[self.branch[-1]]) if self.branch else {}
        for path, content in changes.items():
            if content is None:
                tree.pop(path, None)
            else:
                tree[path] = content
        sha = hashlib.sha1(f"{len(self.trees)}{summary}{sorted(tree.items())}".encode()).hexdigest()
        self.trees[sha] = tree
        self.parents[sha] = self.branch[-1] if self.branch else None
        self.branch.append(sha)
        self.summaries = getattr(self, "summaries", {})
        self.summaries[sha] = summary
        return sha

    def rewrite(self, drop: int, forget: bool = True) -> None:
        for sha in self.branch[-drop:]:
            if forget:
                del self.trees[sha]
        self.branch = self.branch[:-drop]

    def fetch(self) -> Revision:
        if self.fail_fetch:
            raise SourceError("simulated fetch failure")
        return self.revision(self.branch[-1])

    def exists(self, sha: str) -> bool:
        return sha in self.trees

    def is_ancestor(self, old: str, new: str) -> bool:
        while new is not None:
            if new == old:
                return True
            new = self.parents.get(new)
        return False

    def changed_paths(self, old, new) -> list[str]:
        a = self.trees[old] if old else {}
        b = self.trees[new]
        return sorted(p for p in set(a) | set(b) if a.get(p) != b.get(p))

    def read(self, sha: str, path: str) -> bytes | None:
        content = self.trees[sha].get(path)
        return None if content is None else content.encode()

    def checkout(self, sha: str) -> Path:
        raise NotImplementedError

    def revision(self, sha: str) -> Revision:
        if sha not in self.trees:
            raise SourceError(f"commit {sha[:12]} not found")
        return Revision(sha, self.summaries.get(sha, ""))


BASE_CONFIG = {
    "repository": {"url": "memory"},
    "nodes": {"canaries": "n[01-02]"},
    "detectors": [{"type": "path_rules", "rules": [
        {"glob": "hot/*", "class": "hot"}, {"glob": "drain/*", "class": "drain"},
        {"glob": "docs/*", "class": "good"}]}],
    "rollout": {"canary_count": 2, "soak_seconds": 60, "max_unavailable": 2, "max_attempts": 3,
                "retry_backoff_seconds": 10, "failure_budget": 2},
    "reboot": {"strategy": "sim", "timeout": 900},
    "cluster": {"backend": "sim"},
}


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


class Kit:
    """A whole engine on a simulated cluster. `n` nodes n01.., partitions a (first half), b."""

    def __init__(self, tmp_path: Path, n: int = 8, config: dict | None = None, jobs: dict | None = None,
                 fail_boot=(), fail_apply=(), reboot_seconds: float = 120.0, store: Store | None = None,
                 cluster: SimCluster | None = None, clock: ManualClock | None = None,
                 source: MemorySource | None = None):
        data = merge(BASE_CONFIG, config or {})
        data = merge(data, {"control": {"state_dir": str(tmp_path / "state")}})
        self.settings = parse_config(data, "test")
        self.clock = clock or ManualClock()
        names = [f"n{i:02d}" for i in range(1, n + 1)]
        self.source = source or MemorySource({"README": "x", "drain/k": "1", "hot/m": "1"})
        self.cluster = cluster or SimCluster({"a": names[: n // 2], "b": names[n // 2:]}, self.clock,
                                             reboot_seconds=reboot_seconds, fail_nodes=fail_boot,
                                             revision=self.source.branch[-1])
        for node, seconds in (jobs or {}).items():
            self.run_job(node, seconds)
        self.store = store or Store(tmp_path / "state" / "state.db")
        self.applier = SimApplier(self.cluster, fail=fail_apply)
        self.notified = []
        self.engine = self._engine()

    def _engine(self) -> Engine:
        class Collect:
            def __init__(s, out):
                s.out = out

            def notify(s, event):
                s.out.append(event)

        return Engine(self.settings, self.store, workload_manager=self.cluster, source=self.source,
                      detectors=[path_rules(d, None) for d in self.settings.detectors],
                      applier=self.applier, rebooter=SimRebooter(self.cluster, self.settings.reboot.timeout),
                      checks=[SimRevisionCheck()], notifiers=[Collect(self.notified)], clock=self.clock,
                      executor=InlineExecutor())

    def restart(self) -> None:
        """A new engine over the same state directory (as after SIGKILL)."""
        self.engine = self._engine()

    def run_job(self, node: str, seconds: float, limit: float | None = None) -> SimJob:
        job = SimJob(self.cluster.new_job_id(), 1, seconds, limit or seconds, self.clock.now())
        # Place it on exactly this node: start it directly.
        job.start, job.nodes = self.clock.now(), (node,)
        self.cluster.nodes[node].job = job.job_id
        self.cluster.jobs[job.job_id] = job
        return job

    def commit(self, changes: dict, summary: str = "change") -> str:
        sha = self.source.commit(changes, summary)
        self.engine.fetch()
        return sha

    def step(self, seconds: float = 10.0) -> None:
        self.clock.advance(seconds)
        self.engine.tick()

    def run_until(self, cond, max_steps: int = 2000, seconds: float = 10.0, each=None) -> int:
        for i in range(max_steps):
            if cond():
                return i
            self.step(seconds)
            if each:
                each()
        raise AssertionError(f"condition not reached after {max_steps} steps")

    def phase(self, node: str) -> str | None:
        rec = self.store.record(node)
        return rec.phase.value if rec else None

    def running(self, node: str) -> str:
        return self.cluster.nodes[node].running

    def rollout_state(self) -> str | None:
        r = self.store.latest_rollout()
        return r.state.value if r else None
