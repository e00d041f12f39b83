"""End to end: `autoupdate run --exit-when-done` on the real Slurm rig, rebooting through real
IPMI-over-LAN BMCs (tests/bmc, own process) whose power reset restarts that node's slurmd.

The applier stages the target commit into the rig node's `staged` file; a BMC reset boots it
(staged -> booted, slurmd restarted as freshly booted); verify.revision reads `booted` back.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from autoupdate.model import NodePhase
from bmc.fleet import BmcFleet
from rig.rollout import RolloutHarness

pytestmark = [pytest.mark.ipmi, pytest.mark.slurm, pytest.mark.slow]

SECRET = "bmc-S3cret!pw"
WRONG = "0000000bad0000000bad0000000bad0000000bad"
HYPERVISORS = {"hv1": ["node003", "node004"]}  # a BMC of its own; resetting it reboots its VMs


@pytest.fixture(scope="module")
def fleet(slurm_rig_session):
    rig = slurm_rig_session

    def on_power(node, action):
        # Each in its own thread: a slow slurmd restart must not delay other BMCs' events.
        fn = {"reset": rig.power_reset, "cycle": rig.power_reset, "on": rig.power_on,
              "off": rig.power_off, "soft": rig.power_off}[action]
        for target in HYPERVISORS.get(node, [node]):
            threading.Thread(target=fn, args=(target,), daemon=True).start()

    with BmcFleet([*rig.nodes, *HYPERVISORS], users={"admin": SECRET}, on_power=on_power) as f:
        yield f


@pytest.fixture
def bmcs(fleet, slurm_rig):
    for n in [*slurm_rig.nodes, *HYPERVISORS]:
        fleet.silence(n, False)
        fleet.set(n, "powered", True)
        fleet.set(n, "bootdev", "default")
    with fleet._lock:
        fleet.events.clear()
    return fleet


def harness(tmp: Path, rig, fleet, wrong_node: str = "-", **overrides) -> RolloutHarness:
    """The rig's rollout harness, rebooting through the test BMCs (credentials in a file)."""
    cred = tmp / "bmc.cred"
    cred.write_text(f"admin:{SECRET}\n")
    cred.chmod(0o600)
    stage = (f"mkdir -p {rig.dir}/nodes/{{node}} && "  # hypervisors are no rig nodes: make room
             f"case {{node}} in {wrong_node}) echo {WRONG} ;; "
             f"*) echo {{target}} ;; esac > {rig.dir}/nodes/{{node}}/staged")
    config = {
        "nodes": {"canaries": ""},
        "detectors": [{"type": "path_rules", "rules": [
            {"glob": "hypervisor/**", "class": "drain", "nodes": "hv1"},
            {"glob": "kernel/**", "class": "drain"}]}],
        "rollout": {"canary_count": 0, "max_attempts": 3, "failure_budget": 4},
        "apply": {"command": ["sh", "-c", stage]},
        "reboot": {"strategy": "ipmi", "timeout": 30},
        "power": {"backend": "ipmi", "addresses": fleet.addresses(), "timeout": 3, "concurrency": 4,
                  "credentials_file": str(cred)},
        "control": {"poll_interval": 0.3, "log_level": "debug"},
    }
    for section, values in overrides.items():
        config[section] = {**config.get(section, {}), **values}
    return RolloutHarness(tmp, rig, **config)


def boot_seconds(rig, node: str, wait: float = 15.0) -> float:
    """The node's BootTime (waits while a just-restarted slurmd has not registered yet)."""
    deadline = time.monotonic() + wait
    while True:
        text = rig.node_info(node).get("BootTime", "None")
        if text not in ("None", "") or time.monotonic() > deadline:
            return datetime.fromisoformat(text).timestamp()
        time.sleep(0.2)


def assert_no_secret(h: RolloutHarness) -> None:
    text = h.log.read_text()
    assert text, "the service logged nothing"
    assert SECRET not in text


def test_full_drain_rollout_with_the_ipmi_strategy(tmp_path, slurm_rig, bmcs):
    h = harness(tmp_path, slurm_rig, bmcs, reboot={"boot_device": "network"})
    h.baseline()
    boots_before = {n: slurm_rig.node_info(n).get("BootTime") for n in slurm_rig.nodes}
    sha = h.commit("kernel/version", "2", "new kernel")
    started = time.monotonic()
    assert h.run() == 0, h.log.read_text()[-3000:]
    took = time.monotonic() - started
    recs = h.records()
    for node in slurm_rig.nodes:
        assert recs[node].phase is NodePhase.DONE and recs[node].target == sha
        assert slurm_rig.booted(node) == sha  # it booted what was staged, through the BMC
        state = bmcs.state(node)
        assert state["history"][-1] == "reset" and state["bootdev"] == "network"
        assert slurm_rig.node_info(node).get("BootTime") != boots_before[node]
    slurm_rig.wait_nodes_state({"IDLE"}, timeout=15)  # resumed after verification
    assert_no_secret(h)
    print(f"ipmi rollout of {len(slurm_rig.nodes)} nodes: {took:.1f}s")


def test_soft_then_hard_escalates_when_the_soft_reboot_does_nothing(tmp_path, slurm_rig, bmcs):
    asked = tmp_path / "soft"
    asked.mkdir()
    h = harness(tmp_path, slurm_rig, bmcs, reboot={
        "strategy": "soft-then-hard", "soft_command": ["touch", f"{asked}/{{node}}"],
        "soft_timeout": 2, "hard_timeout": 30})
    h.baseline()
    sha = h.commit("kernel/version", "3", "another kernel")
    assert h.run() == 0, h.log.read_text()[-3000:]
    for node in slurm_rig.nodes:
        assert (asked / node).exists(), f"soft reboot command not run for {node}"
        assert bmcs.actions(node) == ["reset"], bmcs.actions(node)  # then the hard reset
        assert slurm_rig.booted(node) == sha
        assert h.records()[node].phase is NodePhase.DONE
    escalations = [l for l in h.log.read_text().splitlines()
                   if "soft reboot did not bring the node back: hard reset" in l]
    assert len(escalations) == len(slurm_rig.nodes), escalations


def test_a_silent_bmc_fails_its_attempt_within_the_deadline_and_others_go_on(tmp_path, slurm_rig, bmcs):
    h = harness(tmp_path, slurm_rig, bmcs, rollout={"retry_backoff_seconds": 2,
                                                   "retry_backoff_max_seconds": 2})
    h.baseline()
    silent = "node001"
    bmcs.silence(silent)
    sha = h.commit("kernel/version", "4", "kernel with a silent BMC")
    service = h.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the others finish while node001's BMC stays silent
        recs = h.records()
        others_done = all(recs.get(n) and recs[n].phase is NodePhase.DONE
                          for n in slurm_rig.nodes if n != silent)
        if others_done and recs[silent].attempts >= 1:
            break
        time.sleep(0.3)
    recs = h.records()
    assert others_done, {n: r.phase for n, r in recs.items()}
    assert recs[silent].attempts >= 1 and "no answer within 3s" in recs[silent].last_error
    assert recs[silent].phase is not NodePhase.FAILED
    bmcs.silence(silent, False)  # the BMC answers again: the retry reboots it
    assert service.wait(90) == 0, h.log.read_text()[-3000:]
    recs = h.records()
    assert recs[silent].phase is NodePhase.DONE and slurm_rig.booted(silent) == sha
    assert_no_secret(h)


def test_a_node_that_boots_the_wrong_image_stays_drained_with_a_reason(tmp_path, slurm_rig, bmcs):
    bad = "node004"
    h = harness(tmp_path, slurm_rig, bmcs, wrong_node=bad, rollout={"max_attempts": 2})
    h.baseline()
    sha = h.commit("kernel/version", "5", "kernel one node gets wrong")
    code = h.run()
    assert code in (0, 3), h.log.read_text()[-3000:]
    recs = h.records()
    assert recs[bad].phase is NodePhase.FAILED and recs[bad].attempts == 2
    assert f"runs '{WRONG}'" in recs[bad].last_error and sha[:12] in recs[bad].last_error
    info = slurm_rig.node_info(bad)
    assert "DRAIN" in info["State"] and info["Reason"].startswith("autoupdate:")
    for node in set(slurm_rig.nodes) - {bad}:
        assert recs[node].phase is NodePhase.DONE and slurm_rig.booted(node) == sha


def test_a_hypervisor_and_its_two_vms_are_updated_as_one_unit(tmp_path, slurm_rig, bmcs):
    h = harness(tmp_path, slurm_rig, bmcs, nodes={"hypervisors": {"hv1": "node[003-004]"}})
    h.baseline()
    boots = {n: boot_seconds(slurm_rig, n) for n in slurm_rig.nodes}
    sha = h.commit("hypervisor/qemu.conf", "2", "hypervisor update")
    assert h.run() == 0, h.log.read_text()[-3000:]
    recs = h.records()
    vms = HYPERVISORS["hv1"]
    assert bmcs.actions("hv1") == ["reset"]  # one hypervisor reboot, through its own BMC
    assert (slurm_rig.dir / "nodes" / "hv1" / "staged").read_text().strip() == sha  # applied
    for vm in vms:
        assert recs[vm].phase is NodePhase.DONE and bmcs.actions(vm) == []  # not reset on its own
        assert slurm_rig.booted(vm) == sha and boot_seconds(slurm_rig, vm) > boots[vm]
    for other in set(slurm_rig.nodes) - set(vms):  # the other nodes were not touched
        assert other not in recs and bmcs.actions(other) == []
        # Slurm derives BootTime from uptime: a re-registration may move it by a second.
        assert abs(boot_seconds(slurm_rig, other) - boots[other]) <= 2
    drains = [line for line in h.log.read_text().splitlines()
              if '"to": "draining"' in line or "to=draining" in line]
    assert len(drains) == 2, drains
    # resumed (slurmctld may flag a just-restarted slurmd NOT_RESPONDING for a moment)
    slurm_rig.wait_nodes_state({"IDLE"}, timeout=15)
