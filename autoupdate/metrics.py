"""The Prometheus endpoint (prometheus-client), off unless `metrics.listen` is set.

Gauges are set from the state store after every tick; failure counters come from events (this
object is also a Notifier). Nothing here may stop a rollout: a port in use is one log line, and
update() swallows its own errors.
"""
from __future__ import annotations

from typing import Iterable

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from .model import Event, NodePhase, NodeRecord, Rollout, RolloutState

log = structlog.get_logger("autoupdate.metrics")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.nodes = Gauge("autoupdate_nodes", "Node records per phase", ["phase"], registry=r)
        self.rollouts = Gauge("autoupdate_rollouts", "Rollouts per state (outcome)", ["state"], registry=r)
        self.failures = Counter("autoupdate_node_failures", "Node failures since start: attempt "
                                "(will be retried) or final (left drained)", ["kind"], registry=r)
        self.last_tick = Gauge("autoupdate_last_successful_tick_timestamp_seconds",
                               "When a control-loop tick last read the cluster and ran", registry=r)
        self.ticks = Counter("autoupdate_ticks", "Control-loop ticks", ["result"], registry=r)
        self.paused = Gauge("autoupdate_paused", "1 while paused", registry=r)
        self.eta = Gauge("autoupdate_rollout_eta_seconds", "Estimated time left in the active rollout "
                         "(-1: no estimate)", registry=r)
        self.read = Gauge("autoupdate_cluster_read_seconds", "How long the last tick took to read the "
                          "cluster (the extra ticks between polls are paced at 9 times this)", registry=r)
        self.info = Gauge("autoupdate_rollout_info", "The latest rollout (value 1)",
                          ["rollout", "target", "state"], registry=r)
        for phase in NodePhase:
            self.nodes.labels(phase.value).set(0)
        for state in RolloutState:
            self.rollouts.labels(state.value).set(0)
        for kind in ("attempt", "final"):
            self.failures.labels(kind)
        self.server = None

    def start(self, listen: str) -> bool:
        """Serve on 'host:port'. Failing to bind is logged, never raised."""
        if not listen:
            return False
        host, _, port = listen.rpartition(":")
        try:
            self.server, _thread = start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)
        except OSError as exc:
            log.error("metrics endpoint not started; carrying on without it", listen=listen,
                      error=exc.strerror or str(exc))
            return False
        log.info("metrics endpoint", listen=listen)
        return True

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # --- updates ------------------------------------------------------------------------------
    def notify(self, event: Event) -> None:
        if event.kind in ("node.failed", "canary.failed"):
            self.failures.labels("final").inc(max(1, len(event.nodes)))
        elif event.kind == "node.attempt_failed":
            self.failures.labels("attempt").inc(max(1, len(event.nodes)))

    def update(self, *, records: Iterable[NodeRecord], rollouts: Iterable[Rollout], paused: bool,
               tick_ok: bool, now: float, eta_seconds: float | None = None, read_seconds: float = 0.0) -> None:
        try:
            counts = {p.value: 0 for p in NodePhase}
            for rec in records:
                counts[rec.phase.value] += 1
            for phase, n in counts.items():
                self.nodes.labels(phase).set(n)
            states = {s.value: 0 for s in RolloutState}
            latest = None
            for r in rollouts:
                states[r.state.value] += 1
                if latest is None or r.id > latest.id:
                    latest = r
            for state, n in states.items():
                self.rollouts.labels(state).set(n)
            if latest is not None:
                self.info.clear()
                self.info.labels(str(latest.id), latest.target[:12], latest.state.value).set(1)
            self.paused.set(1 if paused else 0)
            self.eta.set(-1 if eta_seconds is None else eta_seconds)
            self.read.set(read_seconds)
            self.ticks.labels("ok" if tick_ok else "error").inc()
            if tick_ok:
                self.last_tick.set(now)
        except Exception as exc:  # noqa: BLE001 - metrics never stop a rollout
            log.warning("metrics update failed", error=str(exc))
