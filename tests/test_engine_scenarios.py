"""Engine scenarios on the simulated cluster (manual clock, work run inline)."""
from __future__ import annotations

import pytest

from autoupdate.detect.image_manifest import ImageManifestDetector
from autoupdate.model import NodePhase, REASON_PREFIX
from autoupdate.ports import WorkloadManagerError
from autoupdate.safety import write_pause, clear_pause
from enginekit import Kit


def all_done(kit: Kit, target: str) -> bool:
    return kit.rollout_state() == "done" and all(kit.running(n) == target for n in kit.cluster.nodes)


def test_drain_rollout_canaries_first_then_waves(tmp_path):
    kit = Kit(tmp_path, jobs={"n01": 300, "n05": 1000})
    kit.engine.fetch()  # baseline
    target = kit.commit({"drain/k": "2"})
    order: list[str] = []

    def record_starts():
        for n in kit.cluster.nodes:
            if kit.phase(n) not in (None, "pending") and n not in order:
                order.append(n)

    kit.run_until(lambda: all_done(kit, target), each=record_starts)
    assert set(order[:2]) == {"n01", "n02"}, order  # the canaries went first
    assert kit.cluster.stats.jobs_killed == 0
    assert kit.cluster.stats.jobs_completed >= 2  # both running jobs ran to their end
    kinds = [e.kind for e in kit.notified]
    assert kinds.index("canary.passed") < kinds.index("rollout.done")


def test_hot_change_is_applied_without_draining(tmp_path):
    kit = Kit(tmp_path, jobs={"n03": 5000})
    kit.engine.fetch()
    target = kit.commit({"hot/m": "2"})
    kit.run_until(lambda: all_done(kit, target))
    assert kit.cluster.stats.reboots == 0
    assert kit.cluster.stats.jobs_completed == 0  # the job on n03 still runs: nothing waited for it
    assert not any(n.drained for n in kit.cluster.nodes.values())


def test_good_change_touches_nothing(tmp_path):
    kit = Kit(tmp_path)
    kit.engine.fetch()
    target = kit.commit({"docs/x": "1"})
    kit.step()
    assert kit.rollout_state() == "done"
    assert kit.store.applied() == {n: target for n in kit.cluster.nodes}
    assert kit.cluster.stats.reboots == 0


def test_canary_failure_halts_and_leaves_it_drained_with_reason(tmp_path):
    kit = Kit(tmp_path, fail_apply=["n01"])
    kit.engine.fetch()
    kit.commit({"drain/k": "2"})
    kit.run_until(lambda: kit.rollout_state() == "halted")
    for _ in range(20):
        kit.step()
    assert kit.phase("n01") == "failed"
    node = kit.cluster.nodes["n01"]
    assert node.drained and node.reason.startswith(REASON_PREFIX) and "canary failed" in node.reason
    # nothing beyond the canaries was touched; the other canary was resumed or finished
    assert all(kit.phase(n) in ("cancelled", None) for n in kit.cluster.nodes if n not in ("n01", "n02"))
    assert not any(kit.cluster.nodes[n].drained for n in kit.cluster.nodes if n != "n01")
    assert any(e.kind == "rollout.halted" and e.needs_human for e in kit.notified)
    assert [e.nodes for e in kit.notified if e.kind == "canary.failed"] == [("n01",)]


def test_retries_exhausted_leave_node_drained_with_reason_and_budget_halts(tmp_path):
    kit = Kit(tmp_path, fail_boot=["n05", "n06"], config={"nodes": {"canaries": ""}})
    kit.engine.fetch()
    kit.commit({"drain/k": "2"})
    kit.run_until(lambda: kit.rollout_state() == "halted", seconds=60)
    for n in ("n05", "n06"):
        rec = kit.store.record(n)
        assert rec.phase is NodePhase.FAILED and rec.attempts == 3
        assert kit.cluster.nodes[n].drained and "failed after 3 attempt(s)" in kit.cluster.nodes[n].reason
    assert "failure budget" in kit.store.latest_rollout().reason


def test_pause_in_the_middle_of_a_wave(tmp_path):
    kit = Kit(tmp_path, config={"nodes": {"canaries": ""}, "rollout": {"max_unavailable": 1}},
              jobs={n: 400 for n in ("n01", "n02", "n03", "n04", "n05", "n06", "n07", "n08")})
    kit.engine.fetch()
    target = kit.commit({"drain/k": "2"})
    kit.step()
    started = {n for n in kit.cluster.nodes if kit.phase(n) != "pending"}
    assert len(started) == 2  # one per partition
    write_pause(kit.settings.pause_file, "bugfixing the playbook", "admin", kit.clock.now())
    for _ in range(200):
        kit.step()
    assert {n for n in kit.cluster.nodes if kit.phase(n) != "pending"} == started  # nothing new
    assert all(kit.phase(n) == "done" for n in started)  # in flight finished
    clear_pause(kit.settings.pause_file)
    kit.run_until(lambda: all_done(kit, target))
    assert [e.kind for e in kit.notified].count("paused") == 1


def test_blacklisted_node_is_never_touched(tmp_path):
    kit = Kit(tmp_path, config={"nodes": {"blacklist": "n03", "canaries": "n01"}})
    kit.engine.fetch()
    target = kit.commit({"drain/k": "2"})
    kit.run_until(lambda: kit.rollout_state() == "done")
    assert kit.store.record("n03") is None
    assert kit.running("n03") != target and kit.cluster.nodes["n03"].boot_time < kit.clock.now() - 3600
    assert all(kit.running(n) == target for n in kit.cluster.nodes if n != "n03")


def test_human_drained_node_is_never_resumed_nor_overwritten(tmp_path):
    kit = Kit(tmp_path)
    kit.cluster.drain(["n04"], "bad DIMM, ticket 4711", user="alice")
    kit.engine.fetch()
    kit.commit({"drain/k": "2"})
    for _ in range(300):
        kit.step()
    node = kit.cluster.nodes["n04"]
    assert node.drained and node.reason == "bad DIMM, ticket 4711" and node.reason_user == "alice"
    assert kit.phase("n04") == "pending"
    assert "drained by alice" in kit.engine.last_report.held["n04"]
    held = [e for e in kit.notified if e.kind == "node.held"]
    assert len(held) == 1 and held[0].nodes == ("n04",)  # reported once, not every tick


def test_human_redrain_mid_update_is_respected(tmp_path):
    kit = Kit(tmp_path, config={"nodes": {"canaries": ""}, "rollout": {"max_unavailable": 4}},
              jobs={"n01": 5000})
    kit.engine.fetch()
    kit.commit({"drain/k": "2"})
    kit.step()
    assert kit.phase("n01") == "draining"
    kit.cluster.drain(["n01"], "investigating", user="bob")
    for _ in range(50):
        kit.step()
    assert kit.phase("n01") == "cancelled"
    assert kit.cluster.nodes["n01"].reason == "investigating"


@pytest.mark.parametrize("max_unavailable,already_down", [(1, 0), (2, 0), (2, 1), ("50%", 1)])
def test_capacity_budget_is_never_exceeded(tmp_path, max_unavailable, already_down):
    kit = Kit(tmp_path, n=8, config={"nodes": {"canaries": ""}, "rollout": {"max_unavailable": max_unavailable}},
              jobs={f"n0{i}": 100 * i for i in range(1, 9)})
    for i in range(already_down):
        kit.cluster.drain([f"n0{4 - i}"], "hardware", user="root")
    kit.engine.fetch()
    kit.commit({"drain/k": "2"})
    limit = max_unavailable if isinstance(max_unavailable, int) else 2

    def check():
        for part in ("a", "b"):
            names = [n for n, node in kit.cluster.nodes.items() if part in node.partitions]
            out = sum(1 for n in names if kit.cluster.nodes[n].drained or kit.cluster.nodes[n].reboot_until)
            assert out <= limit, (part, out, limit)

    held = {f"n0{4 - i}" for i in range(already_down)}
    kit.run_until(lambda: all(kit.phase(n) == "done" for n in kit.cluster.nodes if n not in held), each=check)
    assert all(kit.phase(n) == "pending" for n in held)  # someone else's: waits, untouched
    assert kit.cluster.stats.jobs_killed == 0


def test_idle_nodes_first_then_soonest_ending(tmp_path):
    kit = Kit(tmp_path, n=4, config={"nodes": {"canaries": ""}, "rollout": {"max_unavailable": 1}},
              jobs={"n01": 3000, "n02": 100, "n03": 200, "n04": 5000})
    kit.engine.fetch()
    kit.commit({"drain/k": "2"})
    kit.step(1)
    assert kit.phase("n02") == "draining" and kit.phase("n01") == "pending"  # partition a: n02 ends sooner
    assert kit.phase("n03") == "draining" and kit.phase("n04") == "pending"  # partition b


def test_newer_commit_supersedes_without_rebooting_twice(tmp_path):
    kit = Kit(tmp_path, config={"nodes": {"canaries": ""}, "rollout": {"max_unavailable": 4}},
              jobs={n: 1000 for n in ("n01", "n02", "n05", "n06")})
    kit.engine.fetch()
    kit.commit({"drain/k": "2"}, "first")
    kit.step()
    assert kit.phase("n01") == "draining"
    second = kit.commit({"drain/k": "3"}, "second")
    kit.run_until(lambda: all_done(kit, second))
    assert kit.cluster.stats.reboots == 8  # every node exactly once
    assert [r.state.value for r in kit.store.rollouts()] == ["done", "superseded"]


def test_error_commit_starts_nothing(tmp_path):
    kit = Kit(tmp_path, config={"detectors": [{"type": "path_rules", "rules_file": "rules.yaml"}]})
    kit.engine.fetch()
    kit.commit({"rules.yaml": "- {glob: 'x/*', class: [unclosed"}, "broken rules")
    kit.step()
    assert kit.rollout_state() == "error"
    assert "rules.yaml" in kit.store.latest_rollout().reason
    assert kit.store.records() == {}
    assert any(e.kind == "rollout.error" for e in kit.notified)


def test_unreadable_cluster_means_no_action(tmp_path):
    kit = Kit(tmp_path, config={"nodes": {"canaries": ""}})
    kit.engine.fetch()
    kit.commit({"drain/k": "2"})
    kit.cluster.unreadable = True
    report = kit.engine.tick()
    assert not report.ok and "cannot read" in report.error
    assert not any(n.drained for n in kit.cluster.nodes.values())
    kit.cluster.unreadable = False
    kit.step()
    assert any(n.drained for n in kit.cluster.nodes.values())


def test_missing_base_commit_after_force_push_is_reported(tmp_path):
    kit = Kit(tmp_path)
    kit.engine.fetch()
    kit.commit({"drain/k": "2"})
    kit.source.rewrite(2)  # history rewritten: the baseline and the commit are gone
    kit.source.commit({"README": "y", "drain/k": "5"}, "rewritten")
    kit.engine.fetch()
    assert any(e.kind == "source.force_push" for e in kit.notified)
    assert kit.rollout_state() == "error" and "missing" in kit.store.latest_rollout().reason


def test_fetch_failure_is_reported_not_raised(tmp_path):
    kit = Kit(tmp_path)
    kit.source.fail_fetch = True
    assert kit.engine.fetch() is None
    assert any(e.kind == "source.error" for e in kit.notified)


def test_failing_notifier_never_stops_a_rollout(tmp_path):
    kit = Kit(tmp_path)

    class Broken:
        def notify(self, event):
            raise RuntimeError("slack is down")

    kit.engine.notifiers.insert(0, Broken())
    kit.engine.fetch()
    target = kit.commit({"drain/k": "2"})
    kit.run_until(lambda: all_done(kit, target))


def test_admin_retry_and_skip(tmp_path):
    kit = Kit(tmp_path, fail_apply=["n07"], config={"nodes": {"canaries": ""}, "rollout": {"failure_budget": 3}})
    kit.engine.fetch()
    target = kit.commit({"drain/k": "2"})
    kit.run_until(lambda: kit.phase("n07") == "failed", seconds=30)
    kit.applier.fail.clear()
    assert kit.engine.retry(["n07", "n01"]) == ["n07"]
    kit.run_until(lambda: all_done(kit, target), seconds=30)
    assert kit.cluster.stats.jobs_killed == 0


def _drained_by_hand_during_the_last_attempt(kit: Kit, node: str) -> None:
    real, calls = kit.applier.apply, []

    def apply(nodes, target, klass, actions):
        calls.extend(n for n in nodes if n == node)
        if len(calls) == 3:  # while Ansible runs its last attempt, an admin drains the node
            kit.cluster.drain([node], "disk errors, ticket 4711", user="alice")
        return real(nodes, target, klass, actions)
    kit.applier.apply = apply


def _drain_refused(kit: Kit, node: str) -> None:
    real = kit.cluster.drain

    def refuse(nodes, reason):
        if node in nodes:
            raise WorkloadManagerError("scontrol: Invalid node state specified")
        return real(nodes, reason)
    kit.cluster.drain = refuse


@pytest.mark.parametrize("before, drained, reason_has, message_has", [
    # Its live change failed for good: what it runs is unknown, so no new job may start on it.
    (None, True, "failed after 3 attempt(s): apply: simulated apply failure", "drained: its jobs run on"),
    # A human holds it already: their drain and reason stay.
    (_drained_by_hand_during_the_last_attempt, True, "disk errors, ticket 4711", "not drained: drained by alice"),
    # Slurm refuses the drain: said, and the record does not claim a drain that did not happen.
    (_drain_refused, False, "", "drain failed: still in service"),
])
def test_a_node_whose_live_change_failed_for_good_is_drained_and_its_job_runs_on(
        tmp_path, before, drained, reason_has, message_has):
    kit = Kit(tmp_path, fail_apply=["n07"], jobs={"n07": 50_000},
              config={"nodes": {"canaries": ""}, "rollout": {"failure_budget": 3}})
    kit.engine.fetch()
    kit.commit({"hot/m": "2"})
    if before:
        before(kit, "n07")
    kit.run_until(lambda: kit.phase("n07") == "failed", seconds=30)
    node, rec = kit.cluster.nodes["n07"], kit.store.record("n07")
    assert node.drained is drained and reason_has in node.reason
    assert rec.drained_by_us is (before is None)
    assert node.jobs and kit.cluster.stats.jobs_killed == 0  # its job runs on
    failed = [e.message for e in kit.notified if e.kind == "node.failed"]
    assert len(failed) == 1 and message_has in failed[0], failed


def _redrain_refused(kit: Kit, node: str) -> None:
    real = kit.cluster.drain

    def refuse(nodes, reason):
        if node in nodes and "failed" in reason:  # the first drain goes through, the re-drain does not
            raise WorkloadManagerError("slurm_update error: Unable to contact slurm controller")
        return real(nodes, reason)
    kit.cluster.drain = refuse


def _resumed_by_hand_and_redrain_refused(kit: Kit, node: str) -> None:
    _redrain_refused(kit, node)
    real, calls = kit.applier.apply, []

    def apply(nodes, target, klass, actions):
        calls.extend(n for n in nodes if n == node)
        if len(calls) == 3:  # during its last attempt, someone resumes it by hand
            kit.cluster.resume([node])
        return real(nodes, target, klass, actions)
    kit.applier.apply = apply


@pytest.mark.parametrize("before, drained, message_has", [
    (None, True, "(left drained)"),
    # Slurm cannot be reached to set the failure as its reason: it stays drained as it was.
    (_redrain_refused, True, "(left drained; its reason could not be updated)"),
    # ...and it was no longer drained: the message must not claim it is.
    (_resumed_by_hand_and_redrain_refused, False, "(re-drain failed: it may take new jobs)"),
])
def test_a_drained_node_that_failed_for_good_says_how_it_was_left(tmp_path, before, drained, message_has):
    kit = Kit(tmp_path, fail_apply=["n07"], config={"nodes": {"canaries": ""}, "rollout": {"failure_budget": 3}})
    kit.engine.fetch()
    kit.commit({"drain/k": "2"})
    if before:
        before(kit, "n07")
    kit.run_until(lambda: kit.phase("n07") == "failed", seconds=30)
    assert kit.cluster.nodes["n07"].drained is drained
    failed = [e.message for e in kit.notified if e.kind == "node.failed"]
    assert len(failed) == 1 and failed[0].endswith(message_has), failed


def test_a_hot_node_drained_for_its_failure_is_resumed_when_a_retry_succeeds(tmp_path):
    kit = Kit(tmp_path, fail_apply=["n07"], config={"nodes": {"canaries": ""}, "rollout": {"failure_budget": 3}})
    kit.engine.fetch()
    target = kit.commit({"hot/m": "2"})
    kit.run_until(lambda: kit.phase("n07") == "failed", seconds=30)
    assert kit.cluster.nodes["n07"].drained
    kit.applier.fail.clear()
    assert kit.engine.retry(["n07"]) == ["n07"]
    kit.run_until(lambda: kit.phase("n07") == "done", seconds=30)
    assert kit.running("n07") == target and not kit.cluster.nodes["n07"].drained
    assert kit.cluster.stats.reboots == 0


@pytest.mark.parametrize("first, newer, retargeted, klass, reboots", [
    ({"drain/k": "2"}, {"drain/k": "3"}, True, "drain", 1),  # straight to the newer: one reboot, not two
    # The newer reverts the failed one: nothing to do by the detector, but the failed attempt may
    # have changed the node, so the newer is still applied (and rebooted) as before.
    ({"drain/k": "2"}, {"drain/k": "1"}, True, "drain", 1),
    ({"hot/m": "2"}, {"hot/m": "3"}, True, "hot", 0),
    # A live change that the newer commit makes DRAIN: not drained yet, so it finishes its own
    # change live, then takes the newer through a drain.
    ({"hot/m": "2"}, {"hot/m": "3", "drain/k": "2"}, False, "hot", 1),
])
def test_a_node_waiting_to_retry_when_a_newer_commit_comes(tmp_path, first, newer, retargeted, klass, reboots):
    kit = Kit(tmp_path, fail_apply=["n07"],
              config={"nodes": {"canaries": ""}, "rollout": {"failure_budget": 3, "retry_backoff_seconds": 600}})
    rebooted = []
    real = kit.cluster.reboot
    kit.cluster.reboot = lambda nodes, *a, **k: (rebooted.extend(nodes), real(nodes, *a, **k))[1]
    kit.engine.fetch()
    old = kit.commit(first)
    kit.run_until(lambda: kit.phase("n07") == "retry_wait")
    kit.applier.fail.clear()
    sha = kit.commit(newer)  # its rollout is superseded while n07 waits to retry
    rec = kit.store.record("n07")
    assert (rec.target, rec.phase.value, rec.klass.label) == (sha if retargeted else old, "retry_wait", klass)
    kit.run_until(lambda: all_done(kit, sha), seconds=60)
    assert kit.running("n07") == sha and rebooted.count("n07") == reboots
    assert not kit.cluster.nodes["n07"].drained and kit.cluster.stats.jobs_killed == 0


IMAGES = "groups:\n  compute: {{nodes: 'n[01-08]', image: {image}}}\n"


@pytest.mark.parametrize("waiting, rollout", [
    ("retry_wait", {"failure_budget": 3, "retry_backoff_seconds": 600}),
    ("failed", {"failure_budget": 3, "max_attempts": 1}),  # given up on, then tried on the newer commit
])
def test_a_node_tried_again_on_a_newer_commit_gets_that_commits_image(tmp_path, waiting, rollout):
    kit = Kit(tmp_path, fail_apply=["n07"], config={"nodes": {"canaries": ""}, "rollout": rollout})
    kit.engine.detectors.append(ImageManifestDetector())
    kit.source.commit({"images.yml": IMAGES.format(image="img-1")}, "base images")
    kit.engine.fetch()
    images = []  # what each apply on n07 was told to boot
    real = kit.applier.apply
    kit.applier.apply = lambda nodes, target, klass, actions: (
        images.append([a.detail["image"] for a in actions.get("n07", ())]), real(nodes, target, klass, actions))[1]
    kit.commit({"images.yml": IMAGES.format(image="img-2")})
    kit.run_until(lambda: kit.phase("n07") == waiting)
    kit.applier.fail.clear()
    sha = kit.commit({"images.yml": IMAGES.format(image="img-3")})
    kit.run_until(lambda: kit.phase("n07") == "done", seconds=60)
    assert kit.running("n07") == sha
    assert [i for i in images if i][-1] == ["img-3"], images  # not the failed commit's img-2


class Crash(BaseException):
    """Stands for SIGKILL: the process dies right after persisting, before the action."""


def _arm(kit: Kit, phase: str, node: str) -> None:
    targets = {"draining": (kit.cluster, "drain"), "applying": (kit.applier, "apply"),
               "rebooting": (kit.cluster, "reboot"), "verifying": (kit.engine.checks[0], "check"),
               "resuming": (kit.cluster, "resume")}
    obj, name = targets[phase]
    real = getattr(obj, name)

    def once(*args, **kwargs):
        flat = [a for arg in args for a in (arg if isinstance(arg, (list, tuple)) else [arg])]
        if node in flat or any(getattr(a, "node", None) == node for a in args):
            setattr(obj, name, real)
            raise Crash(phase)
        return real(*args, **kwargs)

    setattr(obj, name, once)


@pytest.mark.parametrize("phase", ["draining", "applying", "rebooting", "verifying", "resuming"])
def test_killed_in_every_phase_resumes_where_it_stopped(tmp_path, phase):
    kit = Kit(tmp_path, config={"nodes": {"canaries": ""}}, jobs={"n01": 500, "n02": 50})
    kit.engine.fetch()
    target = kit.commit({"drain/k": "2"})
    _arm(kit, phase, "n01")
    with pytest.raises(Crash):
        kit.run_until(lambda: False, max_steps=500)
    assert kit.phase("n01") == phase  # persisted before the action it stands for
    kit.restart()
    kit.run_until(lambda: all_done(kit, target))
    assert kit.cluster.stats.jobs_killed == 0
    assert not any(n.drained for n in kit.cluster.nodes.values())
    assert kit.cluster.stats.reboots == 8


@pytest.mark.parametrize("phase", ["draining", "rebooting"])
def test_newly_blacklisted_in_flight_node_is_resumed_not_rebooted(tmp_path, phase):
    from autoupdate.config import parse_config
    kit = Kit(tmp_path, config={"nodes": {"canaries": ""}, "rollout": {"max_unavailable": 4}},
              jobs={"n01": 900})
    data = kit.settings.model_dump(by_alias=True)
    data["nodes"]["blacklist"] = "n01"
    blacklist = lambda: kit.engine.reconfigure(parse_config(data))  # noqa: E731
    kit.engine.fetch()
    kit.commit({"drain/k": "2"})
    boot = kit.cluster.nodes["n01"].boot_time
    if phase == "rebooting":  # blacklisted after the change was applied, before the reboot
        real = kit.applier.apply
        kit.applier.apply = lambda nodes, *a: (real(nodes, *a), blacklist())[0]
        kit.run_until(lambda: kit.phase("n01") != "draining" and kit.phase("n01") != "pending")
    else:
        kit.step()
        assert kit.phase("n01") == "draining"
        blacklist()
    for _ in range(10):
        kit.step()
    assert kit.phase("n01") == "cancelled"
    assert not kit.cluster.nodes["n01"].drained and kit.cluster.nodes["n01"].boot_time == boot


def test_drift_found_without_a_commit_is_corrected_like_a_change(tmp_path):
    from autoupdate.model import ChangeClass, Verdict
    kit = Kit(tmp_path, config={"nodes": {"canaries": ""}})
    head = kit.source.branch[-1]
    kit.engine.fetch()
    asked = []

    def check(sha, managed):
        asked.append((sha, tuple(managed)))
        return Verdict(sha, sha, {"n03": ChangeClass.DRAIN, "n04": ChangeClass.GOOD})

    write_pause(kit.settings.pause_file, "", "x", 0)
    assert kit.engine.correct_drift(check) is None and not asked  # paused: not even checked
    clear_pause(kit.settings.pause_file)
    rollout = kit.engine.correct_drift(check)
    assert rollout is not None and rollout.target == head and asked[0][0] == head
    kit.run_until(lambda: kit.rollout_state() == "done")
    assert kit.cluster.stats.reboots == 1 and kit.phase("n03") == "done" and kit.store.record("n04") is None
    errors = lambda sha, managed: Verdict(sha, sha, {}, error="host n05 unreachable")  # noqa: E731
    assert kit.engine.correct_drift(errors) is None
    assert any(e.kind == "drift.error" and "unreachable" in e.message for e in kit.notified)


@pytest.mark.parametrize("wake_fails", [False, True])
def test_each_step_that_lets_a_node_move_on_wakes_the_loop_and_a_failing_wake_changes_nothing(tmp_path, wake_fails):
    kit = Kit(tmp_path)
    kit.engine.fetch()
    wakes: list[str] = []

    def wake():
        wakes.append(kit.phase("n01") or "")
        if wake_fails:
            raise RuntimeError("scheduler gone")

    kit.engine.wake = wake
    target = kit.commit({"drain/k": "2"})
    kit.run_until(lambda: all_done(kit, target))
    assert kit.cluster.stats.jobs_killed == 0
    # drain issued, apply finished, reboot issued, verification finished, resume issued
    for phase in ("draining", "applying", "rebooting", "verifying", "resuming"):
        assert phase in wakes, (phase, wakes)
