"""End to end on the real Slurm rig: an image-manifest change rolled out through Warewulf.

The `wwctl` stand-in keeps the node registry and publishes, per node, the image warewulfd would
serve at the next boot (<state>.provision/<node>). Each rig node's `staged` file (what its next
simulated boot runs) is a link to that file, so Slurm's RebootProgram boots exactly the image
the back-end now points at. The real `autoupdate run --exit-when-done` does the rest: image
manifest detector -> drain -> image applier (wwctl node set) -> scontrol reboot -> image check
(wwctl setting + what the node booted) -> resume.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from standins.cli_state import install_bin, read_state, write_state

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

OLD, NEW = "rocky9-2024.04", "rocky9-2024.05"


def git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env=dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@x",
                            GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@x"))


def commit_manifest(work: Path, groups: dict, message: str) -> None:
    (work / "images.yml").write_text(yaml.safe_dump({"groups": groups}))
    git(work, "add", "images.yml")
    git(work, "commit", "-q", "-m", message)
    git(work, "push", "-q", "origin", "HEAD:main")


def run_autoupdate(config: Path, env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autoupdate.cli", "--config", str(config), "run",
                           "--exit-when-done", "--max-seconds", str(timeout - 30)],
                          capture_output=True, text=True, env=env, timeout=timeout)


def test_image_manifest_change_rolled_out_through_warewulf(slurm_rig, tmp_path):
    rig = slurm_rig
    nodes = rig.nodes  # node001..node004
    earlier_reboots = len(rig.reboot_log())  # the rig is shared with other tests of the session
    # Warewulf stand-in: every node inherits OLD from the default profile.
    ww = write_state(tmp_path / "ww.json", {
        "version": "4.6.0", "images": [OLD, NEW], "profiles": {"default": {"image": OLD}},
        "nodes": {n: {"profiles": ["default"], "image": None} for n in nodes}})
    bin_dir = install_bin(tmp_path / "bin")
    env = dict(rig.env, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", WWCTL_STATE=str(ww),
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    subprocess.run(["wwctl", "node", "list"], env=env, check=True, capture_output=True)  # publish
    provision = Path(str(ww) + ".provision")
    try:
        for n in nodes:  # the node's next boot runs what warewulfd serves it
            rig.staged_file(n).unlink()
            rig.staged_file(n).symlink_to(provision / n)

        bare, work = tmp_path / "cfg.git", tmp_path / "work"
        git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
        git(tmp_path, "clone", "-q", str(bare), str(work))
        groups = {"compute": {"nodes": "node[001-003]", "image": OLD},
                  "spare": {"nodes": "node004", "image": OLD}}
        commit_manifest(work, groups, "manifest: every node on 2024.04")

        config = tmp_path / "autoupdate.yaml"
        config.write_text(yaml.safe_dump({
            "cluster": {"backend": "slurm"},
            "repository": {"url": str(bare), "branch": "main", "fetch_interval": 1},
            "nodes": {"canaries": "node001"},
            "detectors": [{"type": "image_manifest", "path": "images.yml"}],
            "rollout": {"canary_count": 1, "soak_seconds": 0, "max_unavailable": 2,
                        "retry_backoff_seconds": 1, "max_attempts": 2},
            "apply": {"backend": "image", "timeout": 60},
            "reboot": {"strategy": "slurm", "timeout": 90},
            "images": {"backend": "warewulf", "timeout": 30,
                       "booted": {"source": "command",
                                  "command": ["cat", str(rig.dir / "nodes" / "{node}" / "booted")]}},
            "control": {"state_dir": str(tmp_path / "state"), "poll_interval": 0.5},
        }))

        first = run_autoupdate(config, env)  # the first commit becomes the baseline
        assert first.returncode == 0, first.stderr[-2000:]

        groups["compute"]["image"] = NEW
        commit_manifest(work, groups, "compute nodes boot rocky9 2024.05")
        second = run_autoupdate(config, env)
        assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]

        state = read_state(ww)
        assert {n: state["nodes"][n]["image"] for n in nodes} == \
            {"node001": NEW, "node002": NEW, "node003": NEW, "node004": None}
        assert [n for n in nodes if rig.booted(n) == NEW] == ["node001", "node002", "node003"]
        assert rig.booted("node004") == "initial"  # never rebooted: not in the changed group
        # all resumed (a node resumed from DOWN shows NOT_RESPONDING for a moment: wait for IDLE)
        rig.wait_nodes_state({"IDLE"}, nodes, timeout=30)
        rebooted = [line for line in rig.reboot_log()[earlier_reboots:] if "booted" in line]
        assert sorted(line.split()[1] for line in rebooted) == ["node001", "node002", "node003"]
        sets = [c for c in state["calls"] if c[:2] == ["node", "set"]]
        assert sets and all(c[2:5] == ["--yes", "--image", NEW] for c in sets)
        assert sets[0][5:] == ["node001"]  # the canary went first, alone
    finally:
        for n in nodes:  # give the rig its plain files back
            if rig.staged_file(n).is_symlink():
                rig.staged_file(n).unlink()
                rig.staged_file(n).write_text("initial\n")
