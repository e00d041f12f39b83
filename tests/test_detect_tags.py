"""The "tags" detector against a real git repository and Ansible's own inventory resolution."""
from __future__ import annotations

import pytest

from autoupdate.adapters.ansible_run import AnsibleOptions
from autoupdate.detect import run_detectors
from autoupdate.detect.ansible_check import AnsibleSyntaxDetector
from autoupdate.detect.tags import TagsDetector
from autoupdate.model import ChangeClass

from ansible_support import ROLES, SITE, CliSource, ConfigRepo, context, inventory

pytestmark = pytest.mark.ansible

H, D = ChangeClass.HOT, ChangeClass.DRAIN
HOSTS = {"compute": ["n1", "n2"], "gpu": ["n3"]}
MANAGED = ("n1", "n2", "n3")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tags")
    repo = ConfigRepo(tmp / "repo")
    sha = repo.commit({"site.yml": SITE, "inventory": inventory(tmp / "roots", HOSTS), **ROLES}, "base")
    return repo, CliSource(repo, tmp / "trees"), sha


def _branch(repo: ConfigRepo, base_sha: str, files: dict, name: str) -> str:
    from ansible_support import git
    git(repo.path, "checkout", "-q", "-B", name, base_sha)
    return repo.commit(files, name)


CASES = [
    # id, files changed (None deletes), detector options, expected classes (or "ERROR: text")
    ("hot role template", {"roles/motd/templates/motd.j2": "v2\n"}, {}, {"n1": H, "n2": H}),
    ("drain role task", {"roles/kern/tasks/main.yml": ROLES["roles/kern/tasks/main.yml"].replace("quiet", "quiet splash")},
     {}, {"n1": D, "n2": D}),
    ("untagged role", {"roles/gpu/tasks/main.yml": ROLES["roles/gpu/tasks/main.yml"].replace("535", "550")},
     {}, {"n3": D}),
    ("hot task in play", {"site.yml": SITE.replace("note 1", "note 2")}, {}, {"n3": H}),
    ("drain task inside hot role",
     {"roles/motd/tasks/main.yml": ROLES["roles/motd/tasks/main.yml"] + "- name: reboot-worthy\n  copy: {dest: /dev/null, content: x}\n  tags: drainchange\n"},
     {}, {"n1": D, "n2": D}),
    ("comment only", {"roles/kern/tasks/main.yml": "# a comment\n" + ROLES["roles/kern/tasks/main.yml"]}, {}, {}),
    ("group_vars", {"group_vars/gpu.yml": "x: 1\n"}, {}, {"n3": D}),
    ("host_vars", {"host_vars/n2.yml": "x: 1\n"}, {}, {"n2": D}),
    ("inventory move", {"inventory": None}, {}, "ERROR"),  # the inventory is gone: cannot resolve
    ("unused role", {"roles/old/tasks/main.yml": "- debug: {msg: x}\n"}, {}, {}),
    ("docs ignored", {"docs/README.md": "more\n"}, {"ignore": ["docs/**"]}, {}),
    ("docs outside", {"docs/README.md": "more\n"}, {}, {"n1": D, "n2": D, "n3": D}),
    ("docs outside ignore", {"docs/README.md": "more\n"}, {"outside": "ignore"}, {}),
    ("broken yaml", {"roles/motd/tasks/main.yml": "- name: x\n  copy: {dest: [\n"}, {}, "ERROR: invalid YAML"),
    ("templated tags", {"site.yml": SITE.replace("tags: [hotchange]\n- hosts: all", "tags: \"{{ t }}\"\n- hosts: all")},
     {}, {"n3": D}),
]


@pytest.mark.parametrize("name,files,options,expected", CASES, ids=[c[0] for c in CASES])
def test_tags_classes(base, name, files, options, expected):
    repo, source, base_sha = base
    new = _branch(repo, base_sha, files, name.replace(" ", "-"))
    det = TagsDetector(AnsibleOptions(), syntax=False, **options)
    verdict = det.detect(context(source, base_sha, new, MANAGED))
    if isinstance(expected, str):
        assert verdict.is_error, verdict
        assert expected.removeprefix("ERROR").strip(": ") in verdict.error
    else:
        assert not verdict.is_error, verdict.error
        assert {n: c for n, c in verdict.classes.items() if c} == expected, verdict.notes
        assert verdict.notes  # plan shows why


def test_inventory_change_drains_moved_host(base):
    repo, source, base_sha = base
    inv = source.read(base_sha, "inventory").decode().replace("[gpu]\nn3", "[gpu]\nn3\nn2")
    new = _branch(repo, base_sha, {"inventory": inv}, "inv-move")
    verdict = TagsDetector(AnsibleOptions(), syntax=False).detect(context(source, base_sha, new, MANAGED))
    assert verdict.classes == {"n2": D}, verdict.notes


def test_first_run_classes_every_task(base):
    _, source, base_sha = base
    verdict = TagsDetector(AnsibleOptions(), syntax=False, ignore=["docs/**"]).detect(
        context(source, None, base_sha, MANAGED))
    # every task counts as changed: compute has drain-tagged kern, gpu has the untagged gpu role
    assert verdict.classes == {"n1": D, "n2": D, "n3": D}


@pytest.mark.parametrize("detector", ["tags", "ansible_syntax"])
def test_syntax_error_is_error_and_starts_nothing(base, detector):
    repo, source, base_sha = base
    bad = SITE.replace("    - name: gpu note\n", "    - name: gpu note\n      no_such_keyword_or_module: {}\n")
    new = _branch(repo, base_sha, {"site.yml": bad}, f"syntax-{detector}")
    det = TagsDetector(AnsibleOptions()) if detector == "tags" else AnsibleSyntaxDetector(AnsibleOptions())
    verdict = run_detectors([det], source, base_sha, new, MANAGED)
    assert verdict.is_error and "syntax check failed" in verdict.error, verdict
    assert "site.yml" in verdict.error
    assert verdict.nodes_of(H) == [] or verdict.is_error  # the engine starts nothing on ERROR
