"""The service loop: APScheduler runs the fetch and tick jobs; signals stop or reload it."""
from __future__ import annotations

import signal
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import structlog
from apscheduler.schedulers.blocking import BlockingScheduler

from .config import ConfigError, Settings, load_config
from .engine.engine import WAKE_DELAY, Engine, TickReport
from .model import RolloutState
from .safety import SafetyError
from .store import Store
from .supervision import Supervision
from .wiring import Deps

log = structlog.get_logger("autoupdate.daemon")

EXIT_OK, EXIT_HALTED = 0, 3

#: The extra ticks (wake-ups, looks at a rebooting node) come no sooner than this many times the
#: last cluster read took: reading takes at most a tenth of the loop's time, so a big cluster or
#: a slow slurmctld is not read back to back while a rollout moves. The plain poll is unchanged.
READ_PACE = 9.0


def paced(delay: float, read_seconds: float) -> float:
    """Seconds until an extra tick asked for `delay` seconds from now."""
    return max(delay, READ_PACE * read_seconds)


def state_db(settings: Settings) -> Path:
    return settings.state_dir / "state.db"


class Service:
    def __init__(self, settings: Settings, config_path: str | None = None, **overrides):
        self.settings = settings
        self.config_path = config_path
        self.deps = Deps(settings, **overrides)
        if settings.cluster.backend == "sim" and "clock" not in overrides and settings.cluster.sim.speed != 1.0:
            from .sim.clock import ScaledClock
            self.deps = Deps(settings, clock=ScaledClock(settings.cluster.sim.speed), **overrides)
        self.store = Store(state_db(settings))
        # systemd, windows, live reload, progress, metrics: see supervision.py
        self.supervision = Supervision(settings, config_path)
        self.engine = Engine.from_deps(self.deps, self.store, window_gate=self.supervision.window_gate,
                                      window_opens=self.supervision.window_opens)
        self.scheduler = BlockingScheduler()
        self.engine.wake = self._wake
        self.exit_code = EXIT_OK
        self._exit_when_done = False
        self._deadline: float | None = None
        self._reload = threading.Event()
        self._ticks = 0
        self._failing: dict[str, str] = {}  # job -> its error, while it fails (said once)
        # Jobs run in APScheduler's threads; the store closes only once none is running.
        self._busy = threading.Lock()
        self._stopping = threading.Event()
        self._wake_pending = threading.Event()

    def _job(self, fn):
        def guarded(*args):
            if self._stopping.is_set():
                return
            with self._busy:
                if not self._stopping.is_set():
                    fn(*args)
        return guarded

    # --- jobs ---------------------------------------------------------------------------------
    def _fetch_job(self) -> None:
        try:
            self.engine.fetch()
        except Exception as exc:  # noqa: BLE001 - a bug: see _failed
            self._failed("fetch", exc)
        else:
            self._works("fetch")

    def _tick_job(self) -> None:
        if self._reload.is_set() or self.supervision.config_changed():
            self._reload.clear()
            self.reload()
        self.supervision.before_tick(self)
        try:
            report = self.engine.tick()
        except Exception as exc:  # noqa: BLE001 - a bug: see _failed
            what = self._failed("tick", exc)
            report = self.engine.last_report = TickReport(at=self.engine.clock.now(), ok=False,
                                                          error=f"tick failed: {what}")
        else:
            self._works("tick")
        self.supervision.after_tick(self, report)
        self._look_again(report)
        self._ticks += 1
        if self._exit_when_done and self._ticks > 1 and report.ok and self.engine.idle():
            latest = self.store.latest_rollout()
            head = self.store.get_meta("head")
            if head and (latest is None or latest.target == head):  # no head: never read, not done
                halted = latest and latest.state in (RolloutState.HALTED, RolloutState.ERROR)
                self._exit(EXIT_HALTED if halted else EXIT_OK, "nothing left to do: exiting")
        if self._deadline is not None and time.monotonic() > self._deadline:
            self._exit(4, "--max-seconds reached: exiting")

    # A bug (an exception no adapter error covers) in a job. Nothing more is done this time
    # (each phase was persisted before its action, as for a crash); the loop lives on and pings
    # the watchdog, as in a Slurm outage, rather than be restarted by systemd every two minutes
    # in silence. It says so: the traceback once in the log, once to people, again only if the
    # error changes, and a word when the job works again.
    _WHAT = {"tick": ("the control loop", "no node work"), "fetch": ("reading the repository", "no new commit")}

    def _failed(self, job: str, exc: Exception) -> str:
        what = f"{type(exc).__name__}: {exc}"
        if what != self._failing.get(job):
            self._failing[job] = what
            name, consequence = self._WHAT[job]
            log.exception(f"{job} failed: {consequence} until this is fixed", error=what)
            self.engine.emit(f"{job}.failed", f"{name} failed ({what}): {consequence} until this is fixed "
                             "(traceback in the log)", needs_human=True)
        return what

    def _works(self, job: str) -> None:
        if self._failing.pop(job, None):
            self.engine.emit(f"{job}.recovered", f"{self._WHAT[job][0]} works again")

    def _exit(self, code: int, why: str) -> None:
        """Stop the loop once: a later tick (or the deadline in the same one) changes nothing."""
        if not self.scheduler.running:
            return
        log.info(why, code=code)
        self.exit_code = code
        self.scheduler.shutdown(wait=False)

    def _wake(self) -> None:
        """A node can move on now (work finished, a drain went through): one extra tick
        WAKE_DELAY later, not a poll interval later. Wake-ups that come while one is pending are
        merged."""
        if self._stopping.is_set() or self._wake_pending.is_set():  # (before start: runs at start)
            return
        self._wake_pending.set()
        # A second later at least (paced): a node that keeps waking the loop cannot make it hammer slurmctld.
        delay = paced(WAKE_DELAY, self.engine.last_read_seconds)
        self.scheduler.add_job(self._job(self._woken_tick), "date", misfire_grace_time=None,
                               run_date=datetime.now(timezone.utc) + timedelta(seconds=delay))

    def _look_again(self, report) -> None:
        """A rebooting node is due back before the next poll: one tick then (replacing any
        earlier such tick, so there is at most one)."""
        if report.look_again_at is None:
            return
        speed = getattr(self.engine.clock, "speed", 1.0)  # the simulator's accelerated clock
        delay = paced(max(0.0, (report.look_again_at - report.at) / speed), self.engine.last_read_seconds)
        if delay < self.settings.control.poll_interval:
            self.scheduler.add_job(self._job(self._tick_job), "date", id="look", replace_existing=True,
                                   misfire_grace_time=None,
                                   run_date=datetime.now(timezone.utc) + timedelta(seconds=delay))

    def _woken_tick(self) -> None:
        self._wake_pending.clear()  # a wake-up during this tick schedules the next one
        self._tick_job()

    def reload(self) -> bool:
        """Re-read the config file; an invalid one is rejected and the old one stays."""
        if not self.config_path:
            return False
        self.supervision.remember_config()
        try:
            new = load_config(self.config_path)
            self.engine.reconfigure(new)
        except (ConfigError, SafetyError) as exc:
            self.engine.emit("config.rejected", f"new configuration rejected, keeping the old one: {exc}",
                             needs_human=True)
            return False
        note = self.supervision.reloaded(self.settings, new)
        self.settings = new
        self.engine.emit("config.reloaded", f"configuration reloaded from {self.config_path}{note}")
        return True

    # --- running ------------------------------------------------------------------------------
    def run(self, exit_when_done: bool = False, max_seconds: float | None = None) -> int:
        self._exit_when_done = exit_when_done
        self._deadline = time.monotonic() + max_seconds if max_seconds else None
        c = self.settings.control
        self.engine.fetch()
        self.supervision.after_tick(self, self.engine.tick())
        self.supervision.started(self)
        self.scheduler.add_job(self._job(self._fetch_job), "interval", seconds=self.settings.repository.fetch_interval,
                               id="fetch", max_instances=1, coalesce=True)
        self.scheduler.add_job(self._job(self._tick_job), "interval", seconds=c.poll_interval, id="tick",
                               max_instances=1, coalesce=True)
        self._schedule_drift_checks()
        self._install_signals()
        log.info("running", poll_interval=c.poll_interval, backend=self.settings.cluster.backend)
        try:
            self.scheduler.start()
        finally:
            self._stopping.set()
            with self._busy:  # a job still finishing after shutdown(wait=False)
                self.supervision.stopping(self)
                self.engine.shutdown()
                self.store.close()
        return self.exit_code

    def _schedule_drift_checks(self) -> None:
        """Detectors that find drift without a commit (ansible --check) run on their interval."""
        from .detect.ansible_check import check_drift, drift_detectors
        for i, det in enumerate(drift_detectors(self.deps.detectors)):
            self.scheduler.add_job(self._job(self.engine.correct_drift), "interval", seconds=det.interval,
                                   args=[lambda sha, managed, det=det: check_drift(det, self.deps.source, sha, managed)],
                                   id=f"drift-{i}", max_instances=1, coalesce=True)

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def stop(signum, frame):
            log.info("signal: finishing the step in progress, then exiting", signal=signal.Signals(signum).name)
            self.supervision.sd.stopping("finishing the step in progress")
            self.scheduler.shutdown(wait=True)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, lambda s, f: self._reload.set())
