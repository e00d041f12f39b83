"""The "tags" detector: which tasks, roles and plays a commit touches, and how they are tagged.

From the changed files it finds the tasks affected (by comparing the two commits' playbook trees
task by task, see ansible_tree), the roles whose templates/files/defaults changed, the groups and
hosts whose variables or inventory entries changed; each affected task's effective tags give its
class (drain tag: DRAIN, hot tag: HOT, anything else or unreadable: DRAIN) for the hosts its play
applies to, as Ansible's own inventory resolves the play's `hosts:` pattern.
"""
from __future__ import annotations

import fnmatch
import posixpath
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from ..adapters.ansible_inventory import InventoryError, InventoryView, load_inventory
from ..adapters.ansible_run import AnsibleOptions, options_for, syntax_check, tag_names
from ..model import ChangeClass, DetectorVerdict
from ..nodeset import fold
from ..ports import DetectContext, SourceError
from .ansible_tree import AnsibleYAMLError, TagNames, TaskRef, Tree, changed_tasks, flatten, parse_yaml

_VARS_DIR = re.compile(r"(?:^|/)(group_vars|host_vars)/([^/]+?)(?:\.(?:ya?ml|json))?(?:/|$)")
_ROLE_FILE = re.compile(r"^(?P<role>(?:.*/)?roles/[^/]+)/(?P<sub>[^/]+)/(?P<rest>.+)$")
_ANSIBLE_INFRA = ("ansible.cfg", "requirements.yml", "requirements.yaml", "collections/", "library/",
                  "module_utils/", "filter_plugins/", "lookup_plugins/", "callback_plugins/",
                  "action_plugins/", "vars_plugins/", "inventory_plugins/")
_NOTE_LIMIT = 40


@dataclass(frozen=True)
class Finding:
    """One reason for a class: `hosts` None means every host of the inventory."""

    what: str
    klass: ChangeClass
    hosts: tuple[str, ...] | None
    why: str = ""


class TagsDetector:
    name = "tags"

    def __init__(self, opts: AnsibleOptions, tags: TagNames = TagNames(), *, syntax: bool = True,
                 ignore: Sequence[str] = (), outside: str = "drain"):
        self.opts = opts
        self.tags = tags
        self.syntax = syntax
        self.ignore = tuple(ignore)
        self.outside = outside

    # -- entry point -----------------------------------------------------------------------------
    def detect(self, ctx: DetectContext) -> DetectorVerdict:
        paths = [p for p in ctx.changed_paths if not self._ignored(p)]
        notes = [f"ignored (left to other detectors): {len(ctx.changed_paths) - len(paths)} file(s)"] \
            if len(paths) != len(ctx.changed_paths) else []
        if not paths and ctx.old is not None:
            return DetectorVerdict(self.name, notes=tuple(notes + ["no Ansible file changed"]))
        try:
            findings, more = self._findings(ctx, paths)
        except (AnsibleYAMLError, InventoryError, SourceError) as exc:
            return DetectorVerdict(self.name, error=str(exc), notes=tuple(notes))
        except _Invalid as exc:
            return DetectorVerdict(self.name, error=str(exc), notes=tuple(notes))
        return self._verdict(findings, ctx.managed, notes + more)

    def _ignored(self, path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, g) for g in self.ignore)

    # -- analysis --------------------------------------------------------------------------------
    def _findings(self, ctx: DetectContext, paths: list[str]) -> tuple[list[Finding], list[str]]:
        notes: list[str] = []
        for path in paths:  # any changed YAML that does not parse stops the commit
            if path.endswith((".yml", ".yaml")):
                raw = ctx.source.read(ctx.new, path)
                if raw is not None:
                    parse_yaml(raw, path)
        new = flatten(lambda p: ctx.source.read(ctx.new, p), self.opts.playbook)
        old = Tree()
        if ctx.old is not None:
            try:
                old = flatten(lambda p: ctx.source.read(ctx.old, p), self.opts.playbook)
            except AnsibleYAMLError as exc:  # compare with nothing: every task counts as changed
                notes.append(f"old commit's playbook unreadable ({exc}): every task counts as changed")
        workdir = ctx.source.checkout(ctx.new)
        if self.syntax:
            err = syntax_check(self.opts, workdir, timeout=self.opts.timeout)
            if err:
                raise _Invalid(f"syntax check failed: {err}")
        inv = load_inventory(self.opts.inventory, workdir, new.hosts_patterns | old.hosts_patterns)
        for pattern, why in inv.errors.items():
            notes.append(f"hosts pattern {pattern!r} cannot be resolved ({why}): taken as every host")
        if new.unresolved:
            notes.append("not followed: " + "; ".join(new.unresolved[:5]))

        changed = changed_tasks(old, new)
        findings = [self._task_finding(t, inv) for t in changed]
        touched = {t.file for t in changed}
        for path in paths:
            if path in new.files or path in old.files:  # its tasks are among the changed ones
                if path not in touched:
                    findings.append(Finding(path, ChangeClass.GOOD, (), "no task changed"))
                continue
            findings.extend(self._file_findings(ctx, path, new, old, inv))
        return findings, notes

    def _task_finding(self, task: TaskRef, inv: InventoryView, via: str = "") -> Finding:
        klass = self.tags.classify(task.tags)
        what = task.describe() + (f" (uses {via})" if via else "")
        return Finding(what, klass, inv.match(task.hosts), self.tags.explain(task.tags))

    def _tasks_finding(self, what: str, tasks: Iterable[TaskRef], inv: InventoryView) -> list[Finding]:
        """Each task once, named after the changed file that reaches it."""
        return [self._task_finding(t, inv, via=what) for t in _unique(tasks)]

    def _file_findings(self, ctx: DetectContext, path: str, new: Tree, old: Tree,
                       inv: InventoryView) -> list[Finding]:
        m = _VARS_DIR.search(path)
        if m:
            kind, name = m.groups()
            hosts = inv.group(name) if kind == "group_vars" else ((name,) if name in inv.hosts else ())
            return [Finding(path, ChangeClass.DRAIN, hosts, f"{kind} of {name}: tag cannot be determined")]
        if path in new.vars_files or path in old.vars_files:
            return self._tasks_finding(path, new.vars_files.get(path) or old.vars_files.get(path, []), inv)
        if self._is_inventory(path):
            return [self._inventory_finding(ctx, path, inv)]
        m = _ROLE_FILE.match(path)
        if m:
            return self._role_file_findings(path, m["role"], m["sub"], m["rest"], new, old, inv)
        mentioned = [t for t in new.tasks if _mentions(t, path)]
        if mentioned:
            return self._tasks_finding(path, mentioned, inv)
        if path.startswith(_ANSIBLE_INFRA) or posixpath.basename(path) in _ANSIBLE_INFRA:
            return [Finding(path, ChangeClass.DRAIN, None, "Ansible configuration: affects every play")]
        if new.unresolved:
            return [Finding(path, ChangeClass.DRAIN, None,
                            "not reached by the playbook, which has references that cannot be followed")]
        if self.outside == "drain":
            return [Finding(path, ChangeClass.DRAIN, None, "not part of the playbook: tag cannot be determined")]
        return [Finding(path, ChangeClass.GOOD, (), "not part of the playbook (outside: ignore)")]

    def _role_file_findings(self, path, role, sub, rest, new: Tree, old: Tree, inv) -> list[Finding]:
        tree = new if role in new.roles else old if role in old.roles else None
        if tree is None:
            if new.unresolved:
                return [Finding(path, ChangeClass.DRAIN, None,
                                f"role {role} may be used through a reference that cannot be followed")]
            return [Finding(path, ChangeClass.GOOD, (), f"role {role} is not used by the playbook")]
        tasks = tree.role_tasks(role)
        if sub in ("templates", "files"):
            users = [t for t in tasks if _mentions(t, rest)]
            tasks = users or tasks
        elif sub in ("tasks", "handlers") and not new.unresolved:
            return [Finding(path, ChangeClass.GOOD, (), "task file not used by the playbook")]
        if not tasks:
            return [Finding(path, ChangeClass.DRAIN, None, f"role {role} has no task to take a tag from")]
        return self._tasks_finding(path, tasks, inv)

    def _is_inventory(self, path: str) -> bool:
        inv = posixpath.normpath(self.opts.inventory)
        return path == inv or path.startswith(inv.rstrip("/") + "/")

    def _inventory_finding(self, ctx: DetectContext, path: str, inv: InventoryView) -> Finding:
        """Hosts whose groups or inventory variables changed: DRAIN (a new group brings new roles)."""
        if ctx.old is None:
            return Finding(path, ChangeClass.DRAIN, None, "inventory (no base commit)")
        try:
            before = load_inventory(self.opts.inventory, ctx.source.checkout(ctx.old))
        except InventoryError as exc:
            return Finding(path, ChangeClass.DRAIN, None, f"old inventory unreadable: {exc}")
        changed = tuple(h for h, fp in inv.hosts.items() if before.hosts.get(h) != fp)
        return Finding(path, ChangeClass.DRAIN, changed, "inventory groups or variables changed")

    # -- verdict ---------------------------------------------------------------------------------
    def _verdict(self, findings: list[Finding], managed: Sequence[str], notes: list[str]) -> DetectorVerdict:
        managed_set = set(managed)
        classes: dict[str, ChangeClass] = {}
        lines = []
        for f in findings:
            hosts = managed_set if f.hosts is None else managed_set & set(f.hosts)
            for h in hosts:
                classes[h] = max(classes.get(h, ChangeClass.GOOD), f.klass)
            if f.klass is ChangeClass.GOOD:
                lines.append(f"{f.what}: good ({f.why})")
                continue
            target = fold(sorted(hosts)) or "no managed node"
            lines.append(f"{f.what}: {f.klass.label} on {target}" + (f" ({f.why})" if f.why else ""))
        lines = sorted(set(lines))
        if len(lines) > _NOTE_LIMIT:
            lines = lines[:_NOTE_LIMIT] + [f"... and {len(lines) - _NOTE_LIMIT} more"]
        return DetectorVerdict(self.name, classes=classes, notes=tuple(notes + lines))


class _Invalid(Exception):
    """The new commit is not a valid playbook (the syntax check said so)."""


def _mentions(task: TaskRef, path: str) -> bool:
    """Does the task name this file (`src: motd.j2`, `src: files/motd.j2`)? Cheap and conservative."""
    base = posixpath.basename(path)
    return bool(base) and (path in task.text or re.search(rf"(?<![\w.-]){re.escape(base)}(?![\w.-])", task.text) is not None)


def _unique(tasks: Iterable[TaskRef]) -> list[TaskRef]:
    seen, out = set(), []
    for t in tasks:
        if t.fingerprint not in seen:
            seen.add(t.fingerprint)
            out.append(t)
    return out


def from_settings(settings, deps) -> TagsDetector:
    ignore = list(settings.ignore)
    # The image manifest belongs to its own detector: do not call it an unknown (DRAIN) file here.
    ignore += [d.path for d in deps.settings.detectors if getattr(d, "type", "") == "image_manifest"]
    return TagsDetector(options_for(deps.settings, settings), tag_names(deps.settings),
                        syntax=settings.syntax_check, ignore=ignore, outside=settings.outside)
