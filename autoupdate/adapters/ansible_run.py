"""Runs ansible-playbook through autoupdate.proc and reads per-host results from its event stream.

The events come from our callback plugin (adapters/ansible_callback/autoupdate_events.py), one
JSON line per task result plus the final stats, never from ansible-playbook's text output.
Shared by the ansible applier, the ansible_check detector and the syntax check.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

from .. import proc

CALLBACK_DIR = Path(__file__).with_name("ansible_callback")


@dataclass(frozen=True)
class AnsibleOptions:
    """What every ansible-playbook run needs; built from the `apply.ansible` settings."""

    playbook: str = "site.yml"  # relative to the checkout, or absolute
    inventory: str = "inventory"  # relative to the checkout, or absolute
    forks: int = 10
    vault_password_file: str = ""
    extra_args: tuple[str, ...] = ()
    timeout: float = 3600.0
    program: str = ""  # ansible-playbook; empty: next to this Python, else PATH

    @classmethod
    def from_settings(cls, s) -> "AnsibleOptions":
        return cls(playbook=s.playbook, inventory=s.inventory, forks=s.forks,
                   vault_password_file=s.vault_password_file, extra_args=tuple(s.extra_args),
                   timeout=s.timeout, program=s.ansible_playbook)


@dataclass(frozen=True)
class TaskEvent:
    host: str
    task: str
    status: str  # ok | changed | failed | unreachable | skipped
    tags: frozenset[str] = frozenset()
    role: str = ""
    play: str = ""
    changed: bool | None = None
    msg: str = ""
    ignored: bool = False

    @property
    def fatal(self) -> bool:
        return self.status == "unreachable" or (self.status == "failed" and not self.ignored)

    @property
    def may_change(self) -> bool:
        """Changed, or Ansible hid whether it did (no_log): both count as a change."""
        return self.status == "changed" or (self.status == "ok" and self.changed is None)

    def label(self) -> str:
        return f"{self.role} : {self.task}" if self.role and not self.task.startswith(self.role) else self.task


@dataclass
class HostOutcome:
    host: str
    events: list[TaskEvent] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    @property
    def unreachable(self) -> bool:
        return bool(self.stats.get("unreachable")) or any(e.status == "unreachable" for e in self.events)

    @property
    def failed(self) -> bool:
        return bool(self.stats.get("failures")) or any(e.fatal for e in self.events)

    @property
    def ok(self) -> bool:
        return not (self.unreachable or self.failed)

    @property
    def changed_tasks(self) -> list[TaskEvent]:
        return [e for e in self.events if e.may_change]

    def failure(self) -> str:
        """'task "X" failed: msg' for the first fatal event (what a human needs in a reason)."""
        bad = next((e for e in self.events if e.fatal), None)
        if bad is None:
            return "unreachable" if self.unreachable else ("failed" if self.failed else "")
        what = "unreachable at" if bad.status == "unreachable" else "failed:"
        return f"task '{bad.label()}' {what} {bad.msg}".strip() if bad.msg else f"task '{bad.label()}' {bad.status}"


@dataclass
class PlaybookRun:
    returncode: int
    hosts: dict[str, HostOutcome]
    seconds: float
    brief: str  # last line of stderr/stdout, for errors that happen before any host runs
    saw_stats: bool  # the play ran to its end (the stats event was written)

    def outcome(self, host: str) -> HostOutcome | None:
        return self.hosts.get(host)


class AnsibleError(Exception):
    """ansible-playbook could not run (not found, timed out, vault or parse error before any host)."""


def ansible_playbook_program(configured: str = "") -> str:
    if configured:
        return configured
    # Prefer the one installed with this Python: a pyenv shim or an older system copy on PATH
    # could be a different ansible-core.
    here = Path(sys.executable).with_name("ansible-playbook")
    if here.exists():
        return str(here)
    return shutil.which("ansible-playbook") or "ansible-playbook"


def _in(workdir: Path, path: str) -> str:
    return path if os.path.isabs(path) else str(workdir / path)


def ansible_env(events_file: str = "") -> dict[str, str]:
    extra = os.environ.get("ANSIBLE_CALLBACK_PLUGINS", "")
    env = {
        "ANSIBLE_CALLBACK_PLUGINS": f"{CALLBACK_DIR}:{extra}" if extra else str(CALLBACK_DIR),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "PYTHONUNBUFFERED": "1",
    }
    if events_file:
        env["AUTOUPDATE_ANSIBLE_EVENTS"] = events_file
    return env


def base_argv(opts: AnsibleOptions, workdir: Path) -> list[str]:
    argv = [ansible_playbook_program(opts.program), "-i", _in(workdir, opts.inventory)]
    if opts.vault_password_file:
        argv += ["--vault-password-file", opts.vault_password_file]
    return argv


def read_events(path: Path) -> tuple[dict[str, HostOutcome], bool]:
    hosts: dict[str, HostOutcome] = {}
    saw_stats = False
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return hosts, False
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut short by a killed run: the rest still counts
        if rec.get("event") == "task":
            ev = TaskEvent(host=rec["host"], task=rec.get("task", ""), status=rec.get("status", ""),
                           tags=frozenset(rec.get("tags") or ()), role=rec.get("role", ""),
                           play=rec.get("play", ""), changed=rec.get("changed"),
                           msg=rec.get("msg", ""), ignored=bool(rec.get("ignored")))
            hosts.setdefault(ev.host, HostOutcome(ev.host)).events.append(ev)
        elif rec.get("event") == "stats":
            saw_stats = True
            for host, st in (rec.get("hosts") or {}).items():
                hosts.setdefault(host, HostOutcome(host)).stats = dict(st)
    return hosts, saw_stats


def run_playbook(opts: AnsibleOptions, workdir: Path, limit: Iterable[str], *, check: bool = False,
                 tags: Sequence[str] = (), timeout: float | None = None) -> PlaybookRun:
    """ansible-playbook on `workdir` (a checkout) limited to `limit`; raises AnsibleError."""
    limit = sorted(set(limit))
    if not limit:
        return PlaybookRun(0, {}, 0.0, "", True)
    with tempfile.TemporaryDirectory(prefix="au-ansible-") as tmp:
        events = Path(tmp) / "events.jsonl"
        argv = base_argv(opts, workdir) + [
            "--forks", str(opts.forks), "--limit", ",".join(limit)]
        if check:
            argv += ["--check", "--diff"]
        if tags:
            argv += ["--tags", ",".join(tags)]
        argv += [*opts.extra_args, _in(workdir, opts.playbook)]
        try:
            res = proc.run(argv, timeout=timeout or opts.timeout, env=ansible_env(str(events)),
                           cwd=str(workdir))
        except proc.CommandError as exc:
            raise AnsibleError(str(exc)) from None
        hosts, saw_stats = read_events(events)
    return PlaybookRun(res.returncode, hosts, res.seconds, _brief(res), saw_stats)


def _brief(res: proc.Result) -> str:
    """The error Ansible printed, without the noise: the first '[ERROR]'/'ERROR!' line, else the last line."""
    lines = [ln.strip() for ln in (res.stderr + "\n" + res.stdout).splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith(("[ERROR]", "ERROR!")):
            return ln.removeprefix("[ERROR]: ").removeprefix("ERROR! ")[:400]
    return res.brief(400)


def syntax_check(opts: AnsibleOptions, workdir: Path, timeout: float = 300.0) -> str | None:
    """None if `ansible-playbook --syntax-check` accepts the playbook, else Ansible's reason."""
    argv = base_argv(opts, workdir) + ["--syntax-check", *opts.extra_args, _in(workdir, opts.playbook)]
    try:
        res = proc.run(argv, timeout=timeout, env=ansible_env(), cwd=str(workdir))
    except proc.CommandError as exc:
        return str(exc)
    if res.ok:
        return None
    return f"{opts.playbook}: {_brief(res)}"


def options_for(settings, detector=None) -> AnsibleOptions:
    """apply.ansible options, with a detector's own playbook/inventory/timeout when it sets them."""
    opts = AnsibleOptions.from_settings(settings.apply.ansible)
    if detector is not None:
        opts = replace(opts, playbook=getattr(detector, "playbook", "") or opts.playbook,
                       inventory=getattr(detector, "inventory", "") or opts.inventory,
                       timeout=getattr(detector, "timeout", None) or opts.timeout)
    return opts


def tag_names(settings):
    from ..detect.ansible_tree import TagNames
    t = settings.apply.ansible.tags
    return TagNames(hot=t.hot, drain=t.drain)
