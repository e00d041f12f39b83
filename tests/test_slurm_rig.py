"""The Slurm test rig itself: a second, private 2-node cluster next to the session one."""
from __future__ import annotations

import time

import pytest

from rig import SlurmRig
from rig.fixtures import short_dir

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def small_rig(tmp_path_factory, slurm_rig_session):  # the session rig must be up: stop() spares it
    rig = SlurmRig(short_dir(tmp_path_factory, "rig2-"), n_nodes=2, prefix="tn", reboot_delay=0.1)
    rig.start()
    yield rig
    rig.stop()


def test_power_reset_boots_what_was_staged_with_a_new_boot_time(small_rig):
    rig = small_rig
    before = rig.node_info("tn001")["BootTime"]
    rig.stage("tn001", "abc123")
    time.sleep(1.1)  # boot times have a 1 s resolution
    assert rig.power_reset("tn001")
    rig.wait_rebooted("tn001", before, timeout=20)
    assert rig.booted("tn001") == "abc123" and rig.booted("tn002") == "initial"


def test_never_back_node_stays_down_until_reset(small_rig):
    rig = small_rig
    rig.set_never_back("tn002")
    assert not rig.power_reset("tn002", delay=0)
    assert not rig.slurmd_running("tn002")
    rig.set_never_back("tn002", False)
    assert rig.power_on("tn002")
    assert rig.slurmd_running("tn002")
    rig.wait_nodes_state({"IDLE"}, ["tn002"], timeout=20)


def test_jobs_run_and_report_their_end_state(small_rig):
    job = small_rig.submit(["sh", "-c", "exit 3"], nodes="tn001")
    assert small_rig.wait_job(job, {"COMPLETED", "FAILED"}) == "FAILED"
    job = small_rig.submit("true", nodes=["tn001", "tn002"])
    assert small_rig.wait_job(job, {"COMPLETED", "FAILED"}) == "COMPLETED"


def test_stop_ends_only_its_own_processes(tmp_path_factory, slurm_rig_session):
    rig = SlurmRig(short_dir(tmp_path_factory, "rig3-"), n_nodes=1, prefix="st")
    rig.start()
    pids = rig.own_pids()
    assert len(pids) >= 3  # munged, slurmctld, slurmd
    others = slurm_rig_session.own_pids()
    assert others and not set(pids) & set(others)
    rig.stop()
    assert rig.own_pids() == []
    assert all(p in slurm_rig_session.own_pids() for p in others)  # the other rig is untouched
