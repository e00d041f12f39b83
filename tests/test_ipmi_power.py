"""IpmiPowerController against real IPMI-over-LAN BMCs (pyghmi's server) on 127.0.0.1."""
from __future__ import annotations

import logging
import socket
import time

import pytest
from structlog.testing import capture_logs

from autoupdate.adapters.ipmi import (
    CredentialsError, Credentials, IpmiPowerController, from_settings, load_credentials,
)
from autoupdate.config import parse_config
from autoupdate.ports import PowerController, PowerError
from bmc.fleet import BmcFleet

pytestmark = pytest.mark.ipmi

SECRET = "Pa55-w0rd:with#odd chars"
NODES = [f"n{i}" for i in range(1, 7)]


@pytest.fixture(scope="module")
def fleet():
    with BmcFleet(NODES, users={"admin": SECRET}) as f:
        yield f


@pytest.fixture
def bmcs(fleet):
    """Every BMC on, answering, boot device default, before each test."""
    for n in NODES:
        fleet.silence(n, False)
        fleet.set(n, "powered", True)
        fleet.set(n, "bootdev", "default")
        fleet.set(n, "boot_persistent", False)
        fleet.set(n, "fail_power", False)
    return fleet


def controller(fleet, password=SECRET, user="admin", timeout=10.0, concurrency=8):
    return IpmiPowerController(Credentials(user, password), addresses=fleet.addresses(),
                               timeout=timeout, concurrency=concurrency)


def test_is_a_power_controller(bmcs):
    assert isinstance(controller(bmcs), PowerController)


@pytest.mark.parametrize("action, powered_before, state_after, history", [
    ("off", True, "off", ["off"]),
    ("soft", True, "off", ["soft"]),
    ("on", False, "on", ["on"]),
    ("reset", True, "on", ["reset"]),
    ("cycle", True, "on", ["cycle"]),
])
def test_power_actions_reach_the_bmc(bmcs, action, powered_before, state_after, history):
    node = "n1"
    bmcs.set(node, "powered", powered_before)
    before = len(bmcs.state(node)["history"])
    pc = controller(bmcs)
    pc.power(node, action)
    assert pc.power_state(node) == state_after
    assert bmcs.state(node)["history"][before:] == history


@pytest.mark.parametrize("device, persistent, bmc_device", [
    ("network", False, "network"),
    ("pxe", True, "network"),
    ("disk", False, "hd"),
    ("disk", True, "hd"),
])
def test_boot_device(bmcs, device, persistent, bmc_device):
    controller(bmcs).set_boot_device("n2", device, persistent=persistent)
    state = bmcs.state("n2")
    assert (state["bootdev"], state["persistent"]) == (bmc_device, persistent)


@pytest.mark.parametrize("powered, action, boot_device, done, bmc_device", [
    (True, "reset", "", "reset", "default"),
    (True, "cycle", "network", "cycle", "network"),
    (False, "reset", "network", "on", "network"),  # a node that is off is powered on
])
def test_reboot_in_one_session(bmcs, powered, action, boot_device, done, bmc_device):
    bmcs.set("n3", "powered", powered)
    assert controller(bmcs).reboot("n3", action, boot_device=boot_device) == done
    state = bmcs.state("n3")
    assert state["history"][-1] == done and state["bootdev"] == bmc_device and state["power"] == "on"


@pytest.mark.parametrize("call", [
    lambda pc: pc.power("n1", "explode"),
    lambda pc: pc.set_boot_device("n1", "floppy-disk"),
    lambda pc: pc.reboot("n1", "off"),
])
def test_bad_arguments_are_refused_before_any_bmc_call(bmcs, call):
    before = bmcs.state("n1")["history"]
    with pytest.raises(PowerError, match="n1"):
        call(controller(bmcs))
    assert bmcs.state("n1")["history"] == before


def test_bmc_refusing_the_command_is_an_error(bmcs):
    bmcs.set("n4", "fail_power", True)
    with pytest.raises(PowerError, match=r"n4: BMC 127\.0\.0\.1:\d+: power reset"):
        controller(bmcs).power("n4", "reset")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("how, deadline", [
    ("silent", 2.0),  # port bound, nothing answers: our own deadline cuts it
    ("silent", 8.0),  # pyghmi's own login timeout (~5 s) comes first
    ("nothing listening", 3.0),
])
def test_unreachable_bmc_fails_within_its_deadline(bmcs, how, deadline):
    pc = controller(bmcs, timeout=deadline)
    if how == "silent":
        bmcs.silence("n5")
    else:
        pc.addresses["n5"] = f"127.0.0.1:{_free_udp_port()}"
    started = time.monotonic()
    with pytest.raises(PowerError) as err:
        pc.power_state("n5")
    took = time.monotonic() - started
    assert took < deadline + 1.0, took
    assert str(err.value).startswith("n5: BMC 127.0.0.1:")
    assert "no answer" in str(err.value)


@pytest.mark.parametrize("user, password, expect", [
    ("admin", "wrong-" + SECRET, "Incorrect password"),
    ("nobody", SECRET, "Unauthorized name"),
])
def test_wrong_credentials_name_the_node_and_never_log_the_secret(bmcs, caplog, capfd, user,
                                                                  password, expect):
    caplog.set_level(logging.DEBUG)
    with capture_logs() as events:
        with pytest.raises(PowerError) as err:
            controller(bmcs, user=user, password=password).power_state("n6")
    message = str(err.value)
    assert message.startswith("n6: BMC 127.0.0.1:") and expect in message
    assert "check the BMC credentials" in message
    out, errout = capfd.readouterr()
    everything = [message, repr(err.value), out, errout, caplog.text, *map(repr, events)]
    assert events, "the failure must be logged"
    for text in everything:
        assert password not in text and SECRET not in text


def test_secret_in_a_worker_message_is_redacted():
    """Whatever pyghmi (or a crash) prints, the password never leaves the controller."""
    from autoupdate import proc

    def fake_run(argv, timeout, input):
        assert SECRET in input and SECRET not in " ".join(argv)  # stdin only, never argv
        return proc.Result(tuple(argv), 0, '{"ok": false, "stage": "power", "error": "bad %s"}'
                           % SECRET.replace('"', '\\"'), "", 0.1)

    pc = IpmiPowerController(Credentials("admin", SECRET), run=fake_run)
    with pytest.raises(PowerError) as err:
        pc.power("nX", "on")
    assert SECRET not in str(err.value) and "***" in str(err.value)
    assert SECRET not in repr(pc.credentials)


@pytest.mark.parametrize("stdout, rc, expect", [
    ('pyghmi says hello\n{"ok": true, "results": ["off"]}\n', 0, "off"),
    ("", 1, "IPMI worker failed"),
    ("Traceback ... password=%s\n" % SECRET, 1, "IPMI worker failed"),
])
def test_worker_output_is_read_robustly(stdout, rc, expect):
    from autoupdate import proc

    def fake_run(argv, timeout, input):
        return proc.Result(tuple(argv), rc, stdout, "", 0.1)

    pc = IpmiPowerController(Credentials("admin", SECRET), run=fake_run)
    if expect == "off":
        assert pc.power_state("nY") == "off"
    else:
        with pytest.raises(PowerError, match=expect) as err:
            pc.power_state("nY")
        assert SECRET not in str(err.value) and str(err.value).startswith("nY: BMC nY-bmc:623")


def test_many_bmcs_at_once_one_dead_does_not_hold_up_the_others(bmcs):
    """Three silent BMCs and three good ones, deadline 4 s: concurrently well under 3 x 4 s."""
    for n in ("n1", "n3", "n5"):
        bmcs.silence(n)
    pc = controller(bmcs, timeout=4.0, concurrency=6)
    started = time.monotonic()
    results = pc.many(NODES, pc.power_state)
    took = time.monotonic() - started
    assert {n: r for n, r in results.items() if not isinstance(r, PowerError)} == \
        {"n2": "on", "n4": "on", "n6": "on"}
    assert all(isinstance(results[n], PowerError) and n in str(results[n]) for n in ("n1", "n3", "n5"))
    assert took < 8.0, took


@pytest.mark.parametrize("how", ["many", "threads"])
def test_concurrency_is_bounded(bmcs, how):
    """concurrency=1 serialises every caller: three silent BMCs, 1 s deadline: about 3 s."""
    import threading
    for n in ("n1", "n2", "n3"):
        bmcs.silence(n)
    pc = controller(bmcs, timeout=1.0, concurrency=1)
    started = time.monotonic()
    if how == "many":
        pc.many(["n1", "n2", "n3"], pc.power_state)
    else:  # e.g. the engine's worker threads, each starting one node's reboot
        threads = [threading.Thread(target=lambda n=n: pytest.raises(PowerError, pc.power_state, n))
                   for n in ("n1", "n2", "n3")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert time.monotonic() - started >= 2.9


# --- configuration: addresses and credentials (no BMC needed) -----------------------------------

@pytest.mark.parametrize("pattern, addresses, port, node, expect", [
    ("{node}-bmc", {}, 623, "c01", ("c01-bmc", 623)),
    ("{node}.ipmi.example", {}, 6230, "c01", ("c01.ipmi.example", 6230)),
    ("{node}-bmc", {"c01": "10.0.0.5"}, 623, "c01", ("10.0.0.5", 623)),
    ("{node}-bmc", {"c01": "10.0.0.5:9001"}, 623, "c01", ("10.0.0.5", 9001)),
    ("{node}-bmc", {"c01": "[fe80::1]:9001"}, 623, "c01", ("fe80::1", 9001)),
    ("{node}-bmc", {"c01": "10.0.0.5"}, 623, "c02", ("c02-bmc", 623)),
])
def test_bmc_address(pattern, addresses, port, node, expect):
    pc = IpmiPowerController(Credentials("u", "p"), address=pattern, addresses=addresses, port=port)
    assert pc.bmc_address(node) == expect


@pytest.mark.parametrize("text, expect", [
    ("admin:s3cret\n", ("admin", "s3cret")),
    ("admin:pa:ss word#1", ("admin", "pa:ss word#1")),
    ('{"username": "root", "password": "x y"}', ("root", "x y")),
    ("username: ops\npassword: 'a#b'\n", ("ops", "a#b")),
    ("username: ops\npassword: 1234\n", ("ops", "1234")),
])
def test_credentials_file_formats(tmp_path, text, expect):
    f = tmp_path / "bmc.cred"
    f.write_text(text)
    f.chmod(0o600)
    c = load_credentials(str(f), "U", "P", environ={})
    assert (c.username, c.password) == expect


@pytest.mark.parametrize("text", ["justapassword", ":s3cr3t", "username: x\nuser: y\n",
                                  "- a\n- s3cr3t\n", "{broken", b"admin:s3cr3t\xff"])
def test_bad_credentials_file_is_one_clear_error_without_the_content(tmp_path, text):
    f = tmp_path / "bmc.cred"
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(CredentialsError, match=str(f)) as err:
        load_credentials(str(f), "U", "P", environ={})
    assert "s3cr3t" not in str(err.value) and "justapassword" not in str(err.value)


@pytest.mark.parametrize("file, environ, expect", [
    ("", {"BU": "admin", "BP": "pw"}, ("admin", "pw")),
    ("", {"BU": "admin"}, CredentialsError),
    ("", {}, CredentialsError),
    ("/nonexistent/bmc.cred", {"BU": "admin", "BP": "pw"}, CredentialsError),  # a file wins
])
def test_credentials_from_environment(file, environ, expect):
    if expect is CredentialsError:
        with pytest.raises(CredentialsError, match="BU|/nonexistent"):
            load_credentials(file, "BU", "BP", environ=environ)
    else:
        c = load_credentials(file, "BU", "BP", environ=environ)
        assert (c.username, c.password) == expect


@pytest.mark.parametrize("credentials_dir, error", [(True, None), (False, "CREDENTIALS_DIRECTORY")])
def test_relative_credentials_file_is_a_systemd_credential(tmp_path, credentials_dir, error):
    (tmp_path / "bmc-credentials").write_text("ops:pw\n")
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path)} if credentials_dir else {}
    if error:
        with pytest.raises(CredentialsError, match=error):
            load_credentials("bmc-credentials", "U", "P", environ=environ)
    else:
        assert load_credentials("bmc-credentials", "U", "P", environ=environ).username == "ops"


def test_from_settings_and_registry(tmp_path, monkeypatch):
    from autoupdate.registry import build
    monkeypatch.setenv("MY_BMC_USER", "admin")
    monkeypatch.setenv("MY_BMC_PW", SECRET)
    s = parse_config({"repository": {"url": "/x"}, "power": {
        "backend": "ipmi", "address": "{node}.bmc", "addresses": {"a1": "127.0.0.1:7000"},
        "username_env": "MY_BMC_USER", "password_env": "MY_BMC_PW", "timeout": 3, "concurrency": 2}})
    pc = build("power", s.power.backend, s, None)
    assert isinstance(pc, IpmiPowerController)
    assert (pc.bmc_address("a1"), pc.bmc_address("a2")) == (("127.0.0.1", 7000), ("a2.bmc", 623))
    assert (pc.timeout, pc.concurrency, pc.credentials.password) == (3, 2, SECRET)
    assert build("power", "none", s, None) is None
    assert from_settings(s, None).credentials.username == "admin"


@pytest.mark.parametrize("power, problem", [
    ({"backend": "redfish"}, "power.backend"),
    ({"timeout": 0}, "power.timeout"),
    ({"port": 70000}, "power.port"),
    ({"password": "x"}, "power.password: unknown key"),  # secrets never in the main YAML
])
def test_power_config_errors_name_the_key(power, problem):
    from autoupdate.config import ConfigError
    with pytest.raises(ConfigError) as err:
        parse_config({"repository": {"url": "/x"}, "power": power})
    assert any(problem in p for p in err.value.problems), err.value.problems
