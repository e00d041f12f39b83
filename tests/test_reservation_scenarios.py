"""Engine scenarios with rollout.drain_strategy: reservation (maintenance slots), on the simulated
cluster: slots are placed for the waves while the canaries run, and a slot never opens while the
rollout is paused, outside the DRAIN window, or before the canaries and their soak are through."""
from __future__ import annotations

from autoupdate.engine.slots import reservation_name
from autoupdate.safety import clear_pause, write_pause
from autoupdate.sim.cluster import SimJob
from enginekit import Kit

RESERVING = {"rollout": {"drain_strategy": "reservation", "reservation_seconds": 300}}
CANARIES = ("n01", "n02")


def slots(kit: Kit) -> dict[str, float]:
    return {r.nodes[0]: r.start_time for r in kit.cluster.reservations.values() if r.name.startswith("autoupdate-")}


def out_of_service(kit: Kit, node: str) -> bool:
    n = kit.cluster.nodes[node]
    return n.drained or n.reboot_until is not None


def done(kit: Kit, target: str) -> bool:
    return kit.rollout_state() == "done" and all(kit.running(n) == target for n in kit.cluster.nodes)


def test_wave_slots_are_placed_while_the_canaries_run_and_open_only_after_the_soak(tmp_path):
    kit = Kit(tmp_path, config=RESERVING, jobs={"n05": 200})
    kit.engine.fetch()
    target = kit.commit({"drain/k": "2"})
    kit.step()
    assert kit.rollout_state() == "canary"
    placed = slots(kit)
    waves = [n for n in kit.cluster.nodes if n not in CANARIES]
    assert set(placed) == set(kit.cluster.nodes)  # every node has its slot from the first tick
    soak_end_at_best = kit.clock.now() + 300 + 60  # one slot for the canaries, then the soak
    assert all(placed[n] >= soak_end_at_best - 10 for n in waves), placed
    # A long job submitted now cannot land on a wave node (it would hold the rollout for hours).
    t0 = kit.clock.now()
    long_job = SimJob(kit.cluster.new_job_id(), 1, 20000, 20000, t0)
    kit.cluster.submit(long_job)

    def no_wave_node_out_before_the_waves():
        if kit.rollout_state() in ("canary", "soak"):
            assert not [n for n in waves if out_of_service(kit, n)]

    kit.run_until(lambda: done(kit, target), each=no_wave_node_out_before_the_waves)
    assert kit.clock.now() - t0 < 20000  # the long job did not hold anyone up
    assert not slots(kit)  # every reservation removed
    assert long_job.start is not None and set(long_job.nodes) <= set(CANARIES)  # ran on an updated node


def test_a_failed_canary_removes_the_wave_slots_and_touches_no_wave_node(tmp_path):
    kit = Kit(tmp_path, config=RESERVING, fail_apply=["n01"])
    kit.engine.fetch()
    baseline = kit.source.branch[-1]
    kit.commit({"drain/k": "2"})
    kit.step()
    assert len(slots(kit)) == 8
    kit.run_until(lambda: kit.rollout_state() == "halted")
    for _ in range(5):
        kit.step()
    assert set(slots(kit)) <= set(CANARIES)  # the wave nodes' reservations are gone
    waves = [n for n in kit.cluster.nodes if n not in CANARIES]
    assert all(kit.phase(n) == "cancelled" for n in waves)
    assert not any(out_of_service(kit, n) or kit.running(n) != baseline for n in waves)


def test_a_slot_that_comes_due_while_paused_moves_back_and_the_node_stays_in_service(tmp_path):
    kit = Kit(tmp_path, config={**RESERVING, "nodes": {"canaries": ""},
                                "rollout": {**RESERVING["rollout"], "max_unavailable": 1}},
              jobs={"n01": 600, "n05": 600})
    kit.engine.fetch()
    target = kit.commit({"drain/k": "2"})
    kit.step()
    due = slots(kit)
    write_pause(kit.settings.pause_file, "looking at a canary", "admin", kit.clock.now())
    in_flight = {n for n in kit.cluster.nodes if out_of_service(kit, n)}
    for _ in range(180):  # 30 minutes: every slot planned in that time comes due
        kit.step()
        assert {n for n in kit.cluster.nodes if out_of_service(kit, n)} <= in_flight
    assert any(due[n] < kit.clock.now() for n in due if n not in in_flight)  # some really came due...
    moved = slots(kit)
    assert all(moved[n] > kit.clock.now() for n in moved)  # ...and moved back instead of opening
    assert all(kit.phase(n) == "done" for n in in_flight)  # work already under way finished
    assert all("(paused)" in kit.engine.last_report.waiting[n] for n in moved)
    clear_pause(kit.settings.pause_file)
    kit.run_until(lambda: done(kit, target))
    assert not slots(kit)


def test_a_slot_that_comes_due_outside_the_drain_window_moves_to_its_next_opening(tmp_path):
    kit = Kit(tmp_path, config={**RESERVING, "nodes": {"canaries": ""}}, jobs={"n03": 100})
    kit.engine.fetch()
    target = kit.commit({"drain/k": "2"})
    kit.step()
    assert slots(kit)["n03"] > kit.clock.now()  # after its job
    opens = kit.clock.now() + 7200
    kit.engine.window_gate = lambda klass, now: None if now >= opens else "outside the drain window"
    kit.engine.window_opens = lambda klass, now: max(now, opens)
    for _ in range(30):
        kit.step()
    assert not out_of_service(kit, "n03") and kit.phase("n03") == "draining"
    assert slots(kit)["n03"] == opens and reservation_name("n03") in kit.cluster.reservations
    kit.run_until(lambda: done(kit, target), seconds=60)
    assert kit.store.record("n03").since >= opens  # drained, rebooted and back only once it opened


def test_a_slot_that_opens_on_a_busy_node_drains_it_so_nothing_new_starts_when_the_reservation_ends(tmp_path):
    kit = Kit(tmp_path, config={**RESERVING, "nodes": {"canaries": ""}}, jobs={"n03": 600})
    kit.engine.fetch()
    target = kit.commit({"drain/k": "2"})
    kit.step()
    assert slots(kit)["n03"] > kit.clock.now() + 500
    # A job started between autoupdate's read and its reservation update (or one that overran):
    # the slot opens while the node is still busy.
    kit.cluster.reserve(reservation_name("n03"), "n03", kit.clock.now() + 50, "autoupdate: x")
    kit.step(60)
    node = kit.cluster.nodes["n03"]
    assert node.jobs and node.drained and kit.phase("n03") == "draining"  # job runs on, nothing new starts
    kit.run_until(lambda: done(kit, target))
    assert kit.cluster.stats.jobs_killed == 0


def test_a_node_whose_reservation_vanished_is_not_drained_while_paused(tmp_path):
    kit = Kit(tmp_path, config={**RESERVING, "nodes": {"canaries": ""}}, jobs={"n03": 600})
    kit.engine.fetch()
    target = kit.commit({"drain/k": "2"})
    kit.step()
    write_pause(kit.settings.pause_file, "", "admin", kit.clock.now())
    kit.cluster.unreserve(reservation_name("n03"))  # expired while autoupdate was down, or deleted by hand
    for _ in range(90):
        kit.step()
        assert not kit.cluster.nodes["n03"].drained
    assert "paused" in kit.engine.last_report.waiting["n03"]
    clear_pause(kit.settings.pause_file)
    kit.run_until(lambda: done(kit, target))
