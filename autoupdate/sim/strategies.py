"""Ways to reboot every node of a (simulated) cluster, for the rollout benchmark.

The baselines are the ways sites do it today, driven event by event with instant reactions (so
they are, if anything, flattered). `AutoupdateStrategy` runs the real Engine on the same cluster
with a ManualClock, ticking like the service does.
"""
from __future__ import annotations

import heapq
import tempfile
from dataclasses import dataclass

from ..config import parse_config
from ..engine.engine import WAKE_DELAY, Engine, InlineExecutor
from ..model import NodePhase, Revision, RolloutState
from ..nodeset import fold
from ..store import Store
from .cluster import SimApplier, SimCluster, SimRebooter, SimRevisionCheck

OLD, NEW = "0" * 40, "1" * 40


def jump(cluster: SimCluster, clock, until: float | None = None) -> bool:
    """Move the clock to the cluster's next event (or `until`, if sooner); False: nothing left."""
    t = cluster.next_event_time()
    if until is not None and (t is None or t > until):
        t = until
    if t is None:
        return False
    clock.advance(max(0.0, t - clock.now()))
    cluster.advance()
    return True


def wait_for(cluster: SimCluster, clock, cond, limit: float = 400 * 86400) -> None:
    deadline = clock.now() + limit
    while not cond():
        if clock.now() > deadline or not jump(cluster, clock):
            raise RuntimeError("the simulation ran out of events before the condition held")


def updated(cluster: SimCluster, nodes) -> bool:
    return all(cluster.nodes[n].running == NEW and cluster.nodes[n].reboot_until is None for n in nodes)


@dataclass
class Params:
    reboot_seconds: float = 600.0
    budget: float = 0.10  # share of the nodes that may be out at once (budgeted strategies)
    canaries: int = 2
    soak_seconds: float = 600.0
    tick_seconds: float = 30.0  # the engine's poll interval
    maint_margin: float = 300.0  # a maintenance window is the reboot time plus this

    def budget_nodes(self, n: int) -> int:
        return max(1, int(n * self.budget))


class AllAtOnce:
    """`scontrol reboot ASAP` on every node: each reboots as soon as its jobs end."""

    name = "all at once"
    budgeted = False

    def run(self, cluster: SimCluster, clock, p: Params) -> None:
        names = sorted(cluster.nodes)
        cluster.stage(names, NEW, live=False)
        cluster.reboot(names, "update")
        wait_for(cluster, clock, lambda: updated(cluster, names))


class Batches:
    """An Ansible play with `serial`: drain a batch, wait until all of it is empty, reboot it,
    wait until it is back, resume it, next batch (the linear strategy: the batch moves together)."""

    budgeted = True

    def __init__(self, size: int | None = None):
        self.size = size
        self.name = "one at a time" if size == 1 else "batches of 10%"

    def run(self, cluster: SimCluster, clock, p: Params) -> None:
        names = sorted(cluster.nodes)
        size = self.size or p.budget_nodes(len(names))
        for i in range(0, len(names), size):
            batch = names[i:i + size]
            cluster.drain(batch, "update")
            cluster.stage(batch, NEW, live=False)
            wait_for(cluster, clock, lambda: not any(cluster.nodes[n].jobs for n in batch))
            cluster.reboot(batch, "update")
            wait_for(cluster, clock, lambda: updated(cluster, batch))
            cluster.resume(batch)


class MaintReservations:
    """The slurm-maint-controller way: at the start, one maintenance reservation per node, placed
    after the time limits of its running jobs, at most `budget` windows overlapping; each node
    reboots when its window opens and is back to the scheduler when the window closes."""

    name = "maint reservations"
    budgeted = True

    def run(self, cluster: SimCluster, clock, p: Params) -> None:
        names = sorted(cluster.nodes)
        window = p.reboot_seconds + p.maint_margin
        slots = plan_windows(cluster, clock.now(), window, p.budget_nodes(len(names)))
        cluster.stage(names, NEW, live=False)
        for n, start in slots.items():
            cluster.reserve(f"maint_{n}", n, start, "update", end_time=start + window)
        todo = sorted(slots, key=slots.get)
        last_end = max(slots.values()) + window
        while todo or clock.now() < last_end:
            while todo and slots[todo[0]] <= clock.now():
                cluster.reboot([todo.pop(0)], "update")  # empty: the window is after its jobs
            if not jump(cluster, clock, until=slots[todo[0]] if todo else last_end):
                break
        for n in names:
            cluster.unreserve(f"maint_{n}")
        wait_for(cluster, clock, lambda: updated(cluster, names))


def plan_windows(cluster: SimCluster, now: float, window: float, budget: int) -> dict[str, float]:
    """Each node's window start: after its jobs' time limits, at most `budget` windows at once."""
    ready = {n: max([now] + [cluster.jobs[j].limit_end for j in node.jobs]) for n, node in cluster.nodes.items()}
    ends: list[float] = []  # end times of the windows that may still overlap the next one
    slots = {}
    for n in sorted(ready, key=lambda n: (ready[n], n)):
        start = ready[n]
        if len(ends) >= budget:
            start = max(start, heapq.heappop(ends))
        heapq.heappush(ends, start + window)
        slots[n] = start
    return slots


class _OneCommitSource:
    """A ChangeSource with two commits: what the nodes run, then the fix (no git needed)."""

    def __init__(self):
        self.head = OLD

    def fetch(self) -> Revision:
        return Revision(self.head, "kernel fix" if self.head == NEW else "baseline")

    def exists(self, sha: str) -> bool:
        return sha in (OLD, NEW)

    def is_ancestor(self, old: str, new: str) -> bool:
        return True

    def changed_paths(self, old, new) -> list[str]:
        return ["roles/kernel/tasks/main.yml"]

    def read(self, sha: str, path: str):
        return None

    def checkout(self, sha: str):
        raise NotImplementedError

    def revision(self, sha: str) -> Revision:
        return Revision(sha)


def engine_settings(nodes, p: Params, state_dir: str, drain_strategy: str):
    return parse_config({
        "repository": {"url": "memory"},
        "cluster": {"backend": "sim"},
        "nodes": {"canaries": fold(nodes)},
        "rollout": {"canary_count": p.canaries, "soak_seconds": p.soak_seconds,
                    "max_unavailable": f"{p.budget * 100:g}%", "drain_strategy": drain_strategy,
                    "reservation_seconds": p.reboot_seconds + p.maint_margin},
        "reboot": {"strategy": "sim", "timeout": 4 * p.reboot_seconds + 3600},
        "control": {"state_dir": state_dir, "poll_interval": p.tick_seconds},
    }, "bench")


#: Phases in which the engine has something to do at the next tick whatever the cluster does.
_ACTIVE = frozenset({NodePhase.DRAINED, NodePhase.APPLYING, NodePhase.REBOOTING, NodePhase.VERIFYING,
                     NodePhase.RESUMING, NodePhase.RETRY_WAIT})


class AutoupdateStrategy:
    """The real Engine (store, planner, safety gates) on the simulated cluster, ticking every
    `tick_seconds`. While every node only waits for jobs to end, ticks that could not change
    anything are skipped: the clock goes to the first tick after the cluster's next event."""

    budgeted = True

    def __init__(self, drain_strategy: str = "reservation"):
        self.drain_strategy = drain_strategy
        self.name = "autoupdate" if drain_strategy == "reservation" else f"autoupdate ({drain_strategy})"
        self.ticks = 0

    def run(self, cluster: SimCluster, clock, p: Params) -> None:
        names = sorted(cluster.nodes)
        with tempfile.TemporaryDirectory(prefix="au-bench-") as tmp:
            settings = engine_settings(names, p, tmp, self.drain_strategy)
            cluster.reservation_seconds = settings.rollout.reservation_seconds  # as the Slurm adapter makes them
            store = Store(":memory:")
            source = _OneCommitSource()
            engine = Engine(settings, store, workload_manager=cluster, source=source, detectors=[],
                            applier=SimApplier(cluster), rebooter=SimRebooter(cluster, settings.reboot.timeout),
                            checks=[SimRevisionCheck()], notifiers=[], clock=clock, executor=InlineExecutor())
            engine.fetch()  # baseline: what the nodes run
            source.head = NEW
            engine.fetch()  # the fix: a DRAIN rollout of every node
            woken = []
            engine.wake = lambda: woken.append(True)  # as the service does: one extra tick WAKE_DELAY later
            t0 = clock.now()
            while True:
                woken.clear()
                report = engine.tick()
                self.ticks += 1
                rollout = store.latest_rollout()
                if not rollout.state.active:
                    break
                if clock.now() - t0 > 400 * 86400:
                    raise RuntimeError("autoupdate did not finish within 400 simulated days")
                at = self._next_tick(engine, store, cluster, clock, t0, p)
                if woken:  # a step finished, or the canaries passed / the soak ended
                    at = min(at, clock.now() + WAKE_DELAY)
                if report.look_again_at is not None:  # as the service does: a node due back, the soak's end
                    at = min(at, report.look_again_at)
                clock.advance(at - clock.now())
            store.close()
            if rollout.state is not RolloutState.DONE:
                raise RuntimeError(f"rollout ended {rollout.state.value}: {rollout.reason}")

    @staticmethod
    def _next_tick(engine, store, cluster, clock, t0, p: Params) -> float:
        now, tick = clock.now(), p.tick_seconds
        records = store.records().values()
        slots = engine._slots

        def active(r) -> bool:
            if r.phase in _ACTIVE:
                return True
            if r.phase is not NodePhase.DRAINING:
                return False
            node = cluster.nodes[r.node]
            return not r.action_done or (node.drained and not node.jobs) or slots.get(r.node, now + 1) <= now

        grid = _next_poll(t0, now, tick)
        if engine._work or any(active(r) for r in records):
            return grid
        wake = [t for t in (cluster.next_event_time(),) if t is not None]
        # A slot about to open is checked against the budget first (slots.plan's horizon).
        wake += [s - 2 * tick for s in slots.values() if s - 2 * tick > now]
        if not wake:
            return grid
        at = t0 + -(-(min(wake) - t0) // tick) * tick  # the first tick at or after it
        return at if at > now else grid


def _next_poll(t0: float, now: float, tick: float) -> float:
    """The service's next poll tick after `now` (wake-up ticks fall between polls)."""
    return t0 + ((now - t0) // tick + 1) * tick


def all_strategies() -> list:
    return [AllAtOnce(), Batches(), Batches(1), MaintReservations(), AutoupdateStrategy("drain"),
            AutoupdateStrategy("reservation")]
