"""Warewulf, Scyld and the generic command back-end against executable stand-ins on PATH
(`wwctl`, `scyld-nodectl`) that keep state in a file and reject bad arguments."""
from __future__ import annotations

import os
import sys

import pytest

from autoupdate.adapters.images.command import CommandBackend
from autoupdate.adapters.images.scyld import ScyldBackend
from autoupdate.adapters.images.warewulf import WarewulfBackend, parse_list_all
from autoupdate.ports import ImageError
from standins.cli_state import install_bin, read_state, write_state

NODES = ["node001", "node002", "node003"]


@pytest.fixture
def standin_path(tmp_path, monkeypatch):
    bin_dir = install_bin(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def ww_state(tmp_path, monkeypatch, version="4.6.0", **extra):
    state = {"version": version, "images": ["rocky9-2024.04", "rocky9-2024.05"],
             "profiles": {"default": {"image": "rocky9-2024.04"}},
             "nodes": {n: {"profiles": ["default"], "image": None} for n in NODES}, **extra}
    path = write_state(tmp_path / "ww.json", state)
    monkeypatch.setenv("WWCTL_STATE", str(path))
    return path


# --- Warewulf ------------------------------------------------------------------------------------

@pytest.mark.parametrize("version, flag_setting, flag", [
    ("4.6.0", "auto", "--image"),
    ("4.5.8", "auto", "--container"),
    ("4.4.1", "auto", "--container"),
    ("4.5.8", "container", "--container"),
])
def test_warewulf_sets_image_with_the_flag_the_installed_version_wants(
        standin_path, tmp_path, monkeypatch, version, flag_setting, flag):
    path = ww_state(tmp_path, monkeypatch, version)
    ww = WarewulfBackend(image_flag=flag_setting)
    assert ww.get_image(NODES) == {n: "rocky9-2024.04" for n in NODES}  # inherited from profile
    ww.set_image(NODES[:2], "rocky9-2024.05")
    assert ww.get_image(NODES) == {"node001": "rocky9-2024.05", "node002": "rocky9-2024.05",
                                   "node003": "rocky9-2024.04"}
    calls = read_state(path)["calls"]
    assert ["node", "set", "--yes", flag, "rocky9-2024.05", "node001", "node002"] in calls
    assert (tmp_path / "ww.json.provision" / "node001").read_text().strip() == "rocky9-2024.05"


@pytest.mark.parametrize("version, flag, expect", [
    ("4.5.8", "image", "unknown flag: --image"),  # forced --image on an old wwctl
    ("4.6.0", "container", "unknown flag: --container"),
])
def test_warewulf_wrong_flag_is_wwctls_own_error(standin_path, tmp_path, monkeypatch, version, flag, expect):
    ww_state(tmp_path, monkeypatch, version)
    with pytest.raises(ImageError, match=expect):
        WarewulfBackend(image_flag=flag).set_image(["node001"], "rocky9-2024.05")


@pytest.mark.parametrize("action, nodes, image, expect", [
    ("set", ["node001"], "no-such-image", "image does not exist: no-such-image"),
    ("set", ["node999"], "rocky9-2024.05", r"node\(s\) not found: node999"),
    ("get", ["node999"], None, r"node\(s\) not found: node999"),
])
def test_warewulf_errors_carry_wwctls_message(standin_path, tmp_path, monkeypatch, action, nodes, image, expect):
    ww_state(tmp_path, monkeypatch)
    ww = WarewulfBackend()
    with pytest.raises(ImageError, match=expect):
        ww.set_image(nodes, image) if action == "set" else ww.get_image(nodes)


def test_warewulf_command_failure_and_missing_binary(standin_path, tmp_path, monkeypatch):
    ww_state(tmp_path, monkeypatch, fail={"node set": "ERROR  : could not persist nodes.conf: read-only file system"})
    with pytest.raises(ImageError, match="exit 1.*read-only file system"):
        WarewulfBackend().set_image(["node001"], "rocky9-2024.05")
    with pytest.raises(ImageError, match="command not found"):
        WarewulfBackend(command="wwctl-not-installed").get_image(["node001"])


def test_warewulf_without_yes_would_modify_nothing(standin_path, tmp_path, monkeypatch):
    """Why --yes matters: without it wwctl asks, and with no terminal answers no."""
    path = ww_state(tmp_path, monkeypatch)
    import subprocess
    subprocess.run(["wwctl", "node", "set", "--image", "rocky9-2024.05", "node001"],
                   stdin=subprocess.DEVNULL, capture_output=True, check=True)
    assert read_state(path)["nodes"]["node001"]["image"] is None


def test_warewulf_reboot_is_power_cycle(standin_path, tmp_path, monkeypatch):
    path = ww_state(tmp_path, monkeypatch)
    WarewulfBackend().reboot(["node001", "node002"], hard=True)
    assert read_state(path)["power"] == [["cycle", "node001"], ["cycle", "node002"]]


@pytest.mark.parametrize("text, expect", [
    ("NODE FIELD PROFILE VALUE\nn1 ImageName default rocky\nn1 Kernel.Args default quiet\n", {"n1": "rocky"}),
    ("n1 ContainerName -- centos7\nn2 ContainerName default --\n", {"n1": "centos7", "n2": ""}),
    ("n1 Id -- n1\n", {}),
])
def test_parse_wwctl_list_all(text, expect):
    assert parse_list_all(text) == expect


# --- Scyld ClusterWare ---------------------------------------------------------------------------

def scyld_state(tmp_path, monkeypatch, **extra):
    nodes = {f"n{i}": {"name": f"n{i}", "mac": f"52:54:00:00:00:0{i}", "groups": [],
                       "power_uri": f"ipmi:///admin:pw@10.0.0.{i}", "up": True,
                       "attributes": {"_boot_config": "Boot2024a"}} for i in range(3)}
    path = write_state(tmp_path / "scyld.json",
                       {"boot_configs": ["Boot2024a", "Boot2024b"], "nodes": nodes, **extra})
    monkeypatch.setenv("SCYLD_STATE", str(path))
    return path


@pytest.mark.parametrize("mode, style", [("reload", None), ("reprovision", "disked")])
def test_scyld_sets_boot_config(standin_path, tmp_path, monkeypatch, mode, style):
    path = scyld_state(tmp_path, monkeypatch)
    sc = ScyldBackend()
    sc.set_image(["n0", "n1"], "Boot2024b", mode)
    assert sc.get_image(["n0", "n1", "n2"]) == {"n0": "Boot2024b", "n1": "Boot2024b", "n2": "Boot2024a"}
    attrs = read_state(path)["nodes"]["n0"]["attributes"]
    assert attrs.get("_boot_style") == style
    assert ["-i", "n0", "-i", "n1", "set", *(["_boot_config=Boot2024b"] +
            (["_boot_style=disked"] if style else []))] in read_state(path)["calls"]


@pytest.mark.parametrize("setup, call, expect", [
    ({}, ("set", ["n0"], "NoSuchBoot"), "Boot configuration 'NoSuchBoot' does not exist"),
    ({}, ("set", ["n9"], "Boot2024b"), "Unable to find node"),
    ({"fail": {"ls": "Unable to connect to https://head1/api/v1: Connection refused"}},
     ("get", ["n0"], None), "Connection refused"),
    ({"fail": {"set": "Permission denied: admin is not authorised"}},
     ("set", ["n0"], "Boot2024b"), "Permission denied"),
])
def test_scyld_errors_carry_clusterwares_message(standin_path, tmp_path, monkeypatch, setup, call, expect):
    scyld_state(tmp_path, monkeypatch, **setup)
    sc = ScyldBackend()
    verb, nodes, image = call
    with pytest.raises(ImageError, match=expect):
        sc.set_image(nodes, image) if verb == "set" else sc.get_image(nodes)


@pytest.mark.parametrize("style, hard, up, expect", [
    ("clusterware", False, True, [["soft", "n0"]]),
    ("clusterware", False, False, [["hard", "n0"]]),  # ClusterWare falls back to power_uri itself
    ("soft-then-hard", False, True, [["soft", "n0"]]),
    ("soft-then-hard", True, True, [["hard", "n0"]]),
])
def test_scyld_reboot(standin_path, tmp_path, monkeypatch, style, hard, up, expect):
    path = scyld_state(tmp_path, monkeypatch)
    state = read_state(path)
    state["nodes"]["n0"]["up"] = up
    write_state(path, state)
    sc = ScyldBackend(reboot_style=style)
    sc.reboot(["n0"], hard=hard)
    assert read_state(path)["reboots"] == expect
    assert sc.has_soft_reboot == (style == "soft-then-hard")


def test_scyld_soft_reboot_of_a_down_node_fails_with_its_message(standin_path, tmp_path, monkeypatch):
    path = scyld_state(tmp_path, monkeypatch)
    state = read_state(path)
    state["nodes"]["n0"]["up"] = False
    write_state(path, state)
    with pytest.raises(ImageError, match="soft reboot failed: node is not up"):
        ScyldBackend(reboot_style="soft-then-hard").reboot(["n0"], hard=False)


def test_scyld_standin_rejects_bad_arguments(standin_path, tmp_path, monkeypatch):
    import subprocess
    scyld_state(tmp_path, monkeypatch)
    for argv in (["scyld-nodectl", "-i", "n0", "frobnicate"], ["scyld-nodectl", "-i", "n0", "set", "novalue"],
                 ["scyld-nodectl", "-i", "n0", "reboot", "--soft", "--hard"]):
        assert subprocess.run(argv, capture_output=True).returncode != 0, argv


# --- generic command -----------------------------------------------------------------------------

HELPER = [sys.executable, "-c"]
# A tiny "site script": keeps node=image lines in a file given by $IMG_DB.
SET_SCRIPT = ("import os,sys; db=os.environ['IMG_DB']; d=dict(l.split('=',1) for l in open(db).read().split()) "
              "if os.path.exists(db) else {}; "
              "[d.__setitem__(n, sys.argv[2]) for n in sys.argv[1].split(',')]; "
              "sys.exit('nodeset: bad image') if sys.argv[2].startswith('bad') else None; "
              "open(db,'w').write(' '.join(f'{k}={v}' for k,v in d.items()))")
GET_ALL = ("import os,sys; d=dict(l.split('=',1) for l in open(os.environ['IMG_DB']).read().split()); "
           "[print(n, d.get(n, '')) for n in sys.argv[1].split(',')]")
GET_ONE = "import os,sys; d=dict(l.split('=',1) for l in open(os.environ['IMG_DB']).read().split()); print(d[sys.argv[1]])"
GET_JSON = ("import os,sys,json; d=dict(l.split('=',1) for l in open(os.environ['IMG_DB']).read().split()); "
            "print(json.dumps({n: d[n] for n in sys.argv[1].split(',')}))")


@pytest.mark.parametrize("get_argv, fmt", [
    (HELPER + [GET_ALL, "{nodes}"], "lines"),
    (HELPER + [GET_ONE, "{node}"], "lines"),
    (HELPER + [GET_JSON, "{nodes}"], "json"),
])
def test_command_backend_set_and_get(tmp_path, monkeypatch, get_argv, fmt):
    monkeypatch.setenv("IMG_DB", str(tmp_path / "db"))
    be = CommandBackend(HELPER + [SET_SCRIPT, "{nodes}", "{image}"], get_argv, get_format=fmt, timeout=20)
    be.set_image(["c1", "c2"], "osimage-2024.05")
    assert be.get_image(["c1", "c2"]) == {"c1": "osimage-2024.05", "c2": "osimage-2024.05"}


def test_command_backend_failures(tmp_path, monkeypatch):
    monkeypatch.setenv("IMG_DB", str(tmp_path / "db"))
    be = CommandBackend(HELPER + [SET_SCRIPT, "{nodes}", "{image}"], HELPER + ["print('{{}')", "{nodes}"],
                        get_format="json", timeout=20)
    with pytest.raises(ImageError, match="nodeset: bad image"):
        be.set_image(["c1"], "bad-image")
    with pytest.raises(ImageError, match="invalid JSON"):
        be.get_image(["c1"])
    with pytest.raises(ImageError, match="required"):
        CommandBackend([], ["x"])


def test_command_backend_placeholders_and_modes(tmp_path):
    log = tmp_path / "argv"
    rec = HELPER + ["import sys,json; open(sys.argv[1],'a').write(json.dumps(sys.argv[2:])+'\\n')", str(log)]
    be = CommandBackend(rec + ["set", "{hostlist}", "{image}", "{mode}"], rec + ["get"],
                        set_reprovision=rec + ["reinstall", "{node}", "{image}"],
                        reboot_argv=rec + ["soft", "{nodes}"], hard_reboot_argv=rec + ["hard", "{nodes}"],
                        timeout=20)
    be.set_image(["n1", "n2", "n3"], "img;rm -rf /", "reload")  # no shell: the text is one argument
    be.set_image(["n1", "n2"], "img", "reprovision")
    be.reboot(["n1", "n2"], hard=False)
    be.reboot(["n1"], hard=True)
    import json
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines == [["set", "n[1-3]", "img;rm -rf /", "reload"], ["reinstall", "n1", "img"],
                     ["reinstall", "n2", "img"], ["soft", "n1,n2"], ["hard", "n1"]]
    assert be.has_soft_reboot
