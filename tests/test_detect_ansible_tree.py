"""The static playbook model: effective tags inherited the way Ansible inherits them, and the
task-by-task comparison of two commits (pure: files from a dict, no Ansible run)."""
from __future__ import annotations

import textwrap

import pytest

from autoupdate.detect.ansible_tree import AnsibleYAMLError, TagNames, changed_tasks, flatten
from autoupdate.model import ChangeClass


def tree(files: dict[str, str]):
    data = {k: textwrap.dedent(v).lstrip("\n").encode() for k, v in files.items()}
    return flatten(data.get, "site.yml")


def tags_of(files):
    return {t.name: t.tags for t in tree(files).tasks}


BASE_ROLE = {"roles/r/tasks/main.yml": "- name: in role\n  debug: {msg: x}\n"}

CASES = [
    ("play tags reach every task",
     {"site.yml": "- hosts: all\n  tags: [hotchange]\n  tasks:\n    - name: t\n      debug: {}\n"},
     {"t": {"hotchange"}}),
    ("role entry tags reach role tasks",
     {"site.yml": "- hosts: all\n  roles: [{role: r, tags: drainchange}]\n", **BASE_ROLE},
     {"in role": {"drainchange"}}),
    ("block tags",
     {"site.yml": "- hosts: all\n  tasks:\n    - block:\n        - name: b\n          debug: {}\n      tags: [hotchange, x]\n"},
     {"b": {"hotchange", "x"}}),
    ("import_tasks passes its tags on",
     {"site.yml": "- hosts: all\n  tasks:\n    - name: imp\n      import_tasks: more.yml\n      tags: hotchange\n",
      "more.yml": "- name: inner\n  debug: {}\n"},
     {"imp": {"hotchange"}, "inner": {"hotchange"}}),
    ("include_tasks does not, apply does",
     {"site.yml": "- hosts: all\n  tasks:\n"
                  "    - name: inc\n      include_tasks: more.yml\n      tags: hotchange\n"
                  "    - name: inc2\n      ansible.builtin.include_tasks: {file: other.yml, apply: {tags: [drainchange]}}\n",
      "more.yml": "- name: inner\n  debug: {}\n", "other.yml": "- name: inner2\n  debug: {}\n"},
     {"inc": {"hotchange"}, "inner": set(), "inc2": set(), "inner2": {"drainchange"}}),
    ("import_playbook tags",
     {"site.yml": "- import_playbook: sub/play.yml\n  tags: [hotchange]\n",
      "sub/play.yml": "- hosts: all\n  tasks:\n    - name: sub\n      debug: {}\n"},
     {"sub": {"hotchange"}}),
    ("role dependencies inherit the role's tags",
     {"site.yml": "- hosts: all\n  roles: [{role: r, tags: hotchange}]\n", **BASE_ROLE,
      "roles/r/meta/main.yml": "dependencies: [{role: dep}]\n",
      "roles/dep/tasks/main.yml": "- name: from dep\n  debug: {}\n"},
     {"in role": {"hotchange"}, "from dep": {"hotchange"}}),
    ("import_role with tasks_from",
     {"site.yml": "- hosts: all\n  tasks:\n    - name: ir\n      import_role: {name: r, tasks_from: extra}\n      tags: hotchange\n",
      "roles/r/tasks/extra.yml": "- name: extra task\n  debug: {}\n", **BASE_ROLE},
     {"ir": {"hotchange"}, "extra task": {"hotchange"}}),
    ("templated tags cannot be determined",
     {"site.yml": "- hosts: all\n  tasks:\n    - name: t\n      debug: {}\n      tags: '{{ my_tags }}'\n"},
     {"t": None}),
    ("comma separated tags",
     {"site.yml": "- hosts: all\n  tasks:\n    - name: t\n      debug: {}\n      tags: 'a, hotchange'\n"},
     {"t": {"a", "hotchange"}}),
]


@pytest.mark.parametrize("name,files,expected", CASES, ids=[c[0] for c in CASES])
def test_effective_tags(name, files, expected):
    got = tags_of(files)
    assert {k: (None if v is None else set(v)) for k, v in got.items()} == expected


@pytest.mark.parametrize("tags,klass", [
    ({"hotchange"}, ChangeClass.HOT), ({"drainchange"}, ChangeClass.DRAIN),
    ({"hotchange", "drainchange"}, ChangeClass.DRAIN), (set(), ChangeClass.DRAIN),
    ({"always"}, ChangeClass.DRAIN), (None, ChangeClass.DRAIN),
])
def test_classify(tags, klass):
    assert TagNames().classify(None if tags is None else frozenset(tags)) is klass


PLAY = "- hosts: compute\n  vars: {v: 1}\n  tasks:\n    - name: a\n      debug: {msg: a}\n    - name: b\n      debug: {msg: b}\n"


@pytest.mark.parametrize("new_site,changed", [
    (PLAY, set()),
    (PLAY.replace("msg: b", "msg: B"), {"b"}),
    (PLAY.replace("vars: {v: 1}", "vars: {v: 2}"), {"a", "b"}),  # the play header shapes every task
    (PLAY.replace("hosts: compute", "hosts: gpu"), {"a", "b"}),
    (PLAY.replace("    - name: b\n      debug: {msg: b}\n", ""), {"b"}),  # removed: the old task
    ("# comment\n" + PLAY, set()),
])
def test_changed_tasks(new_site, changed):
    old, new = tree({"site.yml": PLAY}), tree({"site.yml": new_site})
    assert {t.name for t in changed_tasks(old, new)} == changed


@pytest.mark.parametrize("files,fragment", [
    ({"site.yml": "- hosts: all\n  tasks: [\n"}, "site.yml: line 3, column 1: invalid YAML"),
    ({"site.yml": "hosts: all\n"}, "must be a list of plays"),
    ({"site.yml": "- hosts: all\n  tasks: [1]\n"}, "a task must be a mapping"),
    ({}, "playbook not found"),
])
def test_invalid_trees(files, fragment):
    with pytest.raises(AnsibleYAMLError, match=fragment):
        tree(files)


def test_vault_and_unsafe_tags_parse():
    t = tree({"site.yml": """
        - hosts: all
          vars:
            s: !vault |
              $ANSIBLE_VAULT;1.1;AES256
              3132
            u: !unsafe '{{x}}'
          tasks:
            - name: t
              debug: {}
        """})
    assert [x.name for x in t.tasks] == ["t"]


def test_unresolved_references_are_recorded():
    t = tree({"site.yml": "- hosts: all\n  tasks:\n    - include_tasks: '{{ x }}.yml'\n    - include_role: {name: '{{ r }}'}\n"})
    assert len(t.unresolved) == 2
