"""CSM BSS and Exostellar image back-ends against stand-in HTTP servers that keep state and
check every request (bearer token, method, content type, JSON shape)."""
from __future__ import annotations

import json
import logging

import pytest
import structlog

from autoupdate.adapters.images.base import JsonHttp, PartialImageError
from autoupdate.adapters.images.csm_bss import (
    CsmBssBackend, param_value, rewrite_params, xname_mapper,
)
from autoupdate.adapters.images.exostellar import ExostellarBackend
from autoupdate.ports import ImageError
from standins.bss import BssStub, entry
from standins.exostellar import ExostellarStub, image

TOKEN = "s3cr3t-token-0123456789abcdef"
OLD, NEW = "8f41cc54-82f8-436c-905f-869f216ce487", "a44ff301-6232-46b4-9ba6-88ee1d19e2c2"
XNAMES = {"nid001": "x1000c0s0b0n0", "nid002": "x1000c0s0b0n1", "nid003": "x1000c0s1b0n0"}


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "bss.token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture
def bss(token_file):
    with BssStub(TOKEN, {x: entry(x, OLD) for x in XNAMES.values()}) as stub:
        yield stub


def bss_backend(stub, token_file, timeout=5.0):
    http = JsonHttp("BSS", stub.base_url, token_file=str(token_file), timeout=timeout)
    return CsmBssBackend(http, xname_mapper(XNAMES))


# --- BSS ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, no_wipe", [("reload", "1"), ("reprovision", "0")])
def test_bss_points_kernel_initrd_and_rootfs_at_new_image_keeping_other_params(bss, token_file, mode, no_wipe):
    backend = bss_backend(bss, token_file)
    before = dict(bss.state["x1000c0s0b0n0"])
    backend.set_image(["nid001", "nid002"], NEW, mode)
    after = bss.state["x1000c0s0b0n0"]
    assert after["kernel"] == f"s3://boot-images/{NEW}/kernel"
    assert after["initrd"] == f"s3://boot-images/{NEW}/initrd"
    assert param_value(after["params"], "metal.server") == f"s3://boot-images/{NEW}/rootfs"
    assert param_value(after["params"], "metal.no-wipe") == no_wipe
    kept = lambda p: [t for t in p.split() if not t.startswith(("metal.server=", "metal.no-wipe="))]
    assert kept(after["params"]) == kept(before["params"])  # every other parameter, same order
    assert after["cloud-init"] == before["cloud-init"]
    assert bss.state["x1000c0s1b0n0"]["kernel"].endswith(f"{OLD}/kernel")  # nid003 untouched
    assert backend.get_image(["nid001", "nid002", "nid003"]) == {"nid001": NEW, "nid002": NEW, "nid003": OLD}
    assert bss.violations == []
    puts = [r for r in bss.requests if r.method == "PUT"]
    assert [r.body["hosts"] for r in puts] == [["x1000c0s0b0n0"], ["x1000c0s0b0n1"]]
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in bss.requests)


def test_bss_get_image_is_one_request_for_the_batch(bss, token_file):
    backend = bss_backend(bss, token_file)
    backend.get_image(list(XNAMES))
    assert len(bss.requests) == 1
    assert bss.requests[0].query["name"] == [",".join(XNAMES.values())]


@pytest.mark.parametrize("status, body, expect", [
    (401, '{"title": "Unauthorized", "detail": "token expired"}', "HTTP 401 Unauthorized: token expired"),
    (404, '{"title": "Not Found", "detail": "cannot find host x1000c0s0b0n0"}', "HTTP 404 Not Found: cannot find host"),
    (500, '{"title": "Internal Server Error", "detail": "etcd unavailable"}', "HTTP 500 Internal Server Error: etcd unavailable"),
    (500, "upstream connect error", "HTTP 500 upstream connect error"),
    (200, "this is not json", "invalid JSON"),
    (200, '{"not": "a list"}', "expected a JSON list"),
])
def test_bss_errors_carry_the_servers_message(bss, token_file, status, body, expect):
    backend = bss_backend(bss, token_file)
    bss.inject(status, body, "GET")
    with pytest.raises(ImageError) as err:
        backend.get_image(["nid001"])
    assert expect in str(err.value)
    assert str(err.value).startswith("BSS GET /bootparameters")


def test_bss_put_failure_fails_only_that_node(bss, token_file):
    backend = bss_backend(bss, token_file)
    bss.inject(500, '{"title": "Internal Server Error", "detail": "etcd write failed"}', "PUT")
    with pytest.raises(PartialImageError) as err:
        backend.set_image(["nid001", "nid002"], NEW)
    assert set(err.value.failures) == {"nid001"}
    assert "etcd write failed" in err.value.failures["nid001"]
    assert backend.get_image(["nid001", "nid002"]) == {"nid001": OLD, "nid002": NEW}


@pytest.mark.parametrize("token_text, expect", [
    ("wrong-token", "HTTP 401"),
    ("", "is empty"),
    (None, "cannot read BSS token file"),
    (b"wrong-token\xff", "not UTF-8 text (byte 12)"),
])
def test_bss_bad_token_fails_without_revealing_it(bss, tmp_path, token_text, expect):
    path = tmp_path / "t"
    if token_text is not None:
        path.write_bytes(token_text if isinstance(token_text, bytes) else token_text.encode())
    backend = bss_backend(bss, path)
    with pytest.raises(ImageError) as err:
        backend.set_image(["nid001"], NEW)
    assert expect in str(err.value)
    assert "wrong-token" not in str(err.value) and TOKEN not in str(err.value)
    assert bss.state["x1000c0s0b0n0"]["kernel"].endswith(f"{OLD}/kernel")


def test_bss_unknown_xname_is_the_servers_404(bss, token_file):
    http = JsonHttp("BSS", bss.base_url, token_file=str(token_file), timeout=5)
    backend = CsmBssBackend(http, xname_mapper({}, r"nid(?P<n>\d+)", "x9000c0s{n}b0n0"))
    with pytest.raises(PartialImageError) as err:
        backend.set_image(["nid007"], NEW)
    assert "HTTP 404 Not Found: cannot find host x9000c0s7b0n0" in err.value.failures["nid007"]


def test_bss_unreachable_and_slow_server(bss, token_file):
    dead = CsmBssBackend(JsonHttp("BSS", "http://127.0.0.1:9/apis/bss/boot/v1", token_file=str(token_file),
                                  timeout=2), xname_mapper(XNAMES))
    with pytest.raises(ImageError, match="cannot connect"):
        dead.get_image(["nid001"])
    bss.delay = 1.0
    with pytest.raises(ImageError, match=r"BSS GET /bootparameters: no answer within 0.2s"):
        bss_backend(bss, token_file, timeout=0.2).get_image(["nid001"])
    bss.delay = 0.0


@pytest.mark.parametrize("params, mode, expect", [
    ("a=1 metal.server=s3://boot-images/old/rootfs b", "reload", "a=1 metal.server=NEW b"),
    ("a=1 b", "reload", "a=1 b metal.server=NEW"),
    ("metal.no-wipe=1 metal.server=x", "reprovision", "metal.no-wipe=0 metal.server=NEW"),
    ("metal.server=x metal.server=y c", "reload", "metal.server=NEW c"),
    ("metal.serverx=1", "reprovision", "metal.serverx=1 metal.server=NEW metal.no-wipe=0"),
])
def test_rewrite_params_table(params, mode, expect):
    assert rewrite_params(params, "NEW", mode) == expect


@pytest.mark.parametrize("xnames, regex, template, node, expect", [
    ({"n1": "x1c0s0b0n0"}, "", "{node}", "n1", "x1c0s0b0n0"),
    ({}, "", "{node}", "x3000c0s1b0n0", "x3000c0s1b0n0"),
    ({}, r"cn(?P<slot>\d+)", "x3000c0s{slot}b0n0", "cn007", "x3000c0s7b0n0"),
    ({}, r"cn(?P<slot>\d+)", "x3000c0s{slot}b0n0", "gpu1", ImageError),
    ({}, r"cn(?P<slot>\d+)", "x3000c0s{chassis}b0n0", "cn1", ImageError),
])
def test_xname_mapping_table(xnames, regex, template, node, expect):
    mapper = xname_mapper(xnames, regex, template)
    if expect is ImageError:
        with pytest.raises(ImageError, match=node):
            mapper(node)
    else:
        assert mapper(node) == expect


def test_bss_image_of_reports_inconsistent_entries(bss, token_file):
    backend = bss_backend(bss, token_file)
    bss.state["x1000c0s0b0n0"]["kernel"] = "s3://boot-images/other/kernel"
    got = backend.get_image(["nid001"])["nid001"]
    assert got.startswith("<mixed") and got != OLD


# --- Exostellar ----------------------------------------------------------------------------------

SNAP_OLD, SNAP_NEW = "snap-007d78a7a00b2dc84", "snap-0aa11bb22cc33dd44"


@pytest.fixture
def exo():
    with ExostellarStub({"rocky9": image("rocky9", SNAP_OLD), "gpu": image("gpu", SNAP_OLD)}) as stub:
        yield stub


def exo_backend(stub, **kw):
    return ExostellarBackend(JsonHttp("Exostellar", stub.url, timeout=5), **kw)


def test_exostellar_swaps_the_snapshot_and_is_idempotent(exo):
    backend = exo_backend(exo, image_name="rocky9", image_names={"gpu[1-2]": "gpu"})
    backend.set_image(["x1", "x2"], SNAP_NEW)
    assert exo.snapshot("rocky9") == SNAP_NEW and exo.snapshot("gpu") == SNAP_OLD
    put = [r for r in exo.requests if r.method == "PUT"]
    assert len(put) == 1 and put[0].path == "/v1/image"
    assert put[0].headers["content-type"] == "application/json"
    assert {k: v for k, v in put[0].body.items() if k != "Volumes"} == \
        {k: v for k, v in image("rocky9", SNAP_OLD).items() if k != "Volumes"}
    backend.set_image(["x3"], SNAP_NEW)  # another batch of the same image: no second PUT
    assert exo.puts == 1
    assert backend.get_image(["x1", "gpu1"]) == {"x1": SNAP_NEW, "gpu1": SNAP_OLD}
    assert exo.violations == []


@pytest.mark.parametrize("status, body, expect", [
    (404, '{"error": "image rocky9 not found"}', "HTTP 404 image rocky9 not found"),
    (500, '{"message": "database is locked"}', "HTTP 500 database is locked"),
    (401, '{"message": "Unauthorized"}', "HTTP 401 Unauthorized"),
    (200, "<html>gateway</html>", "invalid JSON"),
    (200, '["a list"]', "expected a JSON object"),
])
def test_exostellar_errors_carry_the_servers_message(exo, status, body, expect):
    backend = exo_backend(exo, image_name="rocky9")
    exo.inject(status, body, "GET")
    with pytest.raises(ImageError) as err:
        backend.set_image(["x1"], SNAP_NEW)
    assert expect in str(err.value)
    assert exo.snapshot("rocky9") == SNAP_OLD


def test_exostellar_token_required_and_sent(tmp_path):
    with ExostellarStub({"rocky9": image("rocky9", SNAP_OLD)}, token=TOKEN) as stub:
        anonymous = exo_backend(stub, image_name="rocky9")
        with pytest.raises(ImageError, match="HTTP 401"):
            anonymous.get_image(["x1"])
        (tmp_path / "tok").write_text(TOKEN)
        http = JsonHttp("Exostellar", stub.url, token_file=str(tmp_path / "tok"), timeout=5)
        ExostellarBackend(http, image_name="rocky9").set_image(["x1"], SNAP_NEW)
        assert stub.snapshot("rocky9") == SNAP_NEW


@pytest.mark.parametrize("data, key, expect", [
    ({"ImageName": "a", "Snap": SNAP_OLD}, "", ("Snap",)),
    ({"ImageName": "a", "Volumes": [{"SnapshotId": SNAP_OLD}]}, "", ("Volumes", 0, "SnapshotId")),
    ({"ImageName": "a", "Volumes": [{"SnapshotId": SNAP_OLD}]}, "Volumes.0.SnapshotId", ("Volumes", "0", "SnapshotId")),
    ({"ImageName": "a"}, "", "no field holds a snapshot id"),
    ({"ImageName": "a", "x": SNAP_OLD, "y": SNAP_NEW}, "", "2 fields hold a snapshot id"),
    ({"ImageName": "a"}, "Missing", "no field 'Missing'"),
])
def test_exostellar_snapshot_field_table(data, key, expect):
    backend = ExostellarBackend(None, snapshot_key=key)
    if isinstance(expect, str):
        with pytest.raises(ImageError, match=expect):
            backend.snapshot_path(data, "a")
    else:
        assert backend.snapshot_path(data, "a") == expect


def test_exostellar_node_without_image_name():
    with pytest.raises(ImageError, match="no Exostellar image name"):
        ExostellarBackend(None).image_name("x1")


# --- secrets never logged -------------------------------------------------------------------------

def test_token_never_in_logs_or_messages(bss, token_file, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    structlog.configure(logger_factory=structlog.stdlib.LoggerFactory())
    try:
        backend = bss_backend(bss, token_file)
        backend.set_image(["nid001"], NEW)
        bss.inject(401, '{"title": "Unauthorized"}')
        with pytest.raises(ImageError) as err:
            backend.get_image(["nid001"])
    finally:
        structlog.reset_defaults()
    out = capsys.readouterr()
    everything = caplog.text + out.out + out.err + str(err.value) + json.dumps(
        [r.body for r in bss.requests if r.body is not None])
    assert TOKEN not in everything
    assert any(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in bss.requests)  # it was sent
