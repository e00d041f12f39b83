"""Reboot strategies (ipmi, soft-then-hard) and the revision check, on in-memory fakes."""
from __future__ import annotations


import pytest

from autoupdate import proc
from autoupdate.adapters.reboot_strategies import IpmiRebooter, SoftThenHardRebooter
from autoupdate.adapters.revision_check import RevisionCheck, from_extra, revision_matches
from autoupdate.config import parse_config
from autoupdate.model import ChangeClass, ClusterSnapshot, NodeBase, NodeInfo, NodePhase, NodeRecord
from autoupdate.ports import PowerError
from autoupdate.registry import BackendError, build
from autoupdate.wiring import Deps

SHA = "3f2a9c1d5e7b8a9f0c1d2e3f4a5b6c7d8e9f0a1b"


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


class FakePower:
    """Records BMC calls; `fail` makes them raise like an unreachable BMC."""

    def __init__(self, fail: str = ""):
        self.calls: list[tuple] = []
        self.fail = fail

    def _do(self, *call):
        self.calls.append(call)
        if self.fail:
            raise PowerError(f"{call[1]}: BMC 10.0.0.1:623: {self.fail}")

    def power_state(self, node):
        return "on"

    def power(self, node, action):
        self._do("power", node, action)

    def set_boot_device(self, node, device, persistent=False):
        self._do("bootdev", node, device, persistent)


def snap(node="c1", boot=100.0, base=NodeBase.IDLE, flags=("DRAIN",), features=(), extra=""):
    info = NodeInfo(node, base, frozenset(flags), ("batch",), "autoupdate: x", boot_time=boot,
                    features=tuple(features), extra=extra)
    return ClusterSnapshot(taken_at=0.0, nodes={node: info})


def record(node="c1", since=1000.0, target=SHA):
    return NodeRecord(node=node, phase=NodePhase.REBOOTING, target=target, rollout_id=1,
                      klass=ChangeClass.DRAIN, since=since, boot_time_before=100.0)


# --- ipmi ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("boot_device, expect_calls", [
    ("", [("power", "c1", "reset")]),
    ("network", [("bootdev", "c1", "network", False), ("power", "c1", "reset")]),
])
def test_ipmi_strategy_resets_then_waits_for_a_new_boot(boot_device, expect_calls):
    clock, power = FakeClock(), FakePower()
    r = IpmiRebooter(power, clock, timeout=600, boot_device=boot_device)
    rec = record()
    r.start(rec, snap())
    assert power.calls == expect_calls
    clock.t += 30
    assert r.poll(rec, snap(boot=100.0), clock.t).state == "in_progress"
    assert r.poll(rec, snap(boot=None, base=NodeBase.DOWN, flags=("DRAIN", "NOT_RESPONDING")),
                  clock.t).state == "in_progress"
    assert r.poll(rec, snap(boot=1025.0), clock.t).state == "done"


def test_ipmi_strategy_fails_when_the_node_stays_down():
    clock = FakeClock()
    r = IpmiRebooter(FakePower(), clock, timeout=600)
    rec = record()
    r.start(rec, snap())
    down = snap(boot=100.0, base=NodeBase.DOWN, flags=("DRAIN", "NOT_RESPONDING"))
    assert r.poll(rec, down, clock.t + 599).state == "in_progress"
    status = r.poll(rec, down, clock.t + 600)
    assert status.state == "failed" and "not back 600s after the BMC reset" in status.message
    assert "not responding" in status.message


def test_ipmi_strategy_bmc_error_fails_the_start():
    r = IpmiRebooter(FakePower(fail="no answer within 20s (boot)"), FakeClock(), timeout=600)
    with pytest.raises(PowerError, match="c1: BMC"):
        r.start(record(), snap())


def test_ipmi_strategy_after_a_service_restart_counts_from_the_phase_start():
    """No start() in this process (restart): the deadline runs from record.since."""
    r = IpmiRebooter(FakePower(), FakeClock(), timeout=600)
    down = snap(boot=100.0, base=NodeBase.DOWN, flags=("DRAIN", "NOT_RESPONDING"))
    assert r.poll(record(since=1000.0), down, 1500.0).state == "in_progress"
    assert r.poll(record(since=1000.0), down, 1601.0).state == "failed"


# --- soft-then-hard -----------------------------------------------------------------------------

def _soft(power, clock, calls, rc=0, **kw):
    def run(argv, timeout):
        calls.append(list(argv))
        if rc is None:
            raise proc.CommandError(argv, "ssh: timed out after 30s")
        return proc.Result(tuple(argv), rc, "", "" if rc == 0 else "Connection closed", 0.1)
    options = dict(soft_command=["ssh", "{node}", "systemctl", "reboot"], soft_command_timeout=30,
                   soft_timeout=300, hard_timeout=600, run=run)
    options.update(kw)
    return SoftThenHardRebooter(power, clock, **options)


@pytest.mark.parametrize("rc", [0, 255, None])  # ssh reboot often "fails": it decides nothing
def test_soft_reboot_that_works_needs_no_bmc(rc):
    clock, power, calls = FakeClock(), FakePower(), []
    r = _soft(power, clock, calls, rc=rc)
    rec = record()
    r.start(rec, snap())
    assert calls == [["ssh", "c1", "systemctl", "reboot"]]
    assert r.poll(rec, snap(boot=100.0), clock.t + 60).state == "in_progress"
    status = r.poll(rec, snap(boot=1100.0), clock.t + 120)
    assert (status.state, status.message) == ("done", "back after the soft reboot")
    assert power.calls == []


def test_soft_reboot_that_does_nothing_escalates_to_a_hard_reset():
    clock, power, calls = FakeClock(), FakePower(), []
    r = _soft(power, clock, calls, action="cycle", boot_device="network")
    rec = record()
    r.start(rec, snap())
    assert power.calls == [("bootdev", "c1", "network", False)]  # the soft reboot PXE-boots too
    same = snap(boot=100.0)
    assert r.poll(rec, same, clock.t + 299).state == "in_progress"
    status = r.poll(rec, same, clock.t + 300)
    assert status.state == "in_progress" and "escalated to a hard reset" in status.message
    r._attempts["c1"].hard.result(timeout=5)
    assert power.calls[1:] == [("bootdev", "c1", "network", False), ("power", "c1", "cycle")]
    assert r.poll(rec, same, clock.t + 400).state == "in_progress"
    status = r.poll(rec, snap(boot=1450.0), clock.t + 450)
    assert (status.state, status.message) == ("done", "back after the hard reset")


def test_boot_time_jitter_is_no_soft_reboot_and_escalates():
    clock, power, calls = FakeClock(), FakePower(), []
    r = _soft(power, clock, calls)
    rec = record()
    r.start(rec, snap())
    jitter = snap(boot=101.0)  # Slurm moved BootTime by a second: the node never went down
    assert r.poll(rec, jitter, clock.t + 60).state == "in_progress"
    assert "escalated to a hard reset" in r.poll(rec, jitter, clock.t + 300).message


def test_a_quick_soft_reboot_seen_down_counts_even_with_a_close_boot_time():
    clock, power, calls = FakeClock(), FakePower(), []
    r = _soft(power, clock, calls)
    rec = record()
    r.start(rec, snap())
    assert r.poll(rec, snap(flags=("DRAIN", "NOT_RESPONDING")), clock.t + 10).state == "in_progress"
    status = r.poll(rec, snap(boot=101.0), clock.t + 20)
    assert (status.state, status.message) == ("done", "back after the soft reboot")
    assert power.calls == []


def test_node_still_down_after_the_hard_reset_fails_the_attempt():
    clock, power, calls = FakeClock(), FakePower(), []
    r = _soft(power, clock, calls)
    rec = record()
    r.start(rec, snap())
    down = snap(boot=100.0, base=NodeBase.DOWN, flags=("DRAIN", "NOT_RESPONDING"))
    r.poll(rec, down, clock.t + 300)
    r._attempts["c1"].hard.result(timeout=5)
    assert r.poll(rec, down, clock.t + 300 + 599).state == "in_progress"
    status = r.poll(rec, down, clock.t + 300 + 600)
    assert status.state == "failed" and "not back 600s after the hard reset" in status.message


def test_hard_reset_bmc_error_fails_the_attempt():
    clock, calls = FakeClock(), []
    power = FakePower()
    r = _soft(power, clock, calls)
    rec = record()
    r.start(rec, snap())
    power.fail = "no answer within 20s (boot)"
    r.poll(rec, snap(), clock.t + 300)
    with pytest.raises(PowerError):
        r._attempts["c1"].hard.result(timeout=5)
    status = r.poll(rec, snap(), clock.t + 301)
    assert status.state == "failed" and "hard reset failed: c1: BMC" in status.message


# --- wiring -------------------------------------------------------------------------------------

BASE = {"repository": {"url": "/x"}}


@pytest.mark.parametrize("strategy, cls", [("ipmi", IpmiRebooter),
                                           ("soft-then-hard", SoftThenHardRebooter)])
def test_strategies_are_registered(strategy, cls):
    s = parse_config({**BASE, "reboot": {"strategy": strategy, "soft_timeout": 5}})
    deps = Deps(s, power=FakePower(), clock=FakeClock())
    assert isinstance(deps.rebooter, cls)


@pytest.mark.parametrize("strategy", ["ipmi", "soft-then-hard"])
def test_strategy_without_a_bmc_is_one_clear_error(strategy):
    s = parse_config({**BASE, "reboot": {"strategy": strategy}})
    with pytest.raises(BackendError, match=f"{strategy}.*power.backend"):
        build("rebooter", strategy, s, Deps(s, clock=FakeClock()))


@pytest.mark.parametrize("reboot, problem", [
    ({"strategy": "bmc"}, "reboot.strategy"),
    ({"power_action": "off"}, "reboot.power_action"),
    ({"boot_device": "floppy"}, "reboot.boot_device"),
    ({"soft_timeout": 0}, "reboot.soft_timeout"),
])
def test_reboot_config_errors_name_the_key(reboot, problem):
    from autoupdate.config import ConfigError
    with pytest.raises(ConfigError) as err:
        parse_config({**BASE, "reboot": reboot})
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems


# --- revision check -----------------------------------------------------------------------------

@pytest.mark.parametrize("running, ok", [
    (SHA, True), (SHA[:12], True), (SHA[:7], True), (SHA.upper()[:10], True),
    (SHA[:6], False),  # too short to mean anything
    ("0" * 40, False), ("v1.2", False), ("", False),
])
def test_revision_matches(running, ok):
    assert revision_matches(running, SHA) is ok


@pytest.mark.parametrize("extra, key, expect", [
    (SHA, "", SHA),
    ("rev=%s image=x" % SHA[:12], "rev", SHA[:12]),
    ("image=x,rev=%s" % SHA[:12], "rev", SHA[:12]),
    ('{"rev": "%s", "image": "x"}' % SHA, "rev", SHA),
    ("image=x", "rev", None),
    ("", "", None),
    ("{not json", "rev", None),
])
def test_from_extra(extra, key, expect):
    assert from_extra(extra, key) == expect


@pytest.mark.parametrize("options, node_kw, fails_with", [
    ({"source": "feature"}, {"features": ("gpu", f"rev_{SHA[:12]}")}, None),
    ({"source": "feature"}, {"features": ("gpu", "rev_0000000aaaa")}, "runs '0000000aaaa'"),
    ({"source": "feature"}, {"features": ("gpu",)}, "no feature rev_<sha>"),
    ({"source": "feature", "feature_prefix": "commit-"}, {"features": (f"commit-{SHA}",)}, None),
    ({"source": "extra"}, {"extra": SHA[:9]}, None),
    ({"source": "extra", "extra_key": "rev"}, {"extra": f"image=a rev={SHA[:8]}"}, None),
    ({"source": "extra", "extra_key": "rev"}, {"extra": "image=a"}, "Extra rev not published"),
    ({"source": "extra"}, {"extra": "deadbeef"}, "expected 3f2a9c1d5e7b"),
])
def test_revision_check_from_the_snapshot(options, node_kw, fails_with):
    check = RevisionCheck(**options)
    failure = check.check(record(), snap(**node_kw))
    if fails_with is None:
        assert failure is None
    else:
        assert failure and fails_with in failure


@pytest.mark.parametrize("argv, fails_with", [
    (["echo", SHA], None),
    (["echo", "{target}"], None),  # placeholders are replaced
    (["echo", "0123456789abcdef"], "runs '0123456789abcdef'"),
    (["sh", "-c", "echo no route to {node} >&2; exit 3"], "no route to c1"),
    (["true"], "printed nothing"),
    (["/nonexistent/bin/rev"], "command not found"),
])
def test_revision_check_by_command(argv, fails_with):
    failure = RevisionCheck("command", command=argv).check(record(), snap())
    if fails_with is None:
        assert failure is None
    else:
        assert failure and fails_with in failure


def test_revision_check_is_wired_from_verify_revision():
    s = parse_config({**BASE, "verify": {"revision": {"source": "feature"}}})
    checks = Deps(s, clock=FakeClock()).checks
    assert any(isinstance(c, RevisionCheck) for c in checks)
    off = parse_config(BASE)
    assert not any(isinstance(c, RevisionCheck) for c in Deps(off, clock=FakeClock()).checks)
