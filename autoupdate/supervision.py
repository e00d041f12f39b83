"""What running as a service adds around the control loop (daemon.py calls these hooks):

- systemd: READY=1 once the repository and the cluster have been read, WATCHDOG=1 while the
  loop is alive (a separate job pings only if a tick finished recently, so a hung tick stops
  the pings and systemd restarts us), STATUS= with the rollout's progress, STOPPING=1;
- maintenance windows: the engine's gate for starting NEW node work (in-flight work goes on);
- live reload when the configuration file changes (SIGHUP is handled by daemon.py);
- admin requests from the CLI (retry / skip failed nodes);
- the rollout.progress event (Slack edits one message with it) and the metrics endpoint.

None of this may stop a rollout: every hook guards itself.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Mapping

import structlog

from . import admin_requests
from .metrics import Metrics
from .model import ChangeClass
from .nodeset import fold
from .progress import Progress, summarise
from .safety import read_pause
from .sdnotify import Notifier as SdNotifier
from .windows import Windows

log = structlog.get_logger("autoupdate.supervision")

#: Settings sections the running service cannot swap live; a change is reported, not applied.
RESTART_SECTIONS = ("cluster", "repository", "apply", "reboot", "verify", "power", "notify", "metrics")
PROGRESS_MIN_INTERVAL = 10.0  # seconds between two progress events (Slack edits) of one rollout


def file_signature(path: str | None) -> str | None:
    """Content hash of the config file (None: unreadable). mtime alone misses quick rewrites."""
    if not path:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


class Supervision:
    def __init__(self, settings, config_path: str | None = None, environ: Mapping[str, str] | None = None,
                 metrics: Metrics | None = None):
        self.settings = settings
        self.config_path = config_path
        self.windows = Windows.from_settings(settings)
        self.sd = SdNotifier(environ)
        self.metrics = metrics or Metrics()
        self.ready = False
        self.last_tick_done = time.monotonic()
        self._config_signature = file_signature(config_path)
        self._config_checked = 0.0
        self._progress_sent: dict[int, tuple[tuple, float]] = {}

    # --- the engine's start gate --------------------------------------------------------------
    def window_gate(self, klass: ChangeClass, now: float) -> str | None:
        try:
            if self.windows.allows(klass, now):
                return None
            return f"outside the {klass.label} maintenance window ({self.windows.describe(klass, now)})"
        except Exception as exc:  # noqa: BLE001 - cannot tell: the safe answer is "not now"
            return f"maintenance window check failed: {exc}"

    def window_opens(self, klass: ChangeClass, now: float) -> float | None:
        """When new work of `klass` may next start (None: cannot tell; the engine asks again)."""
        try:
            return self.windows.next_open(klass, now)
        except Exception:  # noqa: BLE001 - the gate above reports the failure
            return None

    # --- lifecycle ----------------------------------------------------------------------------
    def started(self, service: Any) -> None:
        """After the first fetch and tick: metrics endpoint, watchdog job, maybe READY."""
        service.engine.notifiers.append(self.metrics)
        self.metrics.start(self.settings.metrics.listen)
        if self.sd.watchdog_interval is not None:
            service.scheduler.add_job(self._watchdog_job, "interval", seconds=self.sd.watchdog_interval / 2,
                                      args=(service,), id="watchdog", max_instances=1, coalesce=True)
        self._maybe_ready(service)

    def _maybe_ready(self, service: Any) -> None:
        report = service.engine.last_report
        if self.ready or service.engine.head is None or report is None or not report.ok:
            return
        self.ready = True
        self.sd.ready(f"tracking {service.engine.head.short}")
        log.info("ready: repository and cluster read")

    def _loop_alive(self) -> bool:
        interval = self.sd.watchdog_interval or 0.0
        return time.monotonic() - self.last_tick_done < self.settings.control.poll_interval + interval

    def _watchdog_job(self, service: Any) -> None:
        if self._loop_alive():
            self.sd.watchdog()
        else:
            log.error("control loop stalled: not pinging the watchdog",
                      seconds_since_tick=round(time.monotonic() - self.last_tick_done, 1))

    def stopping(self, service: Any) -> None:
        self.sd.stopping("finishing the step in progress")
        self.metrics.stop()
        for n in list(service.engine.notifiers):
            close = getattr(n, "close", None)
            if callable(close):
                try:
                    close(timeout=2.0)  # a last chance to deliver queued notifications
                except Exception as exc:  # noqa: BLE001
                    log.warning("notifier close failed", notifier=type(n).__name__, error=str(exc))

    # --- every tick ---------------------------------------------------------------------------
    def config_changed(self) -> bool:
        """True once per change of the config file's content (checked at most every second)."""
        now = time.monotonic()
        if not self.config_path or now - self._config_checked < 1.0:
            return False
        self._config_checked = now
        sig = file_signature(self.config_path)
        if sig is None or sig == self._config_signature:
            return False
        self._config_signature = sig
        log.info("configuration file changed: reloading", path=self.config_path)
        return True

    def before_tick(self, service: Any) -> None:
        for req in admin_requests.take(service.settings.state_dir):
            act = service.engine.retry if req.action == "retry" else service.engine.skip
            try:
                done = act(req.nodes)
            except Exception as exc:  # noqa: BLE001
                log.error("admin request failed", action=req.action, error=str(exc))
                continue
            ignored = sorted(set(req.nodes) - set(done))
            service.engine.emit(f"admin.{req.action}",
                                f"{req.by or 'an admin'} asked to {req.action} {fold(req.nodes)}: "
                                f"{len(done)} failed node(s) affected"
                                + (f"; not failed, ignored: {fold(ignored)}" if ignored else ""),
                                nodes=tuple(done))

    def after_tick(self, service: Any, report: Any) -> None:
        # A tick that could not read Slurm still proves the loop alive: an outage of Slurm must
        # not make systemd restart us in a loop (metrics show the last *successful* tick).
        self.last_tick_done = time.monotonic()
        try:
            self._maybe_ready(service)
            self.sd.watchdog()
            progress = self._progress(service)
            self._publish(service, report, progress)
        except Exception as exc:  # noqa: BLE001 - reporting never stops a rollout
            log.warning("status reporting failed", error=str(exc))

    def _progress(self, service: Any) -> Progress | None:
        rollout = service.store.latest_rollout()
        if rollout is None:
            return None
        return summarise(rollout, service.store.records().values(), service.engine.clock.now())

    def _publish(self, service: Any, report: Any, progress: Progress | None) -> None:
        store = service.store
        self.metrics.update(records=store.records().values(), rollouts=store.rollouts(limit=100000),
                            paused=read_pause(service.settings.pause_file).paused, tick_ok=report.ok,
                            now=time.time(), eta_seconds=progress.eta_seconds if progress else None,
                            read_seconds=service.engine.last_read_seconds)
        if progress is None:
            self.sd.status("no rollout yet")
            return
        self.sd.status(progress.text().replace("`", ""))
        key = (progress.state, tuple(sorted(progress.counts.items())))
        last = self._progress_sent.get(progress.rollout_id)
        now = time.monotonic()
        if last is not None and last[0] == key:
            return
        finished = progress.state not in ("canary", "soak", "waves")
        if last is not None and not finished and last[0][0] == progress.state \
                and now - last[1] < PROGRESS_MIN_INTERVAL:
            return
        if last is None and finished:
            return  # a rollout that ended before we started watching: nothing to edit
        self._progress_sent = {progress.rollout_id: (key, now)}
        service.engine.emit("rollout.progress", progress.text(), rollout_id=progress.rollout_id,
                            target=progress.target,
                            data={"counts": progress.counts, "total": progress.total,
                                  "eta_seconds": progress.eta_seconds})

    # --- reload -------------------------------------------------------------------------------
    def reloaded(self, old, new) -> str:
        """Swap in what changes live; say what needs a restart."""
        self.windows = Windows.from_settings(new)
        self.settings = new
        stale = [s for s in RESTART_SECTIONS if getattr(old, s, None) != getattr(new, s, None)]
        if new.nodes.hypervisors and not old.nodes.hypervisors:  # the BMC hook is built at start
            stale.append("nodes.hypervisors (the first hypervisors)")
        if stale:
            log.warning("configuration sections changed that need a restart", sections=stale)
            return f" (changes to {', '.join(stale)} take effect after a restart)"
        return ""

    def remember_config(self) -> None:
        """After a SIGHUP reload: the current file content is the one handled."""
        self._config_signature = file_signature(self.config_path)
