"""Test helpers for the Ansible/detector tests: a real git repository of node configuration, a
ChangeSource reading it with the git CLI, and the small playbook tree the tests change.

Every inventory host uses ansible_connection=local and writes under its own fake root
(<roots>/<host>/...), so real ansible-playbook runs touch nothing outside the test directory.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from autoupdate.model import Revision
from autoupdate.ports import DetectContext


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


class ConfigRepo:
    """A git working repository the test commits to (the site's configuration repository)."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        git(path, "init", "-q", "-b", "main")
        git(path, "config", "user.email", "test@example.org")
        git(path, "config", "user.name", "test")

    def commit(self, files: dict[str, str | None], message: str = "change") -> str:
        for rel, text in files.items():
            target = self.path / rel
            if text is None:
                target.unlink()
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(textwrap.dedent(text).lstrip("\n"))
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "--allow-empty", "-m", message)
        return git(self.path, "rev-parse", "HEAD").strip()


class CliSource:
    """ports.ChangeSource over a local repository with the git CLI (tests only)."""

    def __init__(self, repo: ConfigRepo, trees: Path):
        self.repo = repo
        self.trees = trees
        self.workdir = repo.path

    def exists(self, sha: str) -> bool:
        return subprocess.run(["git", "cat-file", "-e", sha], cwd=self.repo.path).returncode == 0

    def changed_paths(self, old: str | None, new: str) -> list[str]:
        if old is None:
            return sorted(git(self.repo.path, "ls-tree", "-r", "--name-only", new).split())
        return sorted(git(self.repo.path, "diff", "--name-only", old, new).split())

    def read(self, sha: str, path: str) -> bytes | None:
        res = subprocess.run(["git", "show", f"{sha}:{path}"], cwd=self.repo.path, capture_output=True)
        return res.stdout if res.returncode == 0 else None

    def checkout(self, sha: str) -> Path:
        target = self.trees / sha[:12]
        if not target.exists():
            target.mkdir(parents=True)
            archive = subprocess.run(["git", "archive", sha], cwd=self.repo.path, capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
        return target

    def revision(self, sha: str) -> Revision:
        return Revision(sha=sha)

    def fetch(self) -> Revision:
        return Revision(git(self.repo.path, "rev-parse", "HEAD").strip())

    def is_ancestor(self, old: str, new: str) -> bool:
        return subprocess.run(["git", "merge-base", "--is-ancestor", old, new], cwd=self.repo.path).returncode == 0


def context(source: CliSource, old: str | None, new: str, managed) -> DetectContext:
    return DetectContext(source=source, old=old, new=new, managed=tuple(managed),
                         changed_paths=tuple(source.changed_paths(old, new)))


def inventory(roots: Path, hosts: dict[str, list[str]], unreachable: tuple[str, ...] = ()) -> str:
    """INI inventory: group -> hosts; every host local except `unreachable` (ssh to a closed port)."""
    lines = []
    for group, members in hosts.items():
        lines.append(f"[{group}]")
        for h in members:
            extra = " ansible_connection=ssh ansible_host=127.0.0.1 ansible_port=9 " \
                    "ansible_ssh_common_args='-o ConnectTimeout=2'" if h in unreachable else ""
            lines.append(h + extra)
    lines += ["[all:vars]", "ansible_connection=local", f"ansible_python_interpreter={sys.executable}",
              f"au_roots={roots}", "root={{ au_roots }}/{{ inventory_hostname }}"]
    return "\n".join(lines) + "\n"


SITE = """
- hosts: compute
  gather_facts: false
  roles:
    - {role: motd, tags: [hotchange]}
    - {role: kern, tags: [drainchange]}
- hosts: gpu
  gather_facts: false
  roles:
    - gpu
  tasks:
    - name: gpu note
      copy: {dest: "{{ root }}/etc/gpu-note", content: "note 1\\n"}
      tags: [hotchange]
- hosts: all
  gather_facts: false
  tasks:
    - name: site check
      fail: {msg: "site check failed on {{ inventory_hostname }}"}
      when: inventory_hostname in (fail_hosts | default([]))
      tags: [hotchange]
"""

ROLES = {
    "roles/motd/tasks/main.yml": """
        - name: etc dir
          file: {path: "{{ root }}/etc", state: directory}
        - name: write motd
          template: {src: motd.j2, dest: "{{ root }}/etc/motd"}
        """,
    "roles/motd/templates/motd.j2": "welcome to {{ inventory_hostname }} v1\n",
    "roles/kern/tasks/main.yml": """
        - name: kernel args
          copy: {dest: "{{ root }}/etc/kernel-args", content: "quiet\\n"}
        """,
    "roles/gpu/tasks/main.yml": """
        - name: etc dir
          file: {path: "{{ root }}/etc", state: directory}
        - name: gpu driver
          copy: {dest: "{{ root }}/etc/gpu-driver", content: "535\\n"}
        """,
    "docs/README.md": "node configuration\n",
}
ROLES = {k: textwrap.dedent(v).lstrip("\n") for k, v in ROLES.items()}
