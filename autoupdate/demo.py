"""`autoupdate demo`: a throwaway git repository, a simulated cluster with running jobs, the real
service loop on an accelerated clock, one DRAIN commit rolled out live, then a summary."""
from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import git
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from . import logs
from .config import parse_config
from .daemon import Service, state_db
from .store import Store
from .model import RolloutState

COLOURS = {
    "pending": "grey50", "draining": "yellow", "drained": "yellow", "applying": "cyan",
    "rebooting": "magenta", "verifying": "blue", "resuming": "blue", "retry_wait": "red",
    "done": "green", "failed": "bold red", "cancelled": "grey50", "skipped": "grey50",
}


def make_repo(root: Path) -> tuple[Path, git.Repo]:
    bare = root / "node-config.git"
    git.Repo.init(bare, bare=True, initial_branch="main")
    work = git.Repo.init(root / "work", initial_branch="main")
    with work.config_writer() as cw:
        cw.set_value("user", "name", "Demo Admin")
        cw.set_value("user", "email", "admin@example.org")
    (root / "work" / "roles" / "kernel" / "tasks").mkdir(parents=True)
    (root / "work" / "roles" / "kernel" / "tasks" / "main.yml").write_text("- name: kernel\n  package: {name: kernel-5.14}\n")
    (root / "work" / "README.md").write_text("node configuration\n")
    work.index.add(["roles/kernel/tasks/main.yml", "README.md"])
    work.index.commit("initial configuration")
    work.create_remote("origin", str(bare))
    work.remotes.origin.push("main:main")
    return bare, work


def demo_settings(root: Path, bare: Path, nodes: int, speed: float):
    half = nodes // 2
    return parse_config({
        "cluster": {"backend": "sim", "sim": {
            "partitions": {"batch": f"node[001-{half:03d}]", "gpu": f"node[{half + 1:03d}-{nodes:03d}]"},
            "reboot_seconds": 300, "job_seconds": [900, 3 * 3600], "jobs_per_node": 1.0, "speed": speed}},
        "repository": {"url": str(bare), "fetch_interval": 0.5},
        "nodes": {"blacklist": "", "canaries": "node[001-002]"},
        "detectors": [{"type": "path_rules", "rules": [
            {"glob": "docs/*", "class": "good"},
            {"glob": "roles/kernel/*", "class": "drain"}]}],
        "rollout": {"canary_count": 2, "soak_seconds": 600, "max_unavailable": "25%"},
        "apply": {"backend": "sim"}, "reboot": {"strategy": "sim", "timeout": 3600},
        "notify": {"log": False},
        "control": {"state_dir": str(root / "state"), "poll_interval": 0.1, "log_level": "error"},
    }, "demo")


def _grid(records, nodes) -> Text:
    text = Text()
    for i, n in enumerate(nodes):
        phase = records[n].phase.value if n in records else "done"
        text.append("■ ", style=COLOURS.get(phase, "white"))
        if (i + 1) % 16 == 0:
            text.append("\n")
    return text


def run_demo(nodes: int = 32, speed: float = 1200.0, quiet: bool = False) -> dict:
    console = Console()
    logs.configure("console", "error")
    with tempfile.TemporaryDirectory(prefix="au-demo-") as tmp:
        root = Path(tmp)
        bare, work = make_repo(root)
        settings = demo_settings(root, bare, nodes, speed)
        service = Service(settings)
        cluster, clock, store = service.deps.workload_manager, service.deps.clock, service.store
        service.engine.fetch()  # the current commit is what the nodes run: the baseline
        path = root / "work" / "roles" / "kernel" / "tasks" / "main.yml"
        path.write_text("- name: kernel\n  package: {name: kernel-5.14.0-427.cve-fix}\n")
        work.index.add(["roles/kernel/tasks/main.yml"])
        target = work.index.commit("kernel: CVE fix").hexsha
        work.remotes.origin.push("main:main")
        started_wall, started_sim = time.monotonic(), clock.now()
        worker = threading.Thread(target=service.run, kwargs={"exit_when_done": True, "max_seconds": 120},
                                  daemon=True)
        worker.start()
        names = sorted(cluster.nodes)

        def view():
            records = store.records()
            rollout = store.latest_rollout()
            counts: dict[str, int] = {}
            for r in records.values():
                counts[r.phase.value] = counts.get(r.phase.value, 0) + 1
            hours = (clock.now() - started_sim) / 3600
            head = Text(f"commit {target[:12]} 'kernel: CVE fix'   rollout: "
                        f"{rollout.state.value if rollout else 'detecting'}   simulated time +{hours:.1f} h   "
                        f"running jobs {len(cluster.jobs)}   queued {len(cluster.queue)}")
            t = Table.grid(padding=(0, 2))
            t.add_row(*(Text(f"{k} {v}", style=COLOURS.get(k, "white")) for k, v in sorted(counts.items())))
            return Group(head, _grid(records, names), t)

        if quiet:
            worker.join()
        else:
            with Live(view(), console=console, refresh_per_second=8, transient=False) as live:
                while worker.is_alive():
                    live.update(view())
                    time.sleep(0.125)
                live.update(view())
        worker.join()
        store = Store(state_db(settings))  # the service closed its own connection on exit
        rollout = store.latest_rollout()
        store.close()
        updated = sum(1 for n in cluster.nodes.values() if n.running == target)
        summary = {
            "nodes": len(names), "updated": updated,
            "canaries": list(rollout.canaries) if rollout else [],
            "rollout_state": rollout.state.value if rollout else None,
            "jobs_killed": cluster.stats.jobs_killed, "jobs_completed": cluster.stats.jobs_completed,
            "simulated_hours": round(((rollout.updated_at if rollout else clock.now()) - started_sim) / 3600, 2),
            "wall_seconds": round(time.monotonic() - started_wall, 1),
            "max_out_of_service": cluster.stats.max_out_of_service,
        }
        t = Table(title="autoupdate demo: summary", show_header=False)
        for k, label in [("nodes", "nodes"), ("updated", "nodes running the new commit"),
                         ("canaries", "canaries (went first)"), ("rollout_state", "rollout"),
                         ("jobs_killed", "jobs killed"), ("jobs_completed", "jobs completed meanwhile"),
                         ("simulated_hours", "simulated time taken (h)"), ("wall_seconds", "wall time (s)"),
                         ("max_out_of_service", "most nodes out of service at once")]:
            value = summary[k]
            t.add_row(label, ", ".join(value) if isinstance(value, list) else str(value))
        console.print(t)
        if rollout and rollout.state is not RolloutState.DONE:
            console.print(f"[red]rollout ended {rollout.state.value}: {rollout.reason}[/]")
        return summary
