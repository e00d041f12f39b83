"""End to end on the real Slurm rig: tagged Ansible role changes rolled out by the service loop.

Inventory hosts are the rig's nodes (ansible_connection=local, each writing under its own fake
root). The real `autoupdate run --exit-when-done` does the rest: tags detector -> HOT: the
ansible applier runs only the hotchange tasks on nodes that keep their jobs running; DRAIN: drain
-> the whole playbook on the drained nodes -> scontrol reboot -> resume.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ansible_support import ConfigRepo, git

pytestmark = [pytest.mark.slurm, pytest.mark.ansible, pytest.mark.slow]

SITE = """
- hosts: all
  gather_facts: false
  roles:
    - {role: motd, tags: [hotchange]}
- hosts: compute
  gather_facts: false
  roles:
    - {role: kern, tags: [drainchange]}
"""


def _inventory(nodes, roots: Path) -> str:
    return ("[compute]\n" + "\n".join(nodes[:2]) + "\n[spare]\n" + "\n".join(nodes[2:]) + "\n"
            f"[all:vars]\nansible_connection=local\nansible_python_interpreter={sys.executable}\n"
            f"root={roots}/{{{{ inventory_hostname }}}}\n")


def _files(version: str, kernel: str) -> dict[str, str]:
    return {
        "roles/motd/tasks/main.yml": '- file: {path: "{{ root }}", state: directory}\n'
                                     '- template: {src: motd.j2, dest: "{{ root }}/motd"}\n',
        "roles/motd/templates/motd.j2": f"motd {version}\n",
        "roles/kern/tasks/main.yml": f'- copy: {{dest: "{{{{ root }}}}/kernel", content: "{kernel}\\n"}}\n',
    }


def _run(config: Path, env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autoupdate.cli", "--config", str(config), "run",
                           "--exit-when-done", "--max-seconds", str(timeout - 30)],
                          capture_output=True, text=True, env=env, timeout=timeout)


def test_tagged_role_changes_rolled_out_by_the_service(slurm_rig, tmp_path):
    rig = slurm_rig
    nodes = rig.nodes  # node001..node004; compute = node[001-002]
    roots = tmp_path / "roots"
    bare = tmp_path / "cfg.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    repo = ConfigRepo(tmp_path / "work")
    git(repo.path, "remote", "add", "origin", str(bare))

    def push(files, message):
        repo.commit(files, message)
        git(repo.path, "push", "-q", "origin", "HEAD:main")

    push({"site.yml": SITE, "inventory": _inventory(nodes, roots), **_files("v1", "quiet")}, "base")
    config = tmp_path / "autoupdate.yaml"
    config.write_text(yaml.safe_dump({
        "cluster": {"backend": "slurm"},
        "repository": {"url": str(bare), "branch": "main", "fetch_interval": 1},
        "nodes": {"canaries": "node001"},
        "detectors": [{"type": "tags", "ignore": ["docs/**"]}],
        "rollout": {"canary_count": 1, "soak_seconds": 0, "max_unavailable": 2,
                    "retry_backoff_seconds": 1, "max_attempts": 2},
        "apply": {"backend": "ansible", "ansible": {"forks": 4, "timeout": 120}},
        "reboot": {"strategy": "slurm", "timeout": 90},
        "control": {"state_dir": str(tmp_path / "state"), "poll_interval": 0.5},
    }))
    env = dict(rig.env, PYTHONPATH=str(Path(__file__).resolve().parents[1]))

    first = _run(config, env)  # the first commit becomes the baseline
    assert first.returncode == 0, first.stderr[-2000:]

    # HOT: the motd role (tagged hotchange) on every node, while a job keeps running on node002.
    job = rig.submit(["sleep", "300"], nodes="node002")
    rig.wait_job(job, {"RUNNING"})
    push(_files("v2", "quiet"), "motd v2")
    hot = _run(config, env)
    assert hot.returncode == 0, hot.stdout[-2000:] + hot.stderr[-3000:]
    assert {n: (roots / n / "motd").read_text() for n in nodes} == {n: "motd v2\n" for n in nodes}
    assert not any((roots / n / "kernel").exists() for n in nodes)  # drain-tagged: not run live
    assert rig.job_state(job) == "RUNNING"  # HOT: no drain, the job was never touched
    assert not [line for line in rig.reboot_log() if "booted" in line]
    rig.run(["scancel", job])
    rig.wait_job(job, {"CANCELLED", "COMPLETED"})

    # DRAIN: the kern role (tagged drainchange) on compute only: drain, apply, reboot, resume.
    push(_files("v2", "quiet nosmt"), "kernel args nosmt")
    drain = _run(config, env)
    assert drain.returncode == 0, drain.stdout[-2000:] + drain.stderr[-3000:]
    assert {n: (roots / n / "kernel").read_text() for n in nodes[:2]} == {n: "quiet nosmt\n" for n in nodes[:2]}
    assert not any((roots / n / "kernel").exists() for n in nodes[2:])
    rebooted = sorted(line.split()[1] for line in rig.reboot_log() if "booted" in line)
    assert rebooted == ["node001", "node002"]
    states = rig.node_states()
    assert not any("DRAIN" in s for s in states.values()), states  # all resumed
    # NOT_RESPONDING right after a simulated reboot is Slurm's ping lagging on a loaded machine
    rig.wait_nodes_state({"IDLE"}, timeout=30)
