"""The service as systemd runs it: the real daemon process on the simulated cluster with a real
git repository; sd_notify on a socket we own, SIGHUP reloads, SIGTERM, windows, blacklist
reload of in-flight work, metrics during a rollout, a Slack outage during a rollout."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from autoupdate.config import load_config
from autoupdate.daemon import Service, paced
from autoupdate.model import NodePhase, RolloutState
from autoupdate.ports import WorkloadManagerError
from autoupdate.store import Store
from rig.service import Setup, free_port, wait_until
from rig.slack_server import TOKEN, FakeSlack

KERNEL = "roles/kernel/tasks/main.yml"


class NotifySocket:
    """The test's end of $NOTIFY_SOCKET: collects every datagram with its arrival time."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def has(self, field: str) -> bool:
        return any(field in m.split("\n") for _, m in self.messages)

    def times(self, field: str, since: float = 0.0) -> list[float]:
        return [t for t, m in self.messages if field in m.split("\n") and t >= since]

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def slack_server():
    server = FakeSlack().start()
    yield server
    server.stop()


def start_daemon(setup: Setup, env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "autoupdate.cli", "--config", str(setup.config_path), "run", *args],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=setup.root)


def slack_section(server: FakeSlack) -> dict:
    return {"slack": {"mode": "bot", "channel": "#hpc", "token_env": "AU_SLACK", "base_url": server.base_url,
                      "timeout": 1, "retry_seconds": 2, "mention": "S0ADMINS"}}


def texts(server: FakeSlack) -> list[str]:
    return [m["text"] for m in server.messages.values()]


def test_daemon_ready_watchdog_sighup_and_sigterm(tmp_path, slack_server):
    setup = Setup(tmp_path, notify={"log": True, **slack_section(slack_server)})
    notify = NotifySocket(tmp_path / "notify")
    proc = start_daemon(setup, {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000", "AU_SLACK": TOKEN},
                        "--max-seconds", "60")
    try:
        wait_until(lambda: notify.has("READY=1"), 20, what="READY=1")
        ready_at = notify.times("READY=1")[0]
        wait_until(lambda: len(notify.times("WATCHDOG=1", ready_at)) >= 3, 10, what="watchdog pings")

        # A valid new config: the blacklist grows (live), SIGHUP reloads it.
        setup.write_config(setup.changed(nodes={"blacklist": "node08"}))
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: any("configuration reloaded" in t for t in texts(slack_server)), 10,
                   what="config.reloaded in Slack")

        # An invalid one: rejected with the key path, the old one stays, the loop goes on.
        setup.write_config(raw=setup.config_path.read_text().replace("max_unavailable: 50%",
                                                                     "max_unavailable: lots"))
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: any("rejected" in t for t in texts(slack_server)), 10, what="config.rejected")
        rejected = next(t for t in texts(slack_server) if "rejected" in t)
        assert rejected.startswith("<!subteam^S0ADMINS>") and "rollout.max_unavailable" in rejected
        after = time.monotonic()
        wait_until(lambda: len(notify.times("WATCHDOG=1", after)) >= 2, 10, what="pings after a rejected config")
        assert proc.poll() is None

        # SIGTERM: STOPPING=1, exit 0.
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out[-2000:]
        assert notify.has("STOPPING=1")
        assert any(m.startswith("STATUS=") for _, m in notify.messages)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        notify.close()


def test_config_file_change_reloads_without_a_signal(tmp_path, slack_server):
    setup = Setup(tmp_path, notify={"log": True, **slack_section(slack_server)})
    proc = start_daemon(setup, {"AU_SLACK": TOKEN}, "--max-seconds", "30")
    try:
        wait_until(lambda: setup.root.joinpath("state", "state.db").exists(), 20, what="state")
        time.sleep(1.5)
        setup.write_config(setup.changed(nodes={"blacklist": "node07"}))
        wait_until(lambda: any("configuration reloaded" in t for t in texts(slack_server)), 15,
                   what="reload on file change")
        # Changing a section that cannot be swapped live says so.
        setup.write_config(setup.changed(repository={"fetch_interval": 0.3}))
        wait_until(lambda: any("take effect after a restart" in t for t in texts(slack_server)), 15,
                   what="restart note")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


class HangingWM:
    """Wraps the simulated cluster; snapshot() blocks while `hang` is set (a hung loop)."""

    def __init__(self, inner):
        self.inner = inner
        self.hang = threading.Event()
        self.release = threading.Event()
        self.blocked = threading.Event()
        self.fail = threading.Event()

    def snapshot(self):
        if self.fail.is_set():
            raise WorkloadManagerError("scontrol: Unable to contact slurm controller (test)")
        if self.hang.is_set():
            self.blocked.set()
            self.release.wait(30)
        return self.inner.snapshot()

    def __getattr__(self, name):
        return getattr(self.inner, name)


def run_in_thread(service: Service, **kw) -> threading.Thread:
    t = threading.Thread(target=lambda: setattr(service, "result", service.run(**kw)), daemon=True)
    t.start()
    return t


def test_hung_loop_stops_watchdog_pings(tmp_path, monkeypatch):
    setup = Setup(tmp_path)
    notify = NotifySocket(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", notify.path)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # pings every 0.25 s while healthy
    service = Service(load_config(setup.config_path), str(setup.config_path))
    wm = HangingWM(service.engine.wm)
    service.engine.wm = wm
    thread = run_in_thread(service, max_seconds=20)
    try:
        wait_until(lambda: notify.has("READY=1"), 20, what="READY")
        healthy = time.monotonic()
        wait_until(lambda: len(notify.times("WATCHDOG=1", healthy)) >= 3, 5, what="healthy pings")
        wm.hang.set()
        assert wm.blocked.wait(10)
        # The tick is stuck; once poll_interval + interval (0.55 s) have passed, pings stop.
        hung = time.monotonic() + 1.2
        time.sleep(1.2 + 1.5)
        assert notify.times("WATCHDOG=1", hung) == []
        assert notify.times("WATCHDOG=1", healthy)  # it did ping before
        wm.hang.clear()
        wm.release.set()
        back = time.monotonic()
        wait_until(lambda: notify.times("WATCHDOG=1", back), 5, what="pings after the loop recovered")
    finally:
        wm.hang.clear()
        wm.release.set()
        service.scheduler.shutdown(wait=False)
        thread.join(30)
        notify.close()


def test_slurm_outage_keeps_pinging_but_last_good_tick_stays(tmp_path, monkeypatch):
    # The loop is alive while Slurm is down: systemd must not restart us in a loop; the metric
    # of the last successful tick is what alerts people.
    setup = Setup(tmp_path)
    notify = NotifySocket(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", notify.path)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    service = Service(load_config(setup.config_path), str(setup.config_path))
    wm = HangingWM(service.engine.wm)
    service.engine.wm = wm
    thread = run_in_thread(service, max_seconds=20)
    gauge = "autoupdate_last_successful_tick_timestamp_seconds"
    try:
        wait_until(lambda: notify.has("READY=1"), 20, what="READY")
        wm.fail.set()
        time.sleep(0.3)
        last_good = service.supervision.metrics.registry.get_sample_value(gauge)
        outage = time.monotonic()
        time.sleep(1.5)
        assert len(notify.times("WATCHDOG=1", outage)) >= 3
        assert service.supervision.metrics.registry.get_sample_value(gauge) == last_good
        assert service.engine.last_report.ok is False
    finally:
        wm.fail.clear()
        service.scheduler.shutdown(wait=False)
        thread.join(30)
        notify.close()


class Recorder:
    """A notifier that keeps every event."""

    def __init__(self):
        self.events = []

    def notify(self, event):
        self.events.append(event)


@pytest.mark.parametrize("job", ["tick", "fetch"])
def test_a_bug_in_a_job_is_said_once_and_the_loop_lives_on(tmp_path, monkeypatch, job):
    # Not a traceback per poll in the journal and a silent restart by the watchdog every two
    # minutes: one message to people, the loop alive (pinging), and a word when it works again.
    setup = Setup(tmp_path)
    notify = NotifySocket(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", notify.path)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    service = Service(load_config(setup.config_path), str(setup.config_path))
    recorder = Recorder()
    service.engine.notifiers.append(recorder)
    broken = threading.Event()
    calls = {"failed": 0}
    real = getattr(service.engine, job)

    def buggy():
        if broken.is_set():
            calls["failed"] += 1
            raise KeyError("node042")
        return real()
    setattr(service.engine, job, buggy)
    thread = run_in_thread(service, max_seconds=20)
    kinds = lambda: [e.kind for e in recorder.events if e.kind.startswith(f"{job}.")]  # noqa: E731
    try:
        wait_until(lambda: notify.has("READY=1"), 20, what="READY")
        broken.set()
        failing = time.monotonic()
        wait_until(lambda: calls["failed"] >= 4, 10, what=f"failing {job}s")
        time.sleep(0.6)
        assert kinds() == [f"{job}.failed"]
        assert "KeyError: 'node042'" in recorder.events[-1].message and recorder.events[-1].needs_human
        assert len(notify.times("WATCHDOG=1", failing)) >= 3  # alive: systemd does not restart it
        if job == "tick":
            assert service.engine.last_report.ok is False and "KeyError" in service.engine.last_report.error
            errors = service.supervision.metrics.registry.get_sample_value("autoupdate_ticks_total",
                                                                            {"result": "error"})
            assert errors >= 4, errors
        broken.clear()
        wait_until(lambda: kinds() == [f"{job}.failed", f"{job}.recovered"], 10, what="recovered")
        wait_until(lambda: service.engine.last_report.ok, 5, what="a good tick")
    finally:
        broken.clear()
        service.scheduler.shutdown(wait=False)
        thread.join(30)
        notify.close()


def ticks(service: Service, n: int, pause: float = 0.05):
    for _ in range(n):
        service._tick_job()
        time.sleep(pause)


def test_windows_hold_new_drain_work_until_reloaded_open(tmp_path):
    # DRAIN may not start today (a blackout around it); HOT may.
    setup = Setup(tmp_path, windows={"blackout": [], "drain": {"blackout": ["2000-01-01..2099-12-31"]}})
    service = Service(load_config(setup.config_path), str(setup.config_path))
    service.engine.fetch()
    setup.commit(KERNEL, "kernel 6\n")
    service.engine.fetch()
    ticks(service, 10)
    records = service.store.records()
    assert records and all(r.phase is NodePhase.PENDING for r in records.values())
    waiting = service.engine.last_report.waiting
    assert any("outside the drain maintenance window" in why for why in waiting.values()), waiting
    # The window opens by a config change (live reload): work starts.
    setup.write_config(setup.changed(windows={"drain": {}}))
    assert service.reload()
    ticks(service, 5)
    assert any(r.phase is not NodePhase.PENDING for r in service.store.records().values())
    service.engine.shutdown()


def test_newly_blacklisted_draining_node_is_resumed_not_rebooted(tmp_path):
    # Long jobs: drained nodes stay DRAINING (jobs running) while we reload.
    setup = Setup(tmp_path, cluster={"backend": "sim", "sim": {
        "partitions": {"batch": "node[01-04]", "gpu": "node[05-08]"}, "reboot_seconds": 60,
        "job_seconds": [36000, 72000], "jobs_per_node": 1.0, "speed": 1, "seed": 3}},
        nodes={"canaries": ""}, rollout={"canary_count": 0, "soak_seconds": 0, "max_unavailable": "50%"})
    service = Service(load_config(setup.config_path), str(setup.config_path))
    cluster = service.deps.workload_manager
    service.engine.fetch()
    setup.commit(KERNEL, "kernel 6\n")
    service.engine.fetch()
    ticks(service, 5)
    draining = sorted(n for n, r in service.store.records().items() if r.phase is NodePhase.DRAINING)
    assert draining, service.store.records()
    victim = draining[0]
    assert service.engine.wm.snapshot().nodes[victim].drained_by_autoupdate
    reboots_before = cluster.stats.reboots
    setup.write_config(setup.changed(nodes={"blacklist": victim}))
    assert service.reload()
    ticks(service, 5)
    rec = service.store.records()[victim]
    assert rec.phase is NodePhase.CANCELLED and "blacklist" in rec.cancel_reason
    info = service.engine.wm.snapshot().nodes[victim]
    assert not info.drained  # resumed
    assert cluster.stats.reboots == reboots_before
    history = [h["to_phase"] for h in service.store.history(node=victim, limit=50)]
    assert "rebooting" not in history and "applying" not in history
    service.engine.shutdown()


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    return {name: float(value) for name, _, value in
            (line.rpartition(" ") for line in text.splitlines() if line and not line.startswith("#"))}


def test_metrics_scraped_during_a_rollout(tmp_path):
    port = free_port()
    setup = Setup(tmp_path, metrics={"listen": f"127.0.0.1:{port}"})
    Service(load_config(setup.config_path), str(setup.config_path)).run(exit_when_done=True, max_seconds=20)
    setup.commit(KERNEL, "kernel 6\n")
    service = Service(load_config(setup.config_path), str(setup.config_path))
    thread = run_in_thread(service, exit_when_done=True, max_seconds=60)
    samples = []
    try:
        while thread.is_alive():
            try:
                samples.append(scrape(port))
            except OSError:
                pass
            time.sleep(0.1)
    finally:
        thread.join(60)
    assert service.result == 0
    assert len(samples) >= 5
    busy = [s for s in samples if sum(v for k, v in s.items() if k.startswith("autoupdate_nodes{")
                                      and 'phase="done"' not in k and 'phase="pending"' not in k) > 0]
    assert busy, "no scrape saw a node in work"
    last = samples[-1]
    assert last['autoupdate_nodes{phase="done"}'] >= 6
    assert last["autoupdate_last_successful_tick_timestamp_seconds"] > time.time() - 60
    assert last["autoupdate_paused"] == 0
    assert 0 < last["autoupdate_cluster_read_seconds"] < 5  # a real (simulated) read was timed


def timed_rollout(tmp_path, sim: dict, nodes: dict, rollout: dict, control: dict, max_seconds: float):
    """Baseline with the defaults, then a kernel commit rolled out by a fresh service with
    `control`: (exit code, wall seconds, the service, the nodes that ended DONE)."""
    setup = Setup(tmp_path, cluster={"backend": "sim", "sim": sim}, nodes=nodes, rollout=rollout)
    Service(load_config(setup.config_path), str(setup.config_path)).run(exit_when_done=True, max_seconds=20)
    setup.write_config(setup.changed(control=control))
    setup.commit(KERNEL, "kernel 6\n")
    service = Service(load_config(setup.config_path), str(setup.config_path))
    started = time.monotonic()
    code = service.run(exit_when_done=True, max_seconds=max_seconds)
    took = time.monotonic() - started
    reader = Store.open_readonly(tmp_path / "state" / "state.db")
    try:
        done = {n for n, r in reader.records().items() if r.phase is NodePhase.DONE}
    finally:
        reader.close()
    return code, took, service, done


def test_exit_when_done_does_not_call_a_repository_never_read_done(tmp_path):
    setup = Setup(tmp_path, control={"poll_interval": 1})
    setup.write_config(setup.changed(repository={"url": str(tmp_path / "no-such-repo.git")}))
    code = Service(load_config(setup.config_path), str(setup.config_path)).run(exit_when_done=True, max_seconds=3)
    assert code == 4, "exited as if rolled out, with no commit ever read"


def test_finished_work_wakes_the_loop_before_the_next_poll(tmp_path):
    # poll_interval 30 s: the DRAIN rollout of 2 idle nodes (drain, apply, reboot, verify, resume)
    # can end within seconds only if each finished step wakes the loop at once.
    sim = {"partitions": {"batch": "node[01-04]"}, "reboot_seconds": 60, "job_seconds": [60, 600],
           "jobs_per_node": 0, "speed": 300, "seed": 7}
    code, took, _, done = timed_rollout(
        tmp_path, sim, nodes={"canaries": "", "whitelist": "node[01-02]"},
        rollout={"canary_count": 0, "soak_seconds": 0, "max_unavailable": "100%"},
        control={"poll_interval": 30}, max_seconds=25)
    assert code == 0, "the rollout did not finish before the first 30 s poll"
    assert took < 20
    assert done == {"node01", "node02"}


def test_a_rebooting_node_is_looked_at_when_due_not_at_the_next_poll(tmp_path):
    # poll_interval 20 s, reboots of 2 s (120 simulated seconds at 60x): the canary's reboot is
    # noticed at a poll (nothing learnt yet); the waves start as soon as the canary passed, and the
    # two wave nodes, one after the other, are looked at when due back: about 35 s in all.
    # Without that, each of these four steps waits for a poll: over 80 s.
    sim = {"partitions": {"batch": "node[01-04]"}, "reboot_seconds": 120, "job_seconds": [60, 600],
           "jobs_per_node": 0, "speed": 60, "seed": 7}
    code, took, service, done = timed_rollout(
        tmp_path, sim, nodes={"canaries": "node01", "whitelist": "node[01-03]"},
        rollout={"canary_count": 1, "soak_seconds": 0, "max_unavailable": 1},
        control={"poll_interval": 20, "reboot_poll_interval": 5}, max_seconds=50)
    assert code == 0, "the rollout did not finish within 50 s"
    assert took < 45
    assert service.engine.reboot_clock.expected() is not None
    assert done == {"node01", "node02", "node03"}


class SlowWM:
    """Wraps the simulated cluster; every snapshot() takes `seconds` longer (a big cluster or a
    busy slurmctld)."""

    def __init__(self, inner, seconds: float):
        self.inner, self.seconds = inner, seconds

    def snapshot(self):
        time.sleep(self.seconds)
        return self.inner.snapshot()

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_extra_ticks_are_paced_by_how_long_reading_the_cluster_takes(tmp_path):
    # As test_finished_work_wakes_the_loop_before_the_next_poll, but each read takes 0.3 s: the
    # wake-ups and looks still beat the 30 s poll, and none comes sooner than 9 reads' time.
    sim = {"partitions": {"batch": "node[01-04]"}, "reboot_seconds": 60, "job_seconds": [60, 600],
           "jobs_per_node": 0, "speed": 300, "seed": 7}
    setup = Setup(tmp_path, cluster={"backend": "sim", "sim": sim}, nodes={"canaries": "", "whitelist": "node[01-02]"},
                  rollout={"canary_count": 0, "soak_seconds": 0, "max_unavailable": "100%"})
    Service(load_config(setup.config_path), str(setup.config_path)).run(exit_when_done=True, max_seconds=20)
    setup.write_config(setup.changed(control={"poll_interval": 30}))
    setup.commit(KERNEL, "kernel 6\n")
    service = Service(load_config(setup.config_path), str(setup.config_path))
    service.engine.wm = SlowWM(service.engine.wm, 0.3)
    ticks, tick = [], service.engine.tick
    service.engine.tick = lambda: (ticks.append(time.monotonic()), tick())[1]
    assert service.run(exit_when_done=True, max_seconds=29) == 0, "the rollout did not finish before the first poll"
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert len(gaps) >= 4  # drain, apply, reboot, verify and resume each woke the loop
    assert min(gaps) >= 9 * 0.3, gaps  # not one second after the last tick


@pytest.mark.parametrize("delay, read, expected", [
    (1.0, 0.02, 1.0),  # a small cluster: the wake-up delay as it was
    (1.0, 1.2, 10.8),  # 10,000 nodes: reads take at most a tenth of the time
    (20.0, 1.2, 20.0),  # a look far enough ahead is not moved
    (0.0, 0.0, 0.0),
])
def test_paced(delay, read, expected):
    assert paced(delay, read) == pytest.approx(expected)


def rollout_seconds(root: Path, slack: FakeSlack, down: str) -> tuple[float, float]:
    """(seconds from start until the rollout is DONE, seconds from then until the process loop
    returned: the bounded last chance given to queued notifications)."""
    setup = Setup(root, notify={"log": False, **slack_section(slack)})
    Service(load_config(setup.config_path), str(setup.config_path)).run(exit_when_done=True, max_seconds=20)
    setup.commit(KERNEL, "kernel 6\n")
    slack.down = down
    service = Service(load_config(setup.config_path), str(setup.config_path))
    started = time.monotonic()
    thread = run_in_thread(service, exit_when_done=True, max_seconds=60)
    reader = Store.open_readonly(root / "state" / "state.db")
    try:
        wait_until(lambda: (r := reader.latest_rollout()) is not None and r.target != reader.get_meta("baseline")
                   and r.state is RolloutState.DONE, 60, interval=0.01, what="rollout done")
    finally:
        reader.close()
    done = time.monotonic()
    thread.join(30)
    assert service.result == 0
    slack.down = ""
    return done - started, time.monotonic() - done


@pytest.mark.slow
def test_slack_outage_does_not_slow_a_rollout(tmp_path, slack_server, monkeypatch):
    monkeypatch.setenv("AU_SLACK", TOKEN)
    slack_server.hang_seconds = 3  # longer than the client's 1 s timeout: every call times out
    up, stop_up = rollout_seconds(tmp_path / "up", slack_server, "")
    posted_up = len(slack_server.messages)
    hung, stop_hung = rollout_seconds(tmp_path / "hang", slack_server, "hang")
    failing, stop_failing = rollout_seconds(tmp_path / "500", slack_server, "500")
    result = {"up": up, "hang": hung, "error500": failing,
              "exit_after_done": {"up": stop_up, "hang": stop_hung, "error500": stop_failing}}
    print("rollout wall seconds:", json.dumps(result))
    (Path(os.environ.get("AU_MEASURE_DIR", tmp_path)) / "slack-outage.json").write_text(json.dumps(result))
    assert posted_up >= 4  # Slack was really used when up
    for took in (hung, failing):
        # Measured: up 3.4-3.6 s, Slack hanging or failing 3.4-3.7 s; a notifier that delivered
        # in the engine's thread took 6.9 s with Slack hanging (1 s timeout per message).
        assert took < up * 1.2 + 1.0
    for stop in (stop_up, stop_hung, stop_failing):
        assert stop < 5.0  # shutdown gives queued messages at most a bounded last chance


def test_sigterm_waits_for_the_apply_in_progress_then_exits_0(tmp_path):
    # A HOT change applied by a slow site command: SIGTERM arrives while it runs. The command
    # is not killed; the process exits 0 only after it finished.
    marker = tmp_path / "apply.log"
    script = ("import sys, time; m = open(sys.argv[1], 'a'); m.write('start ' + sys.argv[2] + '\\n'); m.flush(); "
              "time.sleep(2); m.write('end ' + sys.argv[2] + '\\n')")
    setup = Setup(tmp_path, apply={"backend": "command", "command": [sys.executable, "-c", script, str(marker), "{node}"],
                                   "timeout": 60},
                  nodes={"canaries": "", "whitelist": "node[01-02]"},
                  rollout={"canary_count": 0, "soak_seconds": 0, "max_unavailable": "50%"})
    Service(load_config(setup.config_path), str(setup.config_path)).run(exit_when_done=True, max_seconds=20)
    setup.commit("roles/motd/tasks/main.yml", "motd 2\n", "hot change")
    proc = start_daemon(setup, {}, "--max-seconds", "60")
    try:
        wait_until(lambda: marker.exists() and "start" in marker.read_text(), 30, what="apply started")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, out[-2000:]
    lines = marker.read_text().splitlines()
    started = [ln for ln in lines if ln.startswith("start")]
    ended = [ln for ln in lines if ln.startswith("end")]
    assert started and len(ended) == len(started), lines  # every apply that began, finished
    assert "finishing the step in progress" in out
