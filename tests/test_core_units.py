"""Table-driven unit tests of the pure parts: config, lists, budgets, planner, phases, detectors."""
from __future__ import annotations

import pytest

from autoupdate.config import ConfigError, parse_config, resolve_amount
from autoupdate.detect import run_detectors
from autoupdate.detect.path_rules import PathRules, Rule
from autoupdate.engine import phases
from autoupdate.engine.planner import order, select
from autoupdate.model import (
    ChangeClass as C, ClusterSnapshot, DetectorVerdict, Job, NodeBase, NodeInfo, NodePhase as P,
    NodeRecord, Reservation, Verdict,
)
from autoupdate.safety import Budget, SafetyError, SafetyLists, held_by_others, read_pause, write_pause
from autoupdate.config import NodeLists, RolloutSettings
from enginekit import MemorySource

REPO = {"repository": {"url": "/x"}}


@pytest.mark.parametrize("data,problem", [
    ({}, "repository: Field required"),
    ({**REPO, "rollout": {"max_unavailable": "ten"}}, "rollout.max_unavailable"),
    ({**REPO, "rollout": {"max_attempts": 0}}, "rollout.max_attempts: Input should be greater than or equal to 1"),
    ({**REPO, "nodes": {"blacklist": "node[1-"}}, "nodes.blacklist: invalid hostlist"),
    ({**REPO, "nodes": {"blacklist": "login[1-2] ctl1"}}, "nodes.blacklist: invalid hostlist"),  # protects no one
    ({**REPO, "nodes": {"canaries": "n1 n2"}}, "nodes.canaries: invalid hostlist 'n1 n2': 'n1 n2' has a space"),
    ({**REPO, "nodes": {"blacklist": 5}}, "nodes.blacklist: expected a hostlist such as 'node[01-04],gpu1' or a list"),
    ({**REPO, "nodes": {"whitelist": ""}}, "nodes.whitelist: empty, so no node would be managed"),  # not "no whitelist"
    ({**REPO, "nodes": {"hypervisors": {"hv[1-2]": "vm[1-4]"}}}, "nodes.hypervisors.hv[1-2]: expected one node name"),
    ({**REPO, "nodes": {"blaklist": "n1"}}, "nodes.blaklist: unknown key"),
    ({**REPO, "cluster": {"backend": "lsf"}}, "cluster.backend"),
    ({**REPO, "detectors": [{"type": "path_rules", "rules": [{"glob": "x", "class": "maybe"}]}]},
     "detectors[0].path_rules.rules[0].class"),
    ({**REPO, "detectors": [{"type": "nope"}]}, "detectors[0]"),
    ([1, 2], "expected a mapping"),
])
def test_config_errors_name_the_key(data, problem):
    with pytest.raises(ConfigError) as exc:
        parse_config(data, "f.yaml")
    assert any(problem in p for p in exc.value.problems), exc.value.problems


# A hostlist may also be a YAML list of hostlists: the same nodes as the comma-joined text.
@pytest.mark.parametrize("value", [["login1", "ctl[1-2]"], "login1,ctl[1-2]", ["login1,ctl1", "ctl2"]])
def test_a_hostlist_may_be_a_yaml_list(value):
    lists = SafetyLists.from_settings(parse_config({**REPO, "nodes": {"blacklist": value}}, "f.yaml").nodes)
    assert sorted(lists.blacklist) == ["ctl1", "ctl2", "login1"]


_AMOUNT = "expected a count or a percentage such as '10%', got '150%'"


# A key of several forms (a count, or a map of counts per partition) fails each form: one line.
@pytest.mark.parametrize("value, problems", [
    ("150%", [f"rollout.max_unavailable: {_AMOUNT}"]),
    ({"batch": "150%"}, [f"rollout.max_unavailable.batch: {_AMOUNT}"]),
    ([1, 2], ["rollout.max_unavailable: expected an integer, a string or a mapping"]),
    ({"batch": [1]}, ["rollout.max_unavailable.batch: expected an integer or a string"]),
])
def test_a_key_of_several_forms_gets_one_line(value, problems):
    with pytest.raises(ConfigError) as exc:
        parse_config({**REPO, "rollout": {"max_unavailable": value}}, "f.yaml")
    assert exc.value.problems == problems


def test_config_reports_every_problem_at_once():
    with pytest.raises(ConfigError) as exc:
        parse_config({**REPO, "rollout": {"max_attempts": 0, "soak_seconds": -1}, "bogus": 1})
    assert len(exc.value.problems) == 3


def test_example_config_is_valid():
    import yaml
    from pathlib import Path
    data = yaml.safe_load((Path(__file__).parent.parent / "config" / "autoupdate.example.yaml").read_text())
    s = parse_config(data)
    SafetyLists.from_settings(s.nodes)


@pytest.mark.parametrize("amount,total,minimum,expected", [
    (3, 100, 1, 3), ("10%", 32, 1, 3), ("10%", 5, 1, 1), ("50%", 5, 0, 2), ("100%", 7, 1, 7), (0, 9, 1, 0),
])
def test_resolve_amount(amount, total, minimum, expected):
    assert resolve_amount(amount, total, minimum) == expected


@pytest.mark.parametrize("lists,named", [
    ({"blacklist": "n[1-3]", "whitelist": "n[3-9]"}, "n3 in the blacklist and in the whitelist"),
    ({"blacklist": "n[1-3]", "canaries": "n2,n7"}, "n2 in the blacklist and in the canaries"),
    ({"blacklist": "vm1", "hypervisors": {"hv1": "vm[1-2]"}}, "hypervisor unit hv1"),
    ({"blacklist": "N[1-3]", "canaries": "n2,n7"}, "n2 in the blacklist and in the canaries"),  # any case
])
def test_blacklist_overlap_refuses_to_start(lists, named):
    with pytest.raises(SafetyError) as exc:
        SafetyLists.from_settings(NodeLists(**lists))
    assert named in str(exc.value) and "refusing to start" in str(exc.value)


@pytest.mark.parametrize("white,node,managed", [
    (None, "n1", True), (None, "login1", False), ("n[1-4]", "n5", False), ("n[1-4]", "n2", True),
    (None, "ctl1", False), (None, "LOGIN1", False),  # the blacklist protects a name in any case
    ("n[1-4]", "N2", False),  # the whitelist takes a name only as written: the safe side
])
def test_managed(white, node, managed):
    lists = SafetyLists.from_settings(NodeLists(blacklist="login1,CTL1", whitelist=white))
    assert lists.managed(node) is managed


def info(name, base=NodeBase.IDLE, flags=(), reason="", user="", parts=("a",)):
    return NodeInfo(name, base, frozenset(flags), parts, reason, user, boot_time=1.0)


def snap(*infos, jobs=(), res=(), at=1000.0):
    return ClusterSnapshot(at, {i.name: i for i in infos}, tuple(jobs), tuple(res))


@pytest.mark.parametrize("node,res,held", [
    (info("n1"), (), None),
    (info("n1", flags={"DRAIN"}, reason="autoupdate: abc drain rollout 1"), (), None),
    (info("n1", flags={"DRAIN"}, reason="bad dimm", user="alice"), (), "drained by alice: bad dimm"),
    (info("n1", base=NodeBase.DOWN, reason="dead"), (), "down: dead"),
    (info("n1", flags={"NOT_RESPONDING"}), (), "down"),
    (info("n1", flags={"WEIRD_NEW_FLAG"}), (), "state unknown"),
    (info("n1"), (Reservation("maint_x", ("n1",), 0, 5000),), "in reservation maint_x"),
    (info("n1"), (Reservation("autoupdate-n1", ("n1",), 0, 5000),), None),
    (info("n1"), (Reservation("later", ("n1",), 3000, 5000),), None),
    (info("n1"), (Reservation("maint_y", ("n2", "n1"), 0, 5000),), "in reservation maint_y"),
    (info("n1"), (Reservation("maint_z", ("n2",), 0, 5000),), None),
    (info("n1", flags={"MAINTENANCE"}), (Reservation("autoupdate-n1", ("n1",), 0, 5000),), None),
    (info("n1", flags={"MAINTENANCE"}), (Reservation("autoupdate-n2", ("n2",), 0, 5000),), "reserved by someone"),
    (info("n1", flags={"MAINTENANCE"}), (), "reserved by someone else"),
    (info("n1", flags={"POWERED_DOWN"}), (), "powered down"),
])
def test_held_by_others(node, res, held):
    why = held_by_others(node, snap(node, res=res))
    assert (why is None) if held is None else (held in why)


def rec(node, klass=C.DRAIN, canary=False, phase=P.PENDING):
    return NodeRecord(node, phase, "t" * 40, 1, klass, canary=canary)


def test_planner_orders_canaries_then_idle_then_soonest_ending():
    s = snap(info("a"), info("b"), info("c"), info("d"),
             jobs=[Job("1", ("a",), 0, 5000), Job("2", ("b",), 0, 2000), Job("3", ("d",), 0, 9000)])
    got = [r.node for r in order([rec("a"), rec("b"), rec("c"), rec("d", canary=True)], s)]
    assert got == ["d", "c", "b", "a"]


@pytest.mark.parametrize("limit,used,max_in_flight,in_flight,expected", [
    (2, 0, 0, 0, ["c", "b"]), (2, 1, 0, 0, ["c"]), (1, 1, 0, 0, []), (3, 0, 1, 0, ["c"]), (3, 0, 2, 2, []),
])
def test_select_respects_budget_and_in_flight(limit, used, max_in_flight, in_flight, expected):
    s = snap(info("a"), info("b"), info("c"), jobs=[Job("1", ("a",), 0, 5000), Job("2", ("b",), 0, 2000)])
    budget = Budget({"a": limit}, {"a": used})
    sel = select([rec("a"), rec("b"), rec("c")], s, budget, in_flight, max_in_flight, lambda r: None)
    assert [r.node for r in sel.start] == expected
    assert set(sel.waiting) == {"a", "b", "c"} - set(expected)


def test_hot_work_takes_no_capacity():
    s = snap(info("a"), info("b"))
    sel = select([rec("a", C.HOT), rec("b", C.HOT)], s, Budget({"a": 0}, {}), 0, 0, lambda r: None)
    assert len(sel.start) == 2


def test_budget_counts_nodes_out_for_any_reason():
    s = snap(info("a", flags={"DRAIN"}, reason="hw"), info("b", base=NodeBase.DOWN), info("c"), info("d"))
    b = Budget.compute(RolloutSettings(max_unavailable=3), s, {})
    assert b.used == {"a": 2} and b.room_for(["a"]) and not b.room_for(["a"], 2)


@pytest.mark.parametrize("frm,to,ok", [
    (P.PENDING, P.DRAINING, True), (P.PENDING, P.APPLYING, True), (P.DRAINING, P.DRAINED, True),
    (P.DRAINED, P.APPLYING, True), (P.APPLYING, P.REBOOTING, True), (P.REBOOTING, P.VERIFYING, True),
    (P.VERIFYING, P.RESUMING, True), (P.RESUMING, P.DONE, True), (P.RETRY_WAIT, P.APPLYING, True),
    (P.PENDING, P.REBOOTING, False), (P.DRAINING, P.REBOOTING, False), (P.DONE, P.DRAINING, False),
    (P.FAILED, P.DONE, False), (P.RESUMING, P.REBOOTING, False),
])
def test_transition_table(frm, to, ok):
    if ok:
        phases.check(frm, to)
    else:
        with pytest.raises(phases.TransitionError):
            phases.check(frm, to)


@pytest.mark.parametrize("parts,classes,error", [
    ([DetectorVerdict("a", {"n1": C.HOT}), DetectorVerdict("b", {"n1": C.DRAIN, "n2": C.HOT})],
     {"n1": C.DRAIN, "n2": C.HOT}, ""),
    ([DetectorVerdict("a", {"n1": C.GOOD}), DetectorVerdict("b", {"n1": C.HOT})], {"n1": C.HOT}, ""),
    ([DetectorVerdict("a", {"n1": C.HOT}), DetectorVerdict("b", error="bad yaml")], {"n1": C.HOT}, "b: bad yaml"),
])
def test_verdicts_combine(parts, classes, error):
    v = Verdict.combine("o", "n", parts)
    assert dict(v.classes) == classes and v.error == error and v.is_error == bool(error)


RULES = [Rule("docs/*", C.GOOD, None), Rule("roles/motd/*", C.HOT, ("n1", "n2")), Rule("roles/*", C.DRAIN, None)]


@pytest.mark.parametrize("changes,expected", [
    ({"docs/a.md": "x"}, {}),
    ({"roles/motd/tasks/main.yml": "x"}, {"n1": C.HOT, "n2": C.HOT}),
    ({"roles/kernel/x": "x"}, {"n1": C.DRAIN, "n2": C.DRAIN, "n3": C.DRAIN}),
    ({"roles/motd/x": "x", "site.yml": "x"}, {"n1": C.DRAIN, "n2": C.DRAIN, "n3": C.DRAIN}),  # unmatched: DRAIN
    ({"roles/motd/x": "x", "docs/y": "z"}, {"n1": C.HOT, "n2": C.HOT}),
])
def test_path_rules(changes, expected):
    src = MemorySource({"docs/a.md": "", "roles/motd/x": "", "roles/kernel/x": "", "site.yml": ""})
    base = src.branch[-1]
    new = src.commit(changes)
    v = run_detectors([PathRules(RULES)], src, base, new, ["n1", "n2", "n3"])
    assert {n: c for n, c in v.classes.items() if c} == expected


def test_no_detector_means_everything_is_drain():
    src = MemorySource({"a": "1"})
    base = src.branch[-1]
    v = run_detectors([], src, base, src.commit({"a": "2"}), ["n1"])
    assert dict(v.classes) == {"n1": C.DRAIN}


def test_crashing_detector_is_error_not_a_crash():
    class Boom:
        name = "boom"

        def detect(self, ctx):
            raise KeyError("x")
    src = MemorySource({"a": "1"})
    base = src.branch[-1]
    v = run_detectors([Boom()], src, base, src.commit({"a": "2"}), ["n1"])
    assert v.is_error and "boom: detector failed" in v.error


def test_pause_file_roundtrip(tmp_path):
    p = tmp_path / "pause"
    assert not read_pause(p).paused
    write_pause(p, "fixing playbook", "alice", 123.0)
    st = read_pause(p)
    assert st.paused and st.reason == "fixing playbook" and st.by == "alice" and st.since == 123.0
    p.write_text("plain text reason\n")
    assert read_pause(p).reason == "plain text reason"


# Whatever is in the control file, its presence means paused and nothing raises.
@pytest.mark.parametrize("content, reason", [
    (b"\xff\xfe\x00 stop", "\ufffd\ufffd\x00 stop"),  # not UTF-8
    (b'{"since": "yesterday", "reason": 5}', '{"since": "yesterday", "reason": 5}'),  # JSON, wrong types
    (b'["a list"]', '["a list"]'),
    (b"", ""),
])
def test_any_pause_file_content_means_paused(tmp_path, content, reason):
    p = tmp_path / "pause"
    p.write_bytes(content)
    st = read_pause(p)
    assert st.paused and st.reason == reason


def test_an_unreadable_pause_file_means_paused(tmp_path):
    p = tmp_path / "pause"
    p.mkdir()  # a directory: read fails
    st = read_pause(p)
    assert st.paused and "pause file unreadable" in st.reason


@pytest.mark.parametrize("text, expected", [
    ("c00001", ["c00001"]),  # plain names skip NodeSet: the same answer
    ("node-1.ib", ["node-1.ib"]),
    (" n01 ", ["n01"]),
    ("n[01-03]", ["n01", "n02", "n03"]),
    ("n01,n03", ["n01", "n03"]),
    ("n[01-03]!n02", ["n01", "n03"]),  # an operator: NodeSet's business
    ("", []),
    (None, []),
])
def test_expand(text, expected):
    from ClusterShell.NodeSet import NodeSet
    from autoupdate.nodeset import expand
    assert expand(text) == expected
    if text and text.strip():
        assert expand(text) == list(NodeSet(text.strip()))


# NodeSet would build every name (minutes, gigabytes): refused on an upper bound first.
@pytest.mark.parametrize("text", ["n[1-100000000]", "n[1-1001][1-1000]", "a[1-600000],b[1-600000]",
                                  "n[1-10]!m[1-2000000]"])
def test_expand_refuses_a_hostlist_bigger_than_any_cluster(text):
    from autoupdate.nodeset import HostlistError, expand
    with pytest.raises(HostlistError, match="names more than 1,000,000 nodes"):
        expand(text)


@pytest.mark.parametrize("text, size", [("rack[1-10]n[01-64]", 640), ("n[1-5]!n2", 4), ("n[1-9/2]", 5),
                                        ("n[1-1000],gpu[1-8]", 1008)])
def test_the_bound_lets_real_hostlists_through(text, size):
    from autoupdate.nodeset import _at_most, expand
    assert len(expand(text)) == size <= _at_most(text)


@pytest.mark.parametrize("text, culprit", [
    ("n[01-", "n\\[01-'"),
    # Names that no node has: as a blacklist they would protect nothing. Commas separate names.
    ("login[1-2] ctl1", "login\\[1-2\\] ctl1': 'login1 ctl1' has a space in it"),
    ("node 1", "node 1': 'node 1' has a space in it"),
    ("n1,n2 n3", "n1,n2 n3': 'n2 n3' has a space in it"),
])
def test_expand_refuses_a_bad_hostlist_by_name(text, culprit):
    from autoupdate.nodeset import HostlistError, expand
    with pytest.raises(HostlistError, match="invalid hostlist '" + culprit):
        expand(text)


def test_expand_lets_spaces_around_commas_through():
    from autoupdate.nodeset import expand
    assert expand(" n1, n[2-3] ,n4 ") == ["n1", "n2", "n3", "n4"]


# proc.run, the one place commands run: what comes back, and what its errors say.
@pytest.mark.parametrize("script, timeout, expected", [
    ("printf 'caf\\351\\n'", 5, "out:caf\ufffd\n"),  # not UTF-8: replaced, not a UnicodeDecodeError
    ("echo retrying >&2; echo 'cannot stat file /etc/slurm.conf' >&2; sleep 5", 0.5,
     "error:bash: timed out after 0.5s (cannot stat file /etc/slurm.conf)"),  # why it hung
    ("sleep 5", 0.5, "error:bash: timed out after 0.5s"),
])
def test_proc_run(script, timeout, expected):
    from autoupdate import proc
    try:
        got = "out:" + proc.run(["bash", "-c", script], timeout=timeout).stdout
    except proc.CommandError as exc:
        got = f"error:{exc}"
    assert got == expected
