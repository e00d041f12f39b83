"""A static model of an Ansible playbook tree read from one commit (YAML only, no Ansible import).

flatten() follows the playbook the way Ansible would: import_playbook, plays, roles (with their
meta dependencies), import/include_tasks, import/include_role and blocks, and records for every
task the file it is written in, the play's `hosts:` pattern, its effective tags (play, role,
block and static-import tags are inherited; a dynamic include's own tags are not, only its
`apply: {tags}`) and a fingerprint of the task together with everything around it that shapes it.
Two commits' task lists compared by fingerprint give the tasks a commit changed.
"""
from __future__ import annotations

import functools
import hashlib
import json
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import yaml

from ..model import ChangeClass

Reader = Callable[[str], "bytes | None"]

_TASK_LISTS = ("pre_tasks", "tasks", "post_tasks", "handlers")
_PLAY_CHILDREN = frozenset(_TASK_LISTS + ("roles",))
_BLOCK_CHILDREN = ("block", "rescue", "always")


class AnsibleYAMLError(ValueError):
    """A file of the tree is not valid YAML (or not the shape Ansible needs)."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that accepts Ansible's own tags (!vault, !unsafe) instead of failing on them."""


def _opaque(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    return f"{node.tag}:{loader.construct_scalar(node)}" if isinstance(node, yaml.ScalarNode) else node.tag


for _tag in ("!vault", "!unsafe", "!vault-encrypted"):
    _Loader.add_constructor(_tag, _opaque)


def parse_yaml(data: bytes, path: str) -> Any:
    try:
        return yaml.load(data.decode("utf-8"), Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except UnicodeDecodeError:
        raise AnsibleYAMLError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise AnsibleYAMLError(f"{path}: {where}invalid YAML: {getattr(exc, 'problem', None) or exc}") from None


Tags = "frozenset[str] | None"  # None: cannot be determined (templated)


def parse_tags(value: Any) -> frozenset[str] | None:
    if value is None:
        return frozenset()
    items = value if isinstance(value, list) else [value]
    out: set[str] = set()
    for item in items:
        text = str(item)
        if "{{" in text or "{%" in text:
            return None
        out.update(t.strip() for t in text.split(",") if t.strip())
    return frozenset(out)


def _join_tags(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    return None if a is None or b is None else a | b


def _fp(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class TaskRef:
    file: str  # repository path of the file the task is written in
    name: str
    role: str  # role directory ("" outside roles)
    hosts: str  # the play's hosts pattern
    tags: frozenset[str] | None  # effective tags; None: cannot be determined
    fingerprint: str
    text: str  # the task as JSON, to find the templates/files it mentions

    def describe(self) -> str:
        return f"{self.file}: task '{self.name}'"


@dataclass
class Tree:
    tasks: list[TaskRef] = field(default_factory=list)
    files: set[str] = field(default_factory=set)  # every file of the tree that was read
    roles: dict[str, set[str]] = field(default_factory=dict)  # role dir -> hosts patterns using it
    unresolved: list[str] = field(default_factory=list)  # references that could not be followed
    hosts_patterns: set[str] = field(default_factory=set)
    vars_files: dict[str, list[TaskRef]] = field(default_factory=dict)  # play vars_files -> its tasks

    def role_tasks(self, role_dir: str) -> list[TaskRef]:
        return [t for t in self.tasks if t.role == role_dir]

    def fingerprints(self) -> Counter:
        return Counter(t.fingerprint for t in self.tasks)


def changed_tasks(old: Tree, new: Tree) -> list[TaskRef]:
    """Tasks added or altered by the commit (from `new`) and tasks removed (from `old`)."""
    old_fp, new_fp = old.fingerprints(), new.fingerprints()
    extra_new, extra_old = new_fp - old_fp, old_fp - new_fp
    out = []
    for tree, extra in ((new, extra_new), (old, extra_old)):
        for t in tree.tasks:
            if extra.get(t.fingerprint, 0) > 0:
                extra[t.fingerprint] -= 1
                out.append(t)
    return out


@dataclass(frozen=True)
class _Ctx:
    hosts: str
    tags: frozenset[str] | None
    fp: str
    role: str = ""
    role_name: str = ""

    def under(self, header: Any, tags: frozenset[str] | None, **kw) -> "_Ctx":
        return _Ctx(kw.get("hosts", self.hosts), _join_tags(self.tags, tags), _fp(self.fp, header),
                    kw.get("role", self.role), kw.get("role_name", self.role_name))


_ACTION_PREFIXES = ("ansible.builtin.", "ansible.legacy.")


def _action(task: dict, names: tuple[str, ...]) -> tuple[str, Any] | None:
    for key, value in task.items():
        short = key
        for p in _ACTION_PREFIXES:
            short = short.removeprefix(p)
        if short in names:
            return short, value
    return None


def _templated(text: Any) -> bool:
    return "{{" in str(text) or "{%" in str(text)


class _Walker:
    def __init__(self, read: Reader, max_depth: int = 30):
        self.read = functools.lru_cache(maxsize=None)(read)  # role lookup probes many paths
        self.tree = Tree()
        self.max_depth = max_depth
        self._cache: dict[str, Any] = {}

    # -- files ---------------------------------------------------------------------------------
    def load(self, path: str) -> Any:
        if path not in self._cache:
            raw = self.read(path)
            self._cache[path] = None if raw is None else parse_yaml(raw, path)
            if raw is not None:
                self.tree.files.add(path)
        return self._cache[path]

    def exists(self, path: str) -> bool:
        return path in self._cache and self._cache[path] is not None or self.read(path) is not None

    def first(self, candidates: list[str]) -> str | None:
        return next((c for c in candidates if self.read(c) is not None), None)

    # -- playbooks -----------------------------------------------------------------------------
    def playbook(self, path: str, tags: frozenset[str] | None = frozenset(), depth: int = 0) -> None:
        data = self.load(path)
        if data is None:
            raise AnsibleYAMLError(f"{path}: playbook not found")
        if not isinstance(data, list):
            raise AnsibleYAMLError(f"{path}: a playbook must be a list of plays")
        base = posixpath.dirname(path)
        for i, entry in enumerate(data):
            if not isinstance(entry, dict):
                raise AnsibleYAMLError(f"{path}: play {i + 1} is not a mapping")
            imp = _action(entry, ("import_playbook",))
            if imp is not None:
                target = imp[1]
                if _templated(target) or depth >= self.max_depth:
                    self.tree.unresolved.append(f"{path}: import_playbook {target}")
                    continue
                self.playbook(posixpath.normpath(posixpath.join(base, str(target))),
                              _join_tags(tags, parse_tags(entry.get("tags"))), depth + 1)
                continue
            self.play(entry, path, base, tags)

    def play(self, play: dict, path: str, base: str, tags: frozenset[str] | None) -> None:
        hosts = play.get("hosts", "")
        pattern = ",".join(map(str, hosts)) if isinstance(hosts, list) else str(hosts)
        self.tree.hosts_patterns.add(pattern)
        header = {k: v for k, v in play.items() if k not in _PLAY_CHILDREN}
        ctx = _Ctx(pattern, tags, _fp(path)).under(header, parse_tags(play.get("tags")))
        first = len(self.tree.tasks)
        self.tasks(play.get("pre_tasks"), path, base, ctx)
        for entry in play.get("roles") or []:
            if isinstance(entry, str):
                entry = {"role": entry}
            if not isinstance(entry, dict):
                raise AnsibleYAMLError(f"{path}: a roles entry must be a name or a mapping")
            name = entry.get("role", entry.get("name"))
            self.role(str(name), base, ctx.under({"role": entry}, parse_tags(entry.get("tags"))), path)
        for key in ("tasks", "post_tasks", "handlers"):
            self.tasks(play.get(key), path, base, ctx)
        vars_files = play.get("vars_files") or []
        for vf in vars_files if isinstance(vars_files, list) else [vars_files]:
            for name in vf if isinstance(vf, list) else [vf]:  # a list entry: first found wins
                key = posixpath.normpath(posixpath.join(base, str(name)))
                self.tree.vars_files.setdefault(key, []).extend(self.tree.tasks[first:])

    # -- roles ---------------------------------------------------------------------------------
    def role_dir(self, name: str, base: str) -> str | None:
        for cand in (posixpath.join(base, "roles", name), posixpath.join(base, name), posixpath.join("roles", name)):
            cand = posixpath.normpath(cand)
            if any(self.read(f"{cand}/{d}/main.{ext}") is not None
                   for d in ("tasks", "meta", "handlers", "defaults", "vars") for ext in ("yml", "yaml")):
                return cand
        return None

    def role(self, name: str, base: str, ctx: _Ctx, where: str, tasks_from: str = "main",
             depth: int = 0) -> None:
        if _templated(name) or depth >= self.max_depth:
            self.tree.unresolved.append(f"{where}: role {name}")
            return
        rdir = self.role_dir(name, base)
        if rdir is None:
            if name.count(".") < 2:  # a collection role (ns.coll.role) lives outside the repository
                self.tree.unresolved.append(f"{where}: role {name} not found")
            return
        self.tree.roles.setdefault(rdir, set()).add(ctx.hosts)
        rctx = _Ctx(ctx.hosts, ctx.tags, ctx.fp, rdir, name)
        meta = self.load_first(f"{rdir}/meta/main")
        if isinstance(meta, dict):
            for dep in meta.get("dependencies") or []:
                dep = {"role": dep} if isinstance(dep, str) else dep
                if isinstance(dep, dict):
                    dname = str(dep.get("role", dep.get("name")))
                    self.role(dname, base, rctx.under({"dep": dep}, parse_tags(dep.get("tags"))),
                              f"{rdir}/meta/main.yml", depth=depth + 1)
        for sub, entry in (("tasks", tasks_from), ("handlers", "main")):
            path = self.first([f"{rdir}/{sub}/{entry}.yml", f"{rdir}/{sub}/{entry}.yaml", f"{rdir}/{sub}/{entry}"])
            if path is not None:
                self.tasks(self.load(path), path, base, rctx, depth=depth + 1)

    def load_first(self, stem: str) -> Any:
        path = self.first([f"{stem}.yml", f"{stem}.yaml"])
        return self.load(path) if path else None

    # -- tasks ---------------------------------------------------------------------------------
    def tasks(self, items: Any, path: str, base: str, ctx: _Ctx, depth: int = 0) -> None:
        if items is None:
            return
        if not isinstance(items, list):
            raise AnsibleYAMLError(f"{path}: expected a list of tasks")
        for task in items:
            if not isinstance(task, dict):
                raise AnsibleYAMLError(f"{path}: a task must be a mapping, got {type(task).__name__}")
            self.task(task, path, base, ctx, depth)

    def task(self, task: dict, path: str, base: str, ctx: _Ctx, depth: int) -> None:
        own = parse_tags(task.get("tags"))
        if any(k in task for k in _BLOCK_CHILDREN):
            header = {k: v for k, v in task.items() if k not in _BLOCK_CHILDREN}
            bctx = ctx.under(header, own)
            for key in _BLOCK_CHILDREN:
                self.tasks(task.get(key), path, base, bctx, depth)
            return
        inc = _action(task, ("import_tasks", "include_tasks", "include"))
        if inc is not None:
            kind, arg = inc
            target = arg.get("file") if isinstance(arg, dict) else arg
            static = kind == "import_tasks"
            self.add(task, path, ctx, own)  # the include statement itself is a task too
            inner = self.inner_ctx(task, ctx, own, static, arg)
            self.include_file(str(target), path, base, inner, depth)
            return
        rinc = _action(task, ("import_role", "include_role"))
        if rinc is not None:
            kind, arg = rinc
            arg = arg if isinstance(arg, dict) else {}
            self.add(task, path, ctx, own)
            inner = self.inner_ctx(task, ctx, own, kind == "import_role", arg)
            self.role(str(arg.get("name")), base, inner, path, str(arg.get("tasks_from", "main")), depth + 1)
            return
        self.add(task, path, ctx, own)

    def inner_ctx(self, task: dict, ctx: _Ctx, own, static: bool, arg: Any) -> _Ctx:
        if static:  # import_*: the statement's tags reach every imported task
            return ctx.under(task, own)
        applied = parse_tags(arg.get("apply", {}).get("tags")) if isinstance(arg, dict) and isinstance(arg.get("apply"), dict) else frozenset()
        return ctx.under(task, applied)

    def include_file(self, target: str, path: str, base: str, ctx: _Ctx, depth: int) -> None:
        if _templated(target) or depth >= self.max_depth:
            self.tree.unresolved.append(f"{path}: tasks file {target}")
            return
        cands = [posixpath.join(posixpath.dirname(path), target)]
        if ctx.role:
            cands.append(posixpath.join(ctx.role, "tasks", target))
        cands.append(posixpath.join(base, target))
        found = self.first([posixpath.normpath(c) for c in cands])
        if found is None:
            self.tree.unresolved.append(f"{path}: tasks file {target} not found")
            return
        self.tasks(self.load(found), found, base, ctx, depth + 1)

    def add(self, task: dict, path: str, ctx: _Ctx, own) -> None:
        text = json.dumps(task, sort_keys=True, default=str)
        name = str(task.get("name") or next((k for k in task if k not in ("tags", "when", "become")), "?"))
        self.tree.tasks.append(TaskRef(path, name, ctx.role, ctx.hosts, _join_tags(ctx.tags, own),
                                       _fp(ctx.fp, text), text))


def flatten(read: Reader, playbook: str) -> Tree:
    """The tree of `playbook` as `read` (path -> bytes | None) sees it. Raises AnsibleYAMLError."""
    walker = _Walker(read)
    walker.playbook(posixpath.normpath(playbook))
    return walker.tree


@dataclass(frozen=True)
class TagNames:
    """The site's tag names; a task carrying neither (or tags nobody can read) is DRAIN."""

    hot: str = "hotchange"
    drain: str = "drainchange"

    def classify(self, tags: frozenset[str] | None) -> ChangeClass:
        if tags is None or self.drain in tags or self.hot not in tags:
            return ChangeClass.DRAIN
        return ChangeClass.HOT

    def explain(self, tags: frozenset[str] | None) -> str:
        if tags is None:
            return "tags cannot be determined"
        known = sorted(tags & {self.hot, self.drain})
        return ",".join(known) if known else "no hotchange/drainchange tag".replace(
            "hotchange", self.hot).replace("drainchange", self.drain)
