"""Detectors and the ansible applier are built from the configuration by name."""
from __future__ import annotations

import pytest

from autoupdate.adapters.ansible_apply import AnsibleApplier
from autoupdate.config import ConfigError, parse_config
from autoupdate.detect.ansible_check import AnsibleCheckDetector, AnsibleSyntaxDetector, drift_detectors
from autoupdate.detect.external import ExternalDetector
from autoupdate.detect.image_manifest import ImageManifestDetector
from autoupdate.detect.tags import TagsDetector
from autoupdate.wiring import Deps

BASE = {"repository": {"url": "/nonexistent"}}


def test_every_detector_type_and_the_applier_build_from_config():
    settings = parse_config({**BASE, "detectors": [
        {"type": "tags", "ignore": ["docs/**"]},
        {"type": "ansible_check", "interval": 600, "playbook": "check.yml"},
        {"type": "ansible_syntax"},
        {"type": "image_manifest", "path": "boot/images.yml", "mode": "reprovision"},
        {"type": "external", "name": "site", "command": ["/bin/decide", "--strict"], "timeout": 5}],
        "apply": {"backend": "ansible", "ansible": {"playbook": "nodes.yml", "forks": 3,
                                                     "tags": {"hot": "live", "drain": "cold"},
                                                     "vault_password_file": "/etc/au/vault"}}})
    deps = Deps(settings, source=object())
    tags, check, syntax, manifest, external = deps.detectors
    assert isinstance(tags, TagsDetector) and tags.ignore == ("docs/**", "boot/images.yml")
    assert tags.opts.playbook == "nodes.yml" and (tags.tags.hot, tags.tags.drain) == ("live", "cold")
    assert isinstance(check, AnsibleCheckDetector) and check.opts.playbook == "check.yml"
    assert drift_detectors(deps.detectors) == [check]
    assert isinstance(syntax, AnsibleSyntaxDetector)
    assert isinstance(manifest, ImageManifestDetector) and manifest.default_mode == "reprovision"
    assert isinstance(external, ExternalDetector) and external.name == "site" and external.timeout == 5
    applier = deps.applier
    assert isinstance(applier, AnsibleApplier)
    assert applier.opts.forks == 3 and applier.opts.vault_password_file == "/etc/au/vault"
    assert applier.hot_tag == "live"


@pytest.mark.parametrize("entry,problem", [
    ({"type": "external"}, "detectors[0].external.command: Field required"),
    ({"type": "external", "command": []}, "detectors[0].external.command"),
    ({"type": "ansible_check", "unreachable": "guess"}, "detectors[0].ansible_check.unreachable"),
    ({"type": "image_manifest", "mode": "wipe"}, "detectors[0].image_manifest.mode"),
    ({"type": "tags", "outside": "maybe"}, "detectors[0].tags.outside"),
    ({"type": "tagz"}, "detectors[0]"),
])
def test_bad_detector_settings_name_the_key(entry, problem):
    with pytest.raises(ConfigError) as exc:
        parse_config({**BASE, "detectors": [entry]})
    assert any(p.startswith(problem.split(":")[0]) for p in exc.value.problems), exc.value.problems
