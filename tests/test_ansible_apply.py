"""Real ansible-playbook runs (local connection, one fake root per host): the ansible applier and
the ansible_check detector, with per-host results from our callback plugin's event stream."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from autoupdate.adapters.ansible_apply import AnsibleApplier
from autoupdate.adapters.ansible_run import AnsibleOptions, ansible_playbook_program
from autoupdate.detect.ansible_check import AnsibleCheckDetector, check_drift
from autoupdate.model import ChangeClass, NodeAction, Revision

from ansible_support import ROLES, SITE, CliSource, ConfigRepo, context, git, inventory

pytestmark = pytest.mark.ansible

H, D = ChangeClass.HOT, ChangeClass.DRAIN
HOSTS = {"compute": ["n1", "n2", "n4"], "gpu": ["n3"]}
ALL = ("n1", "n2", "n3", "n4")
SECRET_ROLE = {
    "roles/token/tasks/main.yml": """
        - name: write token
          copy: {dest: "{{ root }}/etc/token", content: "{{ secret_token }}"}
          no_log: true
        """,
}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ans")
    password = tmp / "vault-pass"
    password.write_text("correct horse\n")
    vaulted = subprocess.run(
        [str(Path(ansible_playbook_program()).with_name("ansible-vault")), "encrypt_string",
         "--vault-password-file", str(password), "s3cret", "--name", "secret_token"],
        check=True, capture_output=True, text=True).stdout
    site_yml = SITE.replace("    - {role: kern, tags: [drainchange]}\n",
                            "    - {role: kern, tags: [drainchange]}\n    - {role: token, tags: [hotchange]}\n")
    repo = ConfigRepo(tmp / "repo")
    base = repo.commit({"site.yml": site_yml, "group_vars/all.yml": vaulted, **ROLES, **SECRET_ROLE,
                        "inventory": inventory(tmp / "roots", HOSTS, unreachable=("n4",))}, "base")
    return {"tmp": tmp, "repo": repo, "source": CliSource(repo, tmp / "trees"), "base": base,
            "password": password}


def _opts(site, roots: Path, *extra: str, password: Path | None = None) -> AnsibleOptions:
    pw = site["password"] if password is None else password
    return AnsibleOptions(vault_password_file=str(pw), forks=4,
                          extra_args=("-e", f"au_roots={roots}", *extra), timeout=120)


def _read(roots: Path, host: str, name: str) -> str | None:
    path = roots / host / "etc" / name
    return path.read_text() if path.exists() else None


def test_drain_apply_per_host_results(site):
    """One run: a task failing on n3 fails only n3; n4 is unreachable; the vaulted value arrives."""
    roots = site["tmp"] / "drain"
    applier = AnsibleApplier(_opts(site, roots, "-e", '{"fail_hosts": ["n3"]}'), site["source"])
    results = applier.apply(list(ALL), Revision(site["base"]), D, {})
    assert results["n1"].ok and results["n2"].ok, results
    assert results["n1"].changed is True
    assert not results["n3"].ok and "task 'site check' failed" in results["n3"].message
    assert "site check failed on n3" in results["n3"].message
    assert not results["n4"].ok and "unreachable" in results["n4"].message
    for host in ("n1", "n2"):
        assert _read(roots, host, "motd") == f"welcome to {host} v1\n"
        assert _read(roots, host, "kernel-args") == "quiet\n"
        assert _read(roots, host, "token") == "s3cret"
    assert _read(roots, "n3", "gpu-driver") == "535\n"  # the failing task came last


def test_wrong_vault_password_fails_the_node_naming_the_task(site, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    roots = tmp_path / "roots"
    applier = AnsibleApplier(_opts(site, roots, password=wrong), site["source"])
    results = applier.apply(["n1"], Revision(site["base"]), D, {})
    assert not results["n1"].ok
    assert "write token" in results["n1"].message or "vault" in results["n1"].message.lower(), results
    assert _read(roots, "n1", "token") is None


def test_hot_apply_runs_only_hot_tagged_tasks_on_the_batch(site):
    repo, source = site["repo"], site["source"]
    git(repo.path, "checkout", "-q", "-B", "hot", site["base"])
    new = repo.commit({"roles/motd/templates/motd.j2": "welcome to {{ inventory_hostname }} v2\n",
                       "roles/kern/tasks/main.yml": ROLES["roles/kern/tasks/main.yml"].replace("quiet", "noisy")},
                      "hot + drain")
    roots = site["tmp"] / "hot"
    results = AnsibleApplier(_opts(site, roots), source).apply(["n1"], Revision(new), H, {})
    assert results == {"n1": results["n1"]} and results["n1"].ok and results["n1"].changed
    assert _read(roots, "n1", "motd") == "welcome to n1 v2\n"
    assert _read(roots, "n1", "kernel-args") is None  # drain-tagged: not run live
    assert not (roots / "n2").exists()  # only the batch


def test_image_action_without_backend_fails_only_that_node(site, tmp_path):
    applier = AnsibleApplier(_opts(site, tmp_path / "roots"), site["source"])
    action = NodeAction("image", {"image": "rocky9", "group": "compute", "mode": "reload"})
    results = applier.apply(["n1", "n2"], Revision(site["base"]), D, {"n1": (action,)})
    assert not results["n1"].ok and "image" in results["n1"].message
    assert results["n2"].ok


def test_check_finds_drift_and_commit_changes_by_tag(site, tmp_path):
    source, repo = site["source"], site["repo"]
    roots = tmp_path / "roots"
    opts = _opts(site, roots)
    converged = AnsibleApplier(opts, source).apply(["n1", "n2", "n3"], Revision(site["base"]), D, {})
    assert all(r.ok for r in converged.values()), converged
    (roots / "n2" / "etc" / "motd").write_text("edited by hand\n")  # drift on one host

    detector = AnsibleCheckDetector(opts)
    drift = check_drift(detector, source, site["base"], ALL)
    assert not drift.is_error, drift.error
    assert dict(drift.classes) == {"n2": H, "n4": D}, drift.parts[0].notes
    notes = "\n".join(drift.parts[0].notes)
    assert "n4: drain: unreachable" in notes and "write motd" in notes
    assert _read(roots, "n2", "motd") == "edited by hand\n"  # --check changed nothing

    (roots / "n2" / "etc" / "motd").write_text("welcome to n2 v1\n")
    git(repo.path, "checkout", "-q", "-B", "gpu-note", site["base"])
    new = repo.commit({"site.yml": source.read(site["base"], "site.yml").decode().replace("note 1", "note 2")},
                      "gpu note")
    verdict = detector.detect(context(source, site["base"], new, ("n1", "n2", "n3")))
    assert dict(verdict.classes) == {"n3": H}, verdict.notes
