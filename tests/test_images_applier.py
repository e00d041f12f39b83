"""The image Applier, the booted-image HealthCheck, the image reboot strategy and the config."""
from __future__ import annotations

import os

import pytest

from autoupdate.adapters.images import backend_for
from autoupdate.adapters.images.applier import ImageApplier
from autoupdate.adapters.images.base import PartialImageError
from autoupdate.adapters.images.check import BootedImage, ImageCheck, from_features
from autoupdate.adapters.images.reboot import ImageRebooter
from autoupdate.config import ConfigError, parse_config
from autoupdate.model import (
    ChangeClass, ClusterSnapshot, NodeAction, NodeBase, NodeInfo, NodePhase, NodeRecord, Revision,
)
from autoupdate.ports import ImageError, PowerError
from autoupdate.registry import build
from standins.cli_state import install_bin, read_state, write_state

REV = Revision("a" * 40)


def settings(**images):
    return parse_config({"repository": {"url": "/r"}, "images": {"backend": "warewulf", **images},
                         "reboot": {"timeout": 100}})


def act(image, group="compute", mode=""):
    return (NodeAction("image", {"image": image, "group": group, **({"mode": mode} if mode else {})}),)


class FakeBackend:
    name = "fake"
    has_soft_reboot = True

    def __init__(self, images=None, set_error=None, get_error=None, drift=None):
        self.images = dict(images or {})
        self.set_error, self.get_error, self.drift = set_error, get_error, drift or {}
        self.calls: list = []

    def set_image(self, nodes, image, mode="reload"):
        self.calls.append(("set", tuple(nodes), image, mode))
        if self.set_error:
            raise self.set_error
        for n in nodes:
            self.images[n] = self.drift.get(n, image)

    def get_image(self, nodes):
        if self.get_error:
            raise self.get_error
        return {n: self.images.get(n, "") for n in nodes}

    def reboot(self, nodes, hard):
        self.calls.append(("reboot", tuple(nodes), hard))


# --- applier -------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend, actions, expect", [
    # two image groups, one node without an image action
    (FakeBackend({"n1": "old"}), {"n1": act("img-a"), "n2": act("img-b", "gpu"), "n3": ()},
     {"n1": (True, "boots img-a"), "n2": (True, "boots img-b"), "n3": (True, "no image action")}),
    # back-end refuses: every node of the group fails with its message
    (FakeBackend(set_error=ImageError("wwctl node set failed (exit 1): image does not exist")),
     {"n1": act("img-a"), "n2": act("img-a")},
     {"n1": (False, "image does not exist"), "n2": (False, "image does not exist")}),
    # partial failure: only the named node fails
    (FakeBackend(set_error=PartialImageError({"n2": "BSS PUT /bootparameters: HTTP 500 etcd"})),
     {"n1": act("img-a"), "n2": act("img-a")},
     {"n1": (False, "reports ''"), "n2": (False, "HTTP 500 etcd")}),
    # read-back disagrees
    (FakeBackend(drift={"n2": "img-old"}), {"n1": act("img-a"), "n2": act("img-a")},
     {"n1": (True, "boots img-a"), "n2": (False, "reports 'img-old' after setting 'img-a'")}),
    # read-back fails
    (FakeBackend(get_error=ImageError("wwctl node list failed: timeout")), {"n1": act("img-a")},
     {"n1": (False, "reading back failed: wwctl node list failed: timeout")}),
])
def test_applier_table(backend, actions, expect):
    results = ImageApplier(backend, settings()).apply(list(actions), REV, ChangeClass.DRAIN, actions)
    assert {n: r.ok for n, r in results.items()} == {n: ok for n, (ok, _) in expect.items()}
    for node, (_, text) in expect.items():
        assert text in results[node].message, (node, results[node].message)


def test_applier_one_call_per_image_group_and_mode_from_config():
    backend = FakeBackend()
    s = settings(groups={"gpu": {"mode": "reprovision"}})
    actions = {"n1": act("img-a"), "n2": act("img-a"), "g1": act("img-g", "gpu", "reload"),
               "n3": act("img-a", "compute", "reprovision")}
    ImageApplier(backend, s).apply(list(actions), REV, ChangeClass.DRAIN, actions)
    sets = sorted(c for c in backend.calls if c[0] == "set")
    assert sets == [("set", ("g1",), "img-g", "reprovision"),  # config wins over the manifest
                    ("set", ("n1", "n2"), "img-a", "reload"),
                    ("set", ("n3",), "img-a", "reprovision")]  # manifest's mode when config is silent


def test_applier_reports_changed():
    backend = FakeBackend({"n1": "img-a", "n2": "old"})
    actions = {"n1": act("img-a"), "n2": act("img-a")}
    res = ImageApplier(backend, settings()).apply(["n1", "n2"], REV, ChangeClass.DRAIN, actions)
    assert (res["n1"].changed, res["n2"].changed) == (False, True)


# --- booted-image check --------------------------------------------------------------------------

def snap(**infos):
    return ClusterSnapshot(taken_at=1000.0, nodes={n: NodeInfo(n, NodeBase.IDLE, **kw) for n, kw in infos.items()})


def rec(node="n1", actions=act("img-a")):
    return NodeRecord(node=node, phase=NodePhase.VERIFYING, target=REV.sha, rollout_id=1,
                      klass=ChangeClass.DRAIN, actions=actions)


@pytest.mark.parametrize("source, info, setting, expect", [
    ("extra", {"extra": "image=img-a rev=abc"}, "img-a", None),
    ("extra", {"extra": '{"image": "img-a"}'}, "img-a", None),
    ("extra", {"extra": "image=img-old"}, "img-a", "node booted 'img-old', expected 'img-a'"),
    ("extra", {"extra": ""}, "img-a", "does not report its booted image"),
    ("extra", {"extra": "image=img-a"}, "img-old", "fake is set to boot 'img-old', not 'img-a'"),
    ("features", {"features": ("gpu", "image:img-a")}, "img-a", None),
    ("features", {"features": ("image=img-b",)}, "img-a", "node booted 'img-b'"),
    ("none", {"extra": "image=img-old"}, "img-a", None),
])
def test_check_table(source, info, setting, expect):
    check = ImageCheck(FakeBackend({"n1": setting}), BootedImage(source))
    result = check.check(rec(), snap(n1=info))
    assert result == expect if expect is None else expect in result


def test_check_passes_nodes_without_image_action_and_reports_backend_errors():
    check = ImageCheck(FakeBackend(get_error=ImageError("HTTP 401 Unauthorized")), BootedImage("extra"))
    assert check.check(rec(actions=()), snap(n1={})) is None
    assert "HTTP 401 Unauthorized" in check.check(rec(), snap(n1={"extra": "image=img-a"}))


def test_check_booted_by_command(tmp_path):
    (tmp_path / "n1").write_text("img-a\n")
    booted = BootedImage("command", command=["cat", str(tmp_path / "{node}")], timeout=10)
    check = ImageCheck(FakeBackend({"n1": "img-a", "n2": "img-a"}), booted)
    assert check.check(rec("n1"), snap()) is None
    assert "cannot read the booted image" in check.check(rec("n2"), snap())
    with pytest.raises(ImageError, match="images.booted.command is empty"):
        BootedImage("command")


def test_from_features_prefix_only():
    assert from_features(NodeInfo("n", NodeBase.IDLE, features=("imagex:1", "image:2")), "image") == "2"


# --- image reboot strategy -----------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Power:
    def __init__(self, error=None):
        self.calls, self.error = [], error

    def set_boot_device(self, node, device, persistent=False):
        self.calls.append((node, device, persistent))
        if self.error:
            raise self.error


def reboot_rec(actions=act("img-a")):
    r = rec(actions=actions)
    r.boot_time_before = 500.0
    return r


def test_rebooter_soft_then_hard_then_done():
    backend, clock = FakeBackend(), Clock()
    rb = ImageRebooter(backend, settings(soft_reboot_timeout=30), clock=clock)
    r = reboot_rec()
    down = snap(n1={"boot_time": 500.0, "flags": frozenset({"NOT_RESPONDING"})})
    rb.start(r, down)
    assert backend.calls == [("reboot", ("n1",), False)]
    assert rb.poll(r, down, 10).state == "in_progress"
    assert rb.poll(r, down, 31).state == "in_progress"
    assert backend.calls[-1] == ("reboot", ("n1",), True)  # escalated once
    rb.poll(r, down, 40)
    assert sum(c[0] == "reboot" for c in backend.calls) == 2
    assert rb.poll(r, snap(n1={"boot_time": 900.0}), 50).state == "done"


def test_rebooter_hard_only_backend_times_out():
    backend = FakeBackend()
    backend.has_soft_reboot = False
    rb = ImageRebooter(backend, settings(), clock=Clock())
    r = reboot_rec()
    down = snap(n1={"boot_time": 500.0})
    rb.start(r, down)
    assert backend.calls == [("reboot", ("n1",), True)]
    assert rb.poll(r, down, 99).state == "in_progress"
    status = rb.poll(r, down, 101)
    assert status.state == "failed" and "boot time unchanged" in status.message


@pytest.mark.parametrize("group_mode, power_error, expect_calls, expect", [
    ("reprovision", None, [("n1", "network", False)], (True, "boots img-a (reprovision)")),
    ("reload", None, [], (True, "boots img-a (reload)")),
    ("reprovision", PowerError("BMC n1: timed out after 10s"), [("n1", "network", False)],
     (False, "cannot set the next boot device to network: BMC n1: timed out")),
])
def test_applier_reprovision_sets_network_boot(group_mode, power_error, expect_calls, expect):
    power = Power(power_error)
    s = settings(groups={"compute": {"mode": group_mode}})
    res = ImageApplier(FakeBackend(), s, power).apply(["n1"], REV, ChangeClass.DRAIN, {"n1": act("img-a")})
    assert power.calls == expect_calls
    assert (res["n1"].ok, expect[1] in res["n1"].message) == (expect[0], True), res["n1"].message


def test_rebooter_refuses_backends_without_reboot():
    class NoReboot:
        name = "csm_bss"
    with pytest.raises(ImageError, match="cannot reboot nodes"):
        ImageRebooter(NoReboot(), settings())


# --- configuration and wiring --------------------------------------------------------------------

@pytest.mark.parametrize("images, problem", [
    ({"backend": "xcat"}, "images.backend"),
    ({"groups": {"compute": {"mode": "wipe"}}}, "images.groups.compute.mode"),
    ({"csm_bss": {"token": "x"}}, "images.csm_bss.token: unknown key"),
    ({"exostellar": {"image_names": {"node[1-": "a"}}}, "images.exostellar.image_names"),
    ({"booted": {"source": "ssh"}}, "images.booted.source"),
])
def test_config_errors_name_the_key(images, problem):
    with pytest.raises(ConfigError) as err:
        parse_config({"repository": {"url": "/r"}, "images": images})
    assert any(problem in p for p in err.value.problems), err.value.problems


class Deps:
    pass


def test_registry_builds_one_shared_backend(tmp_path, monkeypatch):
    bin_dir = install_bin(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    state = write_state(tmp_path / "ww.json", {
        "version": "4.6.0", "images": ["a", "b"], "profiles": {"default": {"image": "a"}},
        "nodes": {"n1": {"profiles": ["default"], "image": None}}})
    monkeypatch.setenv("WWCTL_STATE", str(state))
    s = parse_config({"repository": {"url": "/r"}, "apply": {"backend": "image"},
                      "reboot": {"strategy": "image"}, "images": {"backend": "warewulf"}})
    deps = Deps()
    applier = build("applier", "image", s, deps)
    rebooter = build("rebooter", "image", s, deps)
    assert applier.backend is rebooter.backend is backend_for(s, deps)
    res = applier.apply(["n1"], REV, ChangeClass.DRAIN, {"n1": act("b")})
    assert res["n1"].ok, res["n1"].message
    assert read_state(state)["nodes"]["n1"]["image"] == "b"
    with pytest.raises(ImageError, match="images.backend is not set"):
        backend_for(parse_config({"repository": {"url": "/r"}}), None)
