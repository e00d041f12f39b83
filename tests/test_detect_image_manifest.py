"""The "image_manifest" detector: image per node group in a repository file."""
from __future__ import annotations

import pytest

from autoupdate.detect.image_manifest import ImageManifestDetector
from autoupdate.model import ChangeClass, NodeAction

from ansible_support import CliSource, ConfigRepo, context, git

D = ChangeClass.DRAIN
MANAGED = ("c1", "c2", "c3", "g1", "g2")
BASE = """
groups:
  compute: {nodes: "c[1-3]", image: rocky9-compute, version: "1"}
  gpu: {nodes: "g[1-2]", image: rocky9-gpu, mode: reprovision}
  login: {nodes: login1, image: rocky9-login}
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("img")
    r = ConfigRepo(tmp / "repo")
    base = r.commit({"images.yml": BASE, "README": "x\n"})
    return r, CliSource(r, tmp / "trees"), base


def _act(image, group, mode, version=""):
    return (NodeAction("image", {"image": image, "version": version, "group": group, "mode": mode}),)


CASES = [
    ("image changed", BASE.replace("rocky9-gpu", "rocky9-gpu-2"),
     ({"g1": D, "g2": D}, {"g1": _act("rocky9-gpu-2", "gpu", "reprovision"), "g2": _act("rocky9-gpu-2", "gpu", "reprovision")})),
    ("version only", BASE.replace('version: "1"', 'version: "2"'),
     ({n: D for n in ("c1", "c2", "c3")}, {n: _act("rocky9-compute", "compute", "reload", "2") for n in ("c1", "c2", "c3")})),
    ("node moves group", BASE.replace('"c[1-3]"', '"c[1-2]"').replace('"g[1-2]"', '"g[1-2],c3"'),
     ({"c3": D}, {"c3": _act("rocky9-gpu", "gpu", "reprovision")})),
    ("unmanaged node changes: left alone", BASE.replace("rocky9-login", "rocky9-login-2"), ({}, {})),
    ("unknown node", BASE.replace('"g[1-2]"', '"g[1-3]"'), "ERROR: not have: g3"),
    ("node twice", BASE.replace("login1", "c1"), "ERROR: node c1 is already in group compute"),
    ("unparsable", "groups: {compute: [\n", "ERROR: invalid YAML"),
    ("missing image", BASE.replace("image: rocky9-login", "imag: rocky9-login"), "ERROR: needs 'nodes'"),
    ("bad mode", BASE.replace("reprovision", "reinstall"), "ERROR: expected reload or reprovision"),
    ("bad hostlist", BASE.replace('"c[1-3]"', '"c[1-"'), "ERROR: groups.compute.nodes"),
    ("deleted", None, "ERROR: was deleted"),
]


@pytest.mark.parametrize("name,text,expected", CASES, ids=[c[0] for c in CASES])
def test_manifest(repo, name, text, expected):
    r, source, base = repo
    git(r.path, "checkout", "-q", "-B", name.replace(" ", "-").replace(":", ""), base)
    new = r.commit({"images.yml": text})
    det = ImageManifestDetector("images.yml", known_nodes=lambda: {"login1"})
    verdict = det.detect(context(source, base, new, MANAGED))
    if isinstance(expected, str):
        assert verdict.is_error and expected.removeprefix("ERROR: ") in verdict.error, verdict
        assert verdict.error.startswith("images.yml")
    else:
        classes, actions = expected
        assert not verdict.is_error, verdict.error
        assert dict(verdict.classes) == classes
        assert dict(verdict.actions) == actions
        assert verdict.notes


def test_unchanged_manifest_and_first_run(repo):
    r, source, base = repo
    git(r.path, "checkout", "-q", "-B", "readme", base)
    new = r.commit({"README": "y\n"})
    det = ImageManifestDetector(known_nodes=lambda: {"login1"})
    assert det.detect(context(source, base, new, MANAGED)).classes == {}
    first = det.detect(context(source, None, base, MANAGED))  # no base: every node's image is new
    assert dict(first.classes) == {n: D for n in MANAGED}
