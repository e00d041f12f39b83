"""The command line. Errors a user can cause are one line on stderr and a non-zero exit."""
from __future__ import annotations

import getpass
import json
import os
import sys
import time

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .config import ConfigError, Settings, load_config
from .model import ChangeClass, NodePhase
from .nodeset import HostlistError, expand, fold
from .ports import AdapterError
from .registry import BackendError
from .safety import SafetyError, SafetyLists, clear_pause, read_pause, write_pause

DEFAULT_CONFIG = "/etc/autoupdate/autoupdate.yaml"
EXIT_USAGE, EXIT_FAIL = 2, 1


class UserError(click.ClickException):
    """One line, no traceback."""

    exit_code = EXIT_USAGE

    def show(self, file=None) -> None:
        click.echo(f"autoupdate: {self.format_message()}", err=True)


def _load(ctx: click.Context) -> tuple[Settings, str]:
    path = ctx.obj["config"] or os.environ.get("AUTOUPDATE_CONFIG") or DEFAULT_CONFIG
    try:
        settings = load_config(path)
        SafetyLists.from_settings(settings.nodes)
    except ConfigError as exc:
        for line in exc.lines()[1:]:
            click.echo(f"autoupdate: {line}", err=True)
        raise UserError(exc.lines()[0]) from None
    except SafetyError as exc:
        raise UserError(str(exc)) from None
    return settings, path


def _ts(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _store(settings: Settings):
    from .daemon import state_db
    from .store import Store, StoreError
    try:
        return Store.open_readonly(state_db(settings))
    except FileNotFoundError:
        raise UserError(f"no state yet in {settings.state_dir} (has `autoupdate run` started?)") from None
    except StoreError as exc:
        raise UserError(str(exc)) from None


def _config_after(ctx: click.Context, _param, value: str | None) -> None:
    if value is not None:  # `autoupdate status -c FILE` as well as `autoupdate -c FILE status`
        ctx.ensure_object(dict)["config"] = value


# Every command that reads the configuration takes -c/--config after its name too.
CONFIG_HELP = f"configuration file [$AUTOUPDATE_CONFIG, {DEFAULT_CONFIG}]"
config_option = click.option("-c", "--config", metavar="FILE", expose_value=False, callback=_config_after,
                             help=CONFIG_HELP)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", metavar="FILE", help=CONFIG_HELP)
@click.version_option(package_name="autoupdate")
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """Slurm-aware rolling updates of compute nodes from a git repository."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config


@cli.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False))
@click.pass_context
def check_config(ctx: click.Context, file: str) -> None:
    """Validate FILE and report every problem with its key path."""
    ctx.obj["config"] = file
    settings, _ = _load(ctx)
    click.echo(f"{file}: ok ({settings.cluster.backend} cluster, {len(settings.detectors)} detector(s))")


@cli.command()
@config_option
@click.option("--exit-when-done", is_flag=True, help="exit once HEAD is read and rolled out (3 if halted)")
@click.option("--max-seconds", type=float, default=None, help="exit after this long (tests)")
@click.pass_context
def run(ctx: click.Context, exit_when_done: bool, max_seconds: float | None) -> None:
    """Run the service loop."""
    from . import logs
    from .daemon import Service
    from .store import StoreError
    settings, path = _load(ctx)
    logs.configure(settings.control.log_format, settings.control.log_level)
    try:
        code = Service(settings, path).run(exit_when_done=exit_when_done, max_seconds=max_seconds)
    except (BackendError, AdapterError, StoreError) as exc:
        raise UserError(str(exc)) from None
    sys.exit(code)


@cli.command()
@config_option
@click.option("--reason", default="", help="why (shown by status and in notifications)")
@click.pass_context
def pause(ctx: click.Context, reason: str) -> None:
    """Stop starting new node work (work in flight finishes)."""
    settings, _ = _load(ctx)
    try:
        write_pause(settings.pause_file, reason, getpass.getuser())
    except OSError as exc:
        raise UserError(f"cannot write {settings.pause_file}: {exc.strerror}") from None
    click.echo(f"paused ({settings.pause_file})" + (f": {reason}" if reason else ""))


@cli.command()
@config_option
@click.pass_context
def resume(ctx: click.Context) -> None:
    """Allow new node work again."""
    settings, _ = _load(ctx)
    try:
        was = clear_pause(settings.pause_file)
    except OSError as exc:
        raise UserError(f"cannot remove {settings.pause_file}: {exc.strerror}") from None
    click.echo("resumed" if was else "was not paused")


def _service_status(settings: Settings, rollout, records) -> dict:
    """Next maintenance window per class and the latest rollout's progress and ETA."""
    from .progress import summarise
    from .windows import Windows
    now = time.time()
    windows = Windows.from_settings(settings)
    out: dict = {"windows": {k.label: {"state": windows.describe(k, now), "next_open": windows.next_open(k, now)}
                             for k in (ChangeClass.DRAIN, ChangeClass.HOT)}}
    if rollout is not None:
        p = summarise(rollout, records.values(), now)
        out["progress"] = {"total": p.total, "finished": p.finished, "failed": p.failed,
                           "in_flight": p.in_flight, "counts": p.counts, "eta_seconds": p.eta_seconds,
                           "text": p.text()}
    return out


def status_data(settings: Settings) -> dict:
    store = _store(settings)
    try:
        rollout = store.latest_rollout()
        records = store.records()
        pause = read_pause(settings.pause_file)
        phases: dict[str, int] = {}
        for r in records.values():
            phases[r.phase.value] = phases.get(r.phase.value, 0) + 1
        return {
            "head": store.get_meta("head"),
            "baseline": store.get_meta("baseline"),
            "rollout": None if rollout is None else {
                "id": rollout.id, "target": rollout.target, "state": rollout.state.value,
                "summary": rollout.summary, "reason": rollout.reason, "canaries": list(rollout.canaries),
                "created_at": rollout.created_at, "soak_until": rollout.soak_until or None},
            "paused": pause.paused, "paused_since": pause.since, "paused_reason": pause.reason,
            "paused_by": pause.by,
            "phases": phases,
            "failed": sorted((r.node, r.last_error) for r in records.values() if r.phase is NodePhase.FAILED),
            **_service_status(settings, rollout, records),
            "held": json.loads(store.get_meta("held") or "{}"),
            "giving_way": json.loads(store.get_meta("giving_way") or "{}"),
        }
    finally:
        store.close()


@cli.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Current commit, rollout phase, nodes per phase, paused or not."""
    settings, _ = _load(ctx)
    data = status_data(settings)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    con = Console()
    t = Table(show_header=False, box=None)
    r = data["rollout"]
    t.add_row("head", (data["head"] or "-")[:12])
    if r:
        t.add_row("rollout", f"#{r['id']} {r['target'][:12]} {r['summary']!r}: {r['state']}"
                  + (f" ({r['reason']})" if r["reason"] else ""))
        if r["canaries"]:
            t.add_row("canaries", fold(r["canaries"]))
    t.add_row("paused", f"yes, since {_ts(data['paused_since'])} by {data['paused_by'] or '?'}: "
              f"{data['paused_reason'] or 'no reason given'}" if data["paused"] else "no")
    t.add_row("nodes", ", ".join(f"{k} {v}" for k, v in sorted(data["phases"].items())) or "-")
    if data.get("progress"):
        from .progress import duration
        p, eta = data["progress"], data["progress"]["eta_seconds"]
        t.add_row("progress", f"{p['finished']}/{p['total']} finished, {p['in_flight']} in flight, "
                  f"{p['failed']} failed; ETA " + ("-" if eta is None or p["finished"] >= p["total"] else duration(eta)))
    for klass, w in data.get("windows", {}).items():
        t.add_row(f"{klass} window", w["state"])
    for node, err in data["failed"]:
        t.add_row("failed", f"{node}: {err}")
    for why in sorted(set(data["held"].values())):
        t.add_row("not touched", f"{fold(n for n, w in data['held'].items() if w == why)}: {why}")
    way = data.get("giving_way")
    if way:
        t.add_row("giving way", f"{fold(way['nodes'])}: {way['why']}; their slots after {_ts(way['until'])}")
    con.print(t)


@cli.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("-n", "--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="rollouts and transitions to show")
@click.option("--node", default=None, help="only this node's transitions (its attempts)")
@click.option("--rollout", "rollout_id", type=int, default=None, help="only this rollout's transitions")
@click.pass_context
def history(ctx: click.Context, as_json: bool, limit: int, node: str | None, rollout_id: int | None) -> None:
    """Past rollouts and node transitions."""
    settings, _ = _load(ctx)
    store = _store(settings)
    try:
        rollouts = store.rollouts(limit)
        lines = store.history(rollout_id=rollout_id, node=node, limit=limit)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps({"rollouts": [
            {"id": r.id, "target": r.target, "state": r.state.value, "summary": r.summary, "reason": r.reason,
             "created_at": r.created_at, "updated_at": r.updated_at} for r in rollouts],
            "transitions": lines}, indent=2))
        return
    con = Console()
    t = Table("rollout", "commit", "state", "started", "summary / reason")
    for r in rollouts:
        t.add_row(str(r.id), r.target[:12], r.state.value, _ts(r.created_at), r.reason or r.summary)
    con.print(t)
    t = Table("when", "node", "from", "to", "message")
    for h in lines:
        t.add_row(_ts(h["at"]), h["node"] or "", h["from_phase"] or "", h["to_phase"] or "", h["message"])
    con.print(t)


@cli.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def plan(ctx: click.Context, as_json: bool) -> None:
    """What HEAD would do, per node: class and order. Acts on nothing."""
    from .engine.planner import order
    from .model import NodeRecord
    from .safety import held_by_others
    from .wiring import Deps
    from .detect import run_detectors
    settings, _ = _load(ctx)
    deps = Deps(settings)
    try:
        snapshot = deps.workload_manager.snapshot()
        head = deps.source.fetch()
        lists = SafetyLists.from_settings(settings.nodes)
        managed = sorted(n for n in snapshot.nodes if lists.managed(n))
        applied, baseline = _applied(settings)
        bases: dict[str | None, list[str]] = {}
        for n in managed:
            bases.setdefault(applied.get(n, baseline or head.sha), []).append(n)
        verdicts = {b: run_detectors(deps.detectors, deps.source, b, head.sha, managed) for b in bases}
    except (BackendError, AdapterError) as exc:
        raise UserError(str(exc)) from None
    rows = []
    for base, nodes in bases.items():
        v = verdicts[base]
        recs = [NodeRecord(n, NodePhase.PENDING, head.sha, 0, v.classes.get(n, ChangeClass.GOOD),
                           canary=n in lists.canaries) for n in nodes]
        for rank, rec in enumerate(order(recs, snapshot), 1):
            rows.append({"node": rec.node, "class": "error" if v.is_error else rec.klass.label,
                         "order": rank, "canary": rec.canary, "base": (base or "")[:12],
                         "held": held_by_others(snapshot.nodes.get(rec.node), snapshot),
                         "idle_at": snapshot.idle_at(rec.node)})
    out = {"head": head.sha, "summary": head.summary,
           "unmanaged": fold(n for n in snapshot.nodes if n not in managed),
           "verdicts": [{"base": b, "error": v.error,
                         "detectors": [{"name": p.detector, "error": p.error, "notes": list(p.notes),
                                        "classes": {c.label: fold(n for n, k in p.classes.items() if k == c)
                                                    for c in ChangeClass}} for p in v.parts]}
                        for b, v in verdicts.items()],
           "nodes": rows}
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    con = Console()
    con.print(f"HEAD {head.short} {head.summary!r}")
    for v in out["verdicts"]:
        # Detector texts may hold brackets ([hotchange], [Errno 2]): never read them as markup.
        con.print(f"from {(v['base'] or 'nothing')[:12]}:" + (f" [bold red]ERROR[/] {escape(v['error'])}" if v["error"] else ""))
        for d in v["detectors"]:
            cls = "  ".join(f"{k}={n}" for k, n in d["classes"].items() if n)
            con.print(f"  {d['name']}: {escape(('ERROR ' + d['error']) if d['error'] else cls or 'no change')}")
            for note in d["notes"][:20]:
                con.print(f"    {escape(note)}")
    t = Table("order", "node", "class", "canary", "idle at", "held by others")
    for r in sorted(rows, key=lambda r: (r["class"] == "good", r["order"])):
        t.add_row(str(r["order"]), r["node"], r["class"], "yes" if r["canary"] else "",
                  _ts(r["idle_at"]), r["held"] or "")
    con.print(t)
    if out["unmanaged"]:
        con.print(f"not managed (blacklist/whitelist): {out['unmanaged']}")


def _hostlist(text: str) -> list[str]:
    try:
        return expand(text)
    except HostlistError as exc:
        raise UserError(str(exc)) from None


def _node_rows(records, nodes: list[str] | None, phase: str | None) -> list[dict]:
    rows = []
    for name in sorted(records):
        r = records[name]
        if (nodes and name not in nodes) or (phase and r.phase.value != phase):
            continue
        rows.append({"node": name, "phase": r.phase.value, "class": r.klass.label, "target": r.target,
                     "rollout": r.rollout_id, "attempts": r.attempts, "since": r.since, "canary": r.canary,
                     "drained_by_us": r.drained_by_us, "next_attempt_at": r.next_attempt_at or None,
                     "last_error": r.last_error, "cancel_reason": r.cancel_reason})
    return rows


@cli.command()
@config_option
@click.argument("hostlist", required=False, default="")
@click.option("--phase", type=click.Choice([p.value for p in NodePhase]), default=None, help="only nodes in this phase")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def nodes(ctx: click.Context, hostlist: str, phase: str | None, as_json: bool) -> None:
    """Per node: phase, class, commit, attempts, last error (optionally only HOSTLIST)."""
    settings, _ = _load(ctx)
    store = _store(settings)
    try:
        records = store.records()
    finally:
        store.close()
    rows = _node_rows(records, _hostlist(hostlist) if hostlist else None, phase)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    t = Table("node", "phase", "class", "canary", "commit", "rollout", "attempts", "since", "note")
    for r in rows:
        note = r["last_error"] or r["cancel_reason"]
        t.add_row(r["node"], r["phase"], r["class"], "yes" if r["canary"] else "", r["target"][:12],
                  str(r["rollout"]), str(r["attempts"]), _ts(r["since"]), note)
    Console().print(t)


def _admin_request(ctx: click.Context, action: str, hostlist: tuple[str, ...], as_json: bool) -> None:
    """retry/skip: only failed nodes; the running service carries it out at its next tick."""
    from . import admin_requests
    settings, _ = _load(ctx)
    wanted = _hostlist(",".join(hostlist))
    if not wanted:
        raise UserError(f"{action}: give the nodes, e.g. `autoupdate {action} node[03-04]`")
    store = _store(settings)
    try:
        records = store.records()
    finally:
        store.close()
    failed = [n for n in wanted if n in records and records[n].phase is NodePhase.FAILED]
    others = {n: (records[n].phase.value if n in records else "no record") for n in wanted if n not in failed}
    if failed:
        try:
            admin_requests.submit(settings.state_dir, action, failed, getpass.getuser())
        except OSError as exc:
            raise UserError(f"cannot write to {admin_requests.spool(settings.state_dir)}: {exc.strerror}") from None
    if as_json:
        click.echo(json.dumps({"action": action, "queued": failed, "not_failed": others}, indent=2))
    else:
        if failed:
            click.echo(f"{action} queued for {fold(failed)}: the running service acts on it at its next tick")
        for n, ph in others.items():
            click.echo(f"{n}: not failed ({ph}), left alone", err=True)
    if not failed:
        sys.exit(EXIT_FAIL)


@cli.command()
@config_option
@click.argument("hostlist", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def retry(ctx: click.Context, hostlist: tuple[str, ...], as_json: bool) -> None:
    """Give failed nodes (HOSTLIST) a fresh set of attempts."""
    _admin_request(ctx, "retry", hostlist, as_json)


@cli.command()
@config_option
@click.argument("hostlist", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def skip(ctx: click.Context, hostlist: tuple[str, ...], as_json: bool) -> None:
    """Give up on failed nodes (HOSTLIST) for this commit; they stay as they are (drained)."""
    _admin_request(ctx, "skip", hostlist, as_json)


def _applied(settings: Settings) -> tuple[dict[str, str], str | None]:
    from .daemon import state_db
    if not state_db(settings).exists():
        return {}, None
    store = _store(settings)
    try:
        return store.applied(), store.get_meta("baseline")
    finally:
        store.close()


@cli.command()
@click.option("--nodes", type=click.IntRange(4, 10_000), default=32, show_default=True,
              help="simulated nodes (two partitions)")
@click.option("--speed", type=click.FloatRange(min=0, min_open=True), default=1200.0, show_default=True,
              help="simulated seconds per wall second")
@click.option("--quiet", is_flag=True, help="only the summary")
def demo(nodes: int, speed: float, quiet: bool) -> None:
    """Roll a change over a simulated cluster with running jobs, live."""
    from .demo import run_demo
    summary = run_demo(nodes=nodes, speed=speed, quiet=quiet)
    sys.exit(0 if summary["jobs_killed"] == 0 and summary["updated"] == summary["nodes"] else 1)


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def bench(ctx: click.Context) -> None:
    """Rollout benchmark on real workload traces (options: see --help of bench/rollout_bench.py)."""
    from .sim.bench import main as bench_main
    sys.exit(bench_main(ctx.args))


def main() -> None:
    try:
        cli(standalone_mode=True)
    except HostlistError as exc:
        click.echo(f"autoupdate: {exc}", err=True)
        sys.exit(EXIT_USAGE)


if __name__ == "__main__":
    main()
