"""Property-based: whatever the workload, lists and budget, the promises hold."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from enginekit import Kit

NODES = [f"n{i:02d}" for i in range(1, 9)]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(jobs=st.dictionaries(st.sampled_from(NODES), st.integers(10, 4000), max_size=8),
       budget=st.integers(1, 3), black=st.sets(st.sampled_from(NODES), max_size=2),
       human=st.sets(st.sampled_from(NODES), max_size=2), fail=st.sets(st.sampled_from(NODES), max_size=1),
       change=st.sampled_from(["drain/k", "hot/m"]))
def test_promises_hold(tmp_path_factory, jobs, budget, black, human, fail, change):
    tmp = tmp_path_factory.mktemp("prop")
    canaries = [n for n in ("n01", "n05") if n not in black]
    kit = Kit(tmp, jobs=jobs, fail_boot=fail,
              config={"nodes": {"blacklist": ",".join(sorted(black)), "canaries": ",".join(canaries)},
                      "rollout": {"max_unavailable": budget, "soak_seconds": 30, "failure_budget": 3}})
    for n in human:
        kit.cluster.drain([n], "human reason", user="alice")
    boots = {n: kit.cluster.nodes[n].boot_time for n in black}
    kit.engine.fetch()
    kit.commit({change: "2"})

    def check():
        for part in ("a", "b"):
            # autoupdate's own holds never exceed the budget (others' drains only shrink it)
            ours = sum(1 for node in kit.cluster.nodes.values() if part in node.partitions and
                       (node.reason.startswith("autoupdate:") or node.reboot_until is not None))
            assert ours <= budget, (part, ours)
        for n in human:
            assert kit.cluster.nodes[n].reason == "human reason"
        assert kit.cluster.stats.jobs_killed == 0

    for _ in range(400):
        kit.step(30)
        check()
        if kit.engine.idle() or kit.rollout_state() in ("halted", "done"):
            break
    for n in black:
        assert kit.store.record(n) is None and kit.cluster.nodes[n].boot_time == boots[n]
    for n in human:
        assert kit.cluster.nodes[n].drained
