"""The simulator's snapshot reuses node and job views between calls (the scale benchmark's tick
depends on it); whatever happens to the cluster, a snapshot must equal one built from scratch."""
from __future__ import annotations

import random

from autoupdate.sim.clock import ManualClock
from autoupdate.sim.cluster import SimCluster, Workload


def fresh_view(cluster: SimCluster):
    return ({n.name: cluster._info(n) for n in cluster.nodes.values()},
            {j.job_id: j.view() for j in cluster.jobs.values()})


def test_cached_snapshot_equals_a_fresh_one_through_drains_reboots_reservations_and_stages():
    rng = random.Random(7)
    clock = ManualClock()
    names = [f"n{i:02d}" for i in range(24)]
    cluster = SimCluster({"a": names[:16], "b": names[8:]}, clock, reboot_seconds=300, fail_nodes={"n05"},
                         workload=Workload(3, (200, 3000), depth=30, max_size=3), revision="old")
    actions = [
        lambda n: cluster.drain([n], "autoupdate: x", "autoupdate"),
        lambda n: cluster.resume([n]),
        lambda n: cluster.reboot([n]),
        lambda n: cluster.reserve(f"r-{n}", n, clock.now() + rng.uniform(0, 900), "m", clock.now() + 1800),
        lambda n: cluster.unreserve(f"r-{n}"),
        lambda n: cluster.stage([n], "new", live=rng.random() < 0.5),
    ]
    for step in range(300):
        clock.advance(rng.uniform(1, 120))
        rng.choice(actions)(rng.choice(names))
        if step % 3 == 0:
            snap = cluster.snapshot()
            nodes, jobs = fresh_view(cluster)
            assert dict(snap.nodes) == nodes, f"step {step}"
            assert {j.job_id: j for j in snap.jobs} == jobs, f"step {step}"
