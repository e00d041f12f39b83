"""Hypervisor units (nodes.hypervisors): a hypervisor and its VM nodes updated as one unit.

On the simulated cluster with the real engine: the VMs drain together (one capacity decision),
wait drained for each other, apply together with their hypervisor, come back from ONE
hypervisor reboot (never rebooted twice, even when the VMs have their own DRAIN change in the
same commit), then are verified and resumed. No job is ever killed.
"""
from __future__ import annotations

from collections import Counter

import pytest

from autoupdate.engine.planner import select
from autoupdate.engine.units import ACTION, UnitRebooter, UnitRefused, Units, hypervisor_of
from autoupdate.model import (
    ChangeClass, ClusterSnapshot, DetectorVerdict, NodeAction, NodeBase, NodeInfo, NodePhase,
    NodeRecord, Verdict,
)
from autoupdate.ports import ApplyResult
from autoupdate.safety import Budget
from autoupdate.sim.cluster import SimRebooter
from enginekit import Kit

HV_RULE = {"glob": "hv/*", "class": "drain", "nodes": "hv1"}
CONFIG = {
    "nodes": {"hypervisors": {"hv1": "n[03-04]"}},
    "detectors": [{"type": "path_rules", "rules": [
        HV_RULE, {"glob": "hot/*", "class": "hot"}, {"glob": "drain/*", "class": "drain"},
        {"glob": "docs/*", "class": "good"}]}],
}


class HypervisorRig:
    """What a real site has: the hypervisor's applier and its BMC, here acting on the sim."""

    def __init__(self, kit: Kit, vms_of: dict[str, list[str]]):
        self.kit, self.vms_of = kit, vms_of
        self.applied: list[tuple[str, ...]] = []
        self.hv_reboots: list[str] = []
        self.vm_reboots: Counter = Counter()
        cluster = kit.cluster
        real_reboot, real_reset = cluster.reboot, cluster.power_reset

        def counted_reboot(nodes, reason=""):
            self.vm_reboots.update(nodes)
            real_reboot(nodes, reason)

        def counted_reset(node):
            self.vm_reboots[node] += 1
            real_reset(node)
        cluster.reboot, cluster.power_reset = counted_reboot, counted_reset

    def apply(self, nodes, target, klass, actions):
        self.applied.append(tuple(nodes))
        return {n: ApplyResult(True) for n in nodes}

    def reboot(self, hv: str) -> None:  # the hypervisor's BMC reset: its VMs go down with it
        self.hv_reboots.append(hv)
        for vm in self.vms_of[hv]:
            self.kit.cluster.power_reset(vm)


def unit_kit(tmp_path, config=None, vms_of=None, **kw) -> tuple[Kit, HypervisorRig]:
    vms_of = vms_of or {"hv1": ["n03", "n04"]}
    kit = Kit(tmp_path, config={**CONFIG, **(config or {})}, **kw)
    rig = HypervisorRig(kit, vms_of)
    units = Units(vms_of, reboot_hypervisor=rig.reboot, hypervisor_applier=rig)
    units.attach(kit.engine, kit.applier, SimRebooter(kit.cluster, kit.settings.reboot.timeout))
    kit.engine.fetch()  # the first commit is the baseline
    return kit, rig


def all_done(kit, nodes):
    return lambda: all(kit.phase(n) == "done" for n in nodes)


def test_a_hypervisor_change_updates_its_vms_as_one_unit(tmp_path):
    kit, rig = unit_kit(tmp_path, jobs={"n04": 300})
    sha = kit.commit({"hv/kvm.conf": "2"}, "hypervisor kernel")
    recs = kit.store.records()
    assert {n for n, r in recs.items() if not r.phase.terminal} == {"n03", "n04"}
    assert all(hypervisor_of(recs[n]) == "hv1" and recs[n].klass == ChangeClass.DRAIN
               for n in ("n03", "n04"))
    kit.step()
    assert (kit.phase("n03"), kit.phase("n04")) == ("draining", "draining")  # drained together
    kit.run_until(lambda: kit.phase("n03") == "drained")
    for _ in range(5):  # n03 is empty but waits, drained, for its sibling's job to end
        kit.step()
        assert kit.phase("n03") == "drained" and kit.phase("n04") == "draining"
        assert rig.applied == [] and rig.hv_reboots == []
    kit.run_until(all_done(kit, ["n03", "n04"]))
    assert rig.applied == [("hv1",)]  # the hypervisor updated once, after both VMs were empty
    assert rig.hv_reboots == ["hv1"]
    assert rig.vm_reboots == Counter({"n03": 1, "n04": 1})
    assert kit.running("n03") == kit.running("n04") == sha  # verified: they booted the target
    assert not kit.cluster.nodes["n03"].drained and not kit.cluster.nodes["n04"].drained
    assert kit.cluster.stats.jobs_killed == 0


def test_vm_and_hypervisor_changes_in_one_rollout_reboot_each_vm_once(tmp_path):
    kit, rig = unit_kit(tmp_path)
    sha = kit.commit({"hv/kvm.conf": "2", "drain/k": "2"}, "kernel everywhere")
    kit.run_until(all_done(kit, [f"n{i:02d}" for i in range(1, 9)]), max_steps=500)
    assert rig.hv_reboots == ["hv1"]
    assert rig.vm_reboots == Counter({f"n{i:02d}": 1 for i in range(1, 9)})  # nobody twice
    assert all(kit.running(f"n{i:02d}") == sha for i in range(1, 9))
    assert kit.cluster.stats.jobs_killed == 0


def test_a_live_hypervisor_change_applies_without_draining_or_rebooting(tmp_path):
    kit, rig = unit_kit(tmp_path, config={"detectors": [{"type": "path_rules", "rules": [
        {"glob": "hv/*", "class": "hot", "nodes": "hv1"}]}]}, jobs={"n03": 600})
    sha = kit.commit({"hv/tuned.conf": "2"}, "hypervisor tuning")
    kit.run_until(all_done(kit, ["n03", "n04"]))
    assert rig.applied == [("hv1",)] and rig.hv_reboots == [] and sum(rig.vm_reboots.values()) == 0
    assert kit.running("n03") == sha and kit.cluster.nodes["n03"].job is not None  # job kept running


def test_a_canary_vm_brings_its_siblings_into_the_canary_stage(tmp_path):
    kit, rig = unit_kit(tmp_path, config={"nodes": {"hypervisors": {"hv1": "n[03-04]"},
                                                    "canaries": "n03"}})
    kit.commit({"hv/kvm.conf": "2"}, "hypervisor kernel")
    assert kit.rollout_state() == "canary"
    kit.step()
    assert (kit.phase("n03"), kit.phase("n04")) == ("draining", "draining")
    assert kit.store.record("n04").canary
    kit.run_until(lambda: kit.rollout_state() == "done")
    assert rig.hv_reboots == ["hv1"] and rig.vm_reboots == Counter({"n03": 1, "n04": 1})


def test_a_hypervisor_hosting_an_unmanaged_vm_is_never_rebooted(tmp_path):
    kit, rig = unit_kit(tmp_path, config={"nodes": {"hypervisors": {"hv1": "n[03-04]"},
                                                    "whitelist": "n[01-03],hv1", "canaries": ""}})
    kit.commit({"hv/kvm.conf": "2"}, "hypervisor kernel")
    for _ in range(20):
        kit.step()
    assert kit.phase("n03") == "pending" and not kit.cluster.nodes["n03"].drained
    assert "n04, which autoupdate must not touch" in kit.engine.last_report.waiting["n03"]
    assert rig.hv_reboots == [] and sum(rig.vm_reboots.values()) == 0


def test_a_partly_blacklisted_unit_is_refused_at_start(tmp_path):
    from autoupdate.safety import SafetyError
    with pytest.raises(SafetyError, match="hypervisor unit hv1"):
        unit_kit(tmp_path, config={"nodes": {"hypervisors": {"hv1": "n[03-04]"}, "blacklist": "n04"}})


def test_a_failed_hypervisor_reboot_fails_that_attempt_and_the_vms_still_reboot_once(tmp_path):
    kit, rig = unit_kit(tmp_path)
    calls = []

    def flaky(hv):  # the BMC does not answer the first time
        calls.append(hv)
        if len(calls) == 1:
            raise RuntimeError("BMC hv1: no answer within 20s")
        rig.reboot(hv)
    kit.engine.units.reboot_hypervisor = flaky
    kit.commit({"hv/kvm.conf": "2"}, "hypervisor kernel")
    kit.run_until(all_done(kit, ["n03", "n04"]))
    attempts = {n: kit.store.record(n).attempts for n in ("n03", "n04")}
    assert sorted(attempts.values()) == [0, 1]  # the VM whose start() met the failure retried
    failed = [n for n, a in attempts.items() if a][0]
    assert "no answer within 20s" in kit.store.record(failed).last_error
    assert calls == ["hv1", "hv1"] and rig.hv_reboots == ["hv1"]
    assert rig.vm_reboots == Counter({"n03": 1, "n04": 1})


# --- the parts, table-driven ----------------------------------------------------------------------

def rec(node, phase=NodePhase.PENDING, hv=None, klass=ChangeClass.DRAIN, target="t"):
    actions = (NodeAction(ACTION, {"hypervisor": hv}),) if hv else ()
    return NodeRecord(node=node, phase=phase, target=target, rollout_id=1, klass=klass, actions=actions)


def snapshot(nodes, partitions=None, jobs=(), drained=(), reason="autoupdate: x"):
    infos = {n: NodeInfo(n, NodeBase.IDLE, frozenset({"DRAIN"}) if n in drained else frozenset(),
                         ((partitions or {}).get(n, "a"),), reason if n in drained else "")
             for n in nodes}
    return ClusterSnapshot(0.0, infos, tuple(jobs))


def test_expand_moves_the_hypervisor_class_onto_its_vms():
    units = Units({"hv1": ["v1", "v2"], "hv2": ["v3"]})
    v = Verdict.combine("a", "b", [DetectorVerdict("d", {"hv1": ChangeClass.DRAIN, "v1": ChangeClass.HOT,
                                                         "x": ChangeClass.HOT, "hv2": ChangeClass.GOOD})])
    out = units.expand(v)
    assert out.classes == {"v1": ChangeClass.DRAIN, "v2": ChangeClass.DRAIN, "x": ChangeClass.HOT}
    assert [a.detail["hypervisor"] for a in out.actions["v1"]] == ["hv1"]
    assert "v3" not in out.actions


@pytest.mark.parametrize("limit, used, unit, others, started", [
    (2, 0, 2, 0, {"v1", "v2"}),           # fits
    (2, 1, 2, 0, set()),                  # all or none: one slot is not enough for the pair
    (2, 0, 3, 0, {"v1", "v2", "v3"}),     # larger than the budget: goes when the partition is clear
    (2, 1, 3, 0, set()),                  # ... and only then
    (3, 0, 2, 2, {"v1", "v2", "x1"}),     # singles fill what the unit leaves
])
def test_planner_starts_a_unit_all_or_nothing(limit, used, unit, others, started):
    vms = [f"v{i}" for i in range(1, unit + 1)]
    singles = [f"x{i}" for i in range(1, others + 1)]  # ordered after the VMs
    units = Units({"hv1": vms})
    pending = [rec(v, hv="hv1") for v in vms] + [rec(s) for s in singles]
    snap = snapshot(vms + singles)
    budget = Budget({"a": limit}, {"a": used})
    sel = select(pending, snap, budget, 0, 0, lambda r: None, group=units.grouper(pending, {}))
    assert {r.node for r in sel.start} == started
    for r in pending:
        assert (r.node in started) != (r.node in sel.waiting)


def test_unit_waits_for_every_vm_to_have_its_work():
    units = Units({"hv1": ["v1", "v2"]})
    pending = [rec("v1", hv="hv1")]
    records = {"v1": pending[0], "v2": rec("v2", phase=NodePhase.VERIFYING)}
    members, why = units.grouper(pending, records)(pending[0])
    assert "waiting for v2 (verifying)" in why


@pytest.mark.parametrize("phases, released", [
    ((NodePhase.DRAINED, NodePhase.DRAINED), True),
    ((NodePhase.DRAINED, NodePhase.DRAINING), False),
    ((NodePhase.APPLYING, NodePhase.DRAINED), True),
    ((NodePhase.DRAINED, None), False),
])
def test_released_only_when_every_vm_is_drained(phases, released):
    units = Units({"hv1": ["v1", "v2"]})
    records = {n: rec(n, p, hv="hv1") for n, p in zip(("v1", "v2"), phases) if p}
    assert ("hv1" in units.released(records)) is released
    assert (units.held(records["v1"], units.released(records)) is None) is released


class Clock:
    t = 100.0

    def now(self):
        return self.t


@pytest.mark.parametrize("snap_kw, refused", [
    ({"drained": ("v1", "v2")}, ""),
    ({"drained": ("v1",)}, "v2 is not drained by autoupdate"),
    ({"drained": ("v1", "v2"), "reason": "admin: disk"}, "not drained by autoupdate"),
    ({"drained": ("v1", "v2"), "jobs": "v2"}, "v2 still runs jobs"),
])
def test_hypervisor_reboot_only_when_every_vm_is_drained_and_empty(snap_kw, refused):
    from autoupdate.model import Job
    reboots = []
    units = Units({"hv1": ["v1", "v2"]}, reboot_hypervisor=reboots.append)
    r = UnitRebooter(None, units, Clock(), timeout=600)
    jobs = [Job("7", (snap_kw.pop("jobs"),), 0, 10)] if "jobs" in snap_kw else []
    snap = snapshot(["v1", "v2"], jobs=jobs, **snap_kw)
    records = [rec(v, NodePhase.REBOOTING, hv="hv1") for v in ("v1", "v2")]
    if refused:
        with pytest.raises(UnitRefused, match=refused):
            r.start(records[0], snap)
        assert reboots == []
    else:
        r.start(records[0], snap)
        r.start(records[1], snap)  # rides on the same reboot
        assert reboots == ["hv1"]


def test_a_reloaded_hypervisor_map_takes_effect(tmp_path):
    from autoupdate.config import parse_config
    both = {"detectors": [{"type": "path_rules", "rules": [{**HV_RULE, "nodes": "hv[1-2]"}]}]}
    kit, rig = unit_kit(tmp_path, config=both, vms_of={"hv1": ["n03", "n04"], "hv2": ["n05", "n06"]})
    data = kit.settings.model_dump(by_alias=True)
    data["nodes"]["hypervisors"] = {"hv1": "n[03-04]", "hv2": "n[05-06]"}
    kit.engine.reconfigure(parse_config(data))  # hv2 added live: without it, hv2 is no node of ours
    kit.commit({"hv/kvm.conf": "2"}, "both hypervisors")
    assert {n for n, r in kit.store.records().items() if not r.phase.terminal} == {"n03", "n04", "n05", "n06"}
    kit.run_until(all_done(kit, ["n03", "n04", "n05", "n06"]))
    assert sorted(rig.hv_reboots) == ["hv1", "hv2"] and kit.cluster.stats.jobs_killed == 0
