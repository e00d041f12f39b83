"""Small built-in adapters: no-op and command appliers, the no-op rebooter, the log notifier,
the health-check command, and the lists of checks/notifiers a configuration asks for."""
from __future__ import annotations

from typing import Mapping, Sequence

import structlog

from .. import proc
from ..model import ChangeClass, ClusterSnapshot, Event, NodeAction, NodeRecord, Revision
from ..nodeset import fold
from ..ports import ApplyResult, RebootStatus

log = structlog.get_logger("autoupdate.notify")


def expand_argv(template: Sequence[str], **values: str) -> list[str]:
    """Replace {name} placeholders inside each argument; never joins into a shell string."""
    out = []
    for arg in template:
        for key, value in values.items():
            arg = arg.replace("{" + key + "}", value)
        out.append(arg)
    return out


class NoApplier:
    """Nothing to apply (e.g. the reboot itself picks up the change)."""

    def apply(self, nodes, target, klass, actions) -> dict[str, ApplyResult]:
        return {n: ApplyResult(True, "nothing to apply") for n in nodes}


class CommandApplier:
    """Runs a site command per node: argv with {node} {nodes} {target} {class} replaced."""

    def __init__(self, argv: Sequence[str], timeout: float):
        self.argv = list(argv)
        self.timeout = timeout

    def apply(self, nodes: Sequence[str], target: Revision, klass: ChangeClass,
              actions: Mapping[str, Sequence[NodeAction]]) -> dict[str, ApplyResult]:
        results = {}
        for node in nodes:
            argv = expand_argv(self.argv, node=node, nodes=fold(nodes), target=target.sha,
                               **{"class": klass.label})
            try:
                res = proc.run(argv, timeout=self.timeout)
                results[node] = ApplyResult(res.ok, "" if res.ok else f"{argv[0]}: {res.brief()}")
            except proc.CommandError as exc:
                results[node] = ApplyResult(False, str(exc))
        return results


class NoRebooter:
    """reboot.strategy none: the change needs the node drained but no reboot."""

    def start(self, record: NodeRecord, snapshot: ClusterSnapshot) -> None:
        pass

    def poll(self, record: NodeRecord, snapshot: ClusterSnapshot, now: float) -> RebootStatus:
        return RebootStatus("done")


class HealthCommand:
    """verify.health_check: an argv (e.g. NHC) run per node; exit 0 means healthy."""

    def __init__(self, argv: Sequence[str], timeout: float):
        self.argv = list(argv)
        self.timeout = timeout

    def check(self, record: NodeRecord, snapshot: ClusterSnapshot) -> str | None:
        argv = expand_argv(self.argv, node=record.node, target=record.target)
        try:
            res = proc.run(argv, timeout=self.timeout)
        except proc.CommandError as exc:
            return f"health check: {exc}"
        return None if res.ok else f"health check {argv[0]} failed: {res.brief()}"


class LogNotifier:
    def notify(self, event: Event) -> None:
        log.info("event", kind=event.kind, message=event.message, rollout=event.rollout_id)


def no_applier(settings, deps) -> NoApplier:
    return NoApplier()


def command_applier(settings, deps) -> CommandApplier:
    if not settings.apply.command:
        from ..config import ConfigError
        raise ConfigError("config", ["apply.command: required when apply.backend is command"])
    return CommandApplier(settings.apply.command, settings.apply.timeout)


def no_rebooter(settings, deps) -> NoRebooter:
    return NoRebooter()


def log_notifier(settings, deps) -> LogNotifier:
    return LogNotifier()


def checks_from_settings(settings, deps) -> list:
    checks: list = []
    if settings.cluster.backend == "sim":
        from ..sim.cluster import SimRevisionCheck
        checks.append(SimRevisionCheck())
    if settings.verify.health_check:
        checks.append(HealthCommand(settings.verify.health_check, settings.verify.timeout))
    if settings.images.backend:  # set to boot, and booted, the image of the node's image action
        from .images.check import checks_from_settings as image_checks
        checks += image_checks(settings, deps)
    if settings.verify.revision.source != "none":  # the node runs the target commit
        from .revision_check import from_settings as revision_check
        checks.append(revision_check(settings))
    return checks


def notifiers_from_settings(settings, deps) -> list:
    notifiers: list = []
    if settings.notify.log:
        notifiers.append(LogNotifier())
    if settings.notify.slack is not None:
        from ..registry import build  # slack-sdk is imported only when Slack is configured
        notifiers.append(build("notifier", "slack", settings, deps))
    return notifiers
