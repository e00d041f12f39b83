"""The first detector: path globs in the configuration -> class and target nodes."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Sequence

import yaml

from ..model import ChangeClass, DetectorVerdict
from ..nodeset import HostlistError, expand
from ..ports import DetectContext


@dataclass(frozen=True)
class Rule:
    glob: str
    klass: ChangeClass
    nodes: tuple[str, ...] | None  # None: every managed node

    def matches(self, path: str) -> bool:
        # fnmatch-style: "*" also crosses "/", so "roles/ntp/*" covers the whole role.
        return fnmatch.fnmatchcase(path, self.glob)


def parse_rules(items: object, where: str) -> list[Rule]:
    """Rules from YAML data (the config, or the repository's rules file)."""
    if not isinstance(items, list):
        raise ValueError(f"{where}: expected a list of rules")
    rules = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "glob" not in item or "class" not in item:
            raise ValueError(f"{where}[{i}]: a rule needs 'glob' and 'class'")
        try:
            nodes = tuple(expand(item["nodes"])) if item.get("nodes") is not None else None
            rules.append(Rule(str(item["glob"]), ChangeClass.parse(item["class"]), nodes))
        except (ValueError, HostlistError) as exc:
            raise ValueError(f"{where}[{i}]: {exc}") from None
    return rules


class PathRules:
    """First matching rule wins per changed file; a file no rule matches is DRAIN for all."""

    name = "path_rules"

    def __init__(self, rules: Sequence[Rule], rules_file: str = ""):
        self.rules = list(rules)
        self.rules_file = rules_file

    def _rules_for(self, ctx: DetectContext) -> list[Rule]:
        if not self.rules_file:
            return self.rules
        raw = ctx.source.read(ctx.new, self.rules_file)
        if raw is None:
            raise ValueError(f"rules file {self.rules_file} not found in {ctx.new[:12]}")
        try:
            data = yaml.safe_load(raw.decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ValueError(f"rules file {self.rules_file} is not valid YAML: {exc}") from None
        return self.rules + parse_rules(data, self.rules_file)

    def detect(self, ctx: DetectContext) -> DetectorVerdict:
        try:
            rules = self._rules_for(ctx)
        except ValueError as exc:
            return DetectorVerdict(self.name, error=str(exc))
        managed = set(ctx.managed)
        classes: dict[str, ChangeClass] = {}
        notes = []
        for path in ctx.changed_paths:
            rule = next((r for r in rules if r.matches(path)), None)
            klass = rule.klass if rule else ChangeClass.DRAIN
            targets = managed if rule is None or rule.nodes is None else managed & set(rule.nodes)
            notes.append(f"{path}: {klass.label}" + ("" if rule else " (no rule matches)"))
            for node in targets:
                classes[node] = max(classes.get(node, ChangeClass.GOOD), klass)
        return DetectorVerdict(self.name, classes=classes, notes=tuple(notes))


def from_settings(settings, deps) -> PathRules:
    rules = [Rule(r.glob, r.klass, tuple(expand(r.nodes)) if r.nodes is not None else None)
             for r in settings.rules]
    return PathRules(rules, settings.rules_file)
