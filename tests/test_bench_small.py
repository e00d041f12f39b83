"""A small rollout benchmark as a correctness check (not a timing): a synthetic SWF trace on a
20-node cluster with 2 cores per node, every strategy from one warmed-up state: every node ends
up updated, no job is killed, no budgeted strategy ever has more nodes out than its budget."""
from __future__ import annotations

import gzip
import random

import pytest

from autoupdate.sim import bench, swf
from autoupdate.sim.strategies import AllAtOnce, AutoupdateStrategy, Batches, MaintReservations, Params

NODES, CORES = 20, 2


def synthetic_trace(path, jobs: int = 1500, seed: int = 7):
    rng = random.Random(seed)
    lines = ["; MaxNodes: 40", "; MaxProcs: 40"]
    t = 0
    for i in range(1, jobs + 1):
        t += int(rng.expovariate(1 / 300))
        runtime = int(rng.choice([60, 600, 3600, 4 * 3600, 20 * 3600]) * rng.uniform(0.1, 1.0))
        limit = int(runtime * rng.uniform(1.0, 3.0))
        procs = rng.choice([1, 1, 2, 4, 8, 16])
        if i % 97 == 0:
            runtime = 0  # never ran: skipped
        lines.append(f"{i} {t} -1 {runtime} {procs} -1 -1 {procs} {limit} -1 1 1 1 -1 1 1 -1 -1")
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("swf") / "synthetic.swf.gz"
    synthetic_trace(path)
    return swf.load(path)


def test_trace_loader_skips_jobs_that_never_ran(trace):
    assert trace.skipped == 1500 // 97 and len(trace.jobs) == 1500 - trace.skipped
    assert trace.max_procs == 40 and all(j.limit >= j.runtime > 0 for j in trace.jobs)


@pytest.mark.parametrize("strategy, budget", [
    (AllAtOnce(), None), (Batches(), 2), (Batches(1), 1), (MaintReservations(), 2),
    (AutoupdateStrategy("drain"), 2), (AutoupdateStrategy("reservation"), 2),
])
def test_every_strategy_updates_all_without_killing_or_breaking_the_budget(trace, strategy, budget):
    spec = bench.TraceSpec("synthetic", "", NODES, CORES, "test")
    p = Params(reboot_seconds=600, tick_seconds=60)
    start = trace.jobs[0].submit + 2 * bench.DAY
    point = bench.run_start_point(spec, trace, 0, start, 2 * bench.DAY, p, strategies=[strategy])
    assert point.running_jobs > 0  # the cluster is busy when the rollout starts
    (r,) = point.results
    assert r.killed == 0
    assert r.budget == budget
    if budget is not None:
        assert 0 < r.max_out <= budget
    assert r.done_h >= point.bound_h - 1e-6  # nobody beats the lower bound: the replay is honest
    assert r.lost_nh >= NODES * p.reboot_seconds / 3600 - 1e-6
    # The total is the mean times the number of jobs submitted during the rollout.
    if r.wait_mean_h:
        jobs = r.wait_total_h / r.wait_mean_h
        assert jobs >= 1 and jobs == pytest.approx(round(jobs), abs=1e-6)
    else:
        assert r.wait_total_h == pytest.approx(0.0, abs=1e-9)


def test_easy_backfill_lets_short_jobs_jump_a_blocked_head():
    from autoupdate.sim.cluster import SimCluster, SimJob
    from autoupdate.sim.clock import ManualClock
    from autoupdate.sim.scheduler import EasyBackfill, FCFS
    starts = {}
    for sched in (FCFS(), EasyBackfill()):
        clock = ManualClock(0.0)
        c = SimCluster({"p": ["a", "b"]}, clock, scheduler=sched, cores_per_node=2)
        c.job_starts = {}
        for jid, procs, run, limit in [("long", 2, 1000, 1000), ("head", 4, 10, 10), ("short", 2, 100, 500),
                                       ("toolong", 2, 100, 2000)]:
            c.submit(SimJob(jid, 0, run, limit, 0.0, procs=procs))
        c.advance()  # scheduled at t=0
        clock.advance(5000)
        c.advance()
        starts[sched.name] = c.job_starts
    assert starts["fcfs"]["short"] >= 1000  # waits behind the head
    assert starts["easy"]["short"] == 0  # ends (by its limit) before the head can start: backfilled
    assert starts["easy"]["toolong"] >= 1000  # would delay the head: not backfilled
    assert starts["easy"]["head"] == 1000  # never later than without backfill


@pytest.mark.parametrize("case,procs,limit,expected", [
    ("a short job ends before the head's planned start (after the reservation): backfilled", 1, 50, 0),
    ("a job that would run into the head's planned start waits for the head", 1, 800, 1000),
    ("one ending just before the head's start runs on the node the reservation leaves free", 1, 650, 0),
])
def test_easy_backfill_plans_the_head_around_maintenance_reservations(case, procs, limit, expected):
    from autoupdate.sim.cluster import SimCluster, SimJob
    from autoupdate.sim.clock import ManualClock
    from autoupdate.sim.scheduler import EasyBackfill
    clock = ManualClock(0.0)
    c = SimCluster({"p": ["a", "b"]}, clock, scheduler=EasyBackfill())
    c.job_starts = {}
    c.reserve("maint_a", "a", 100.0, "maintenance", end_time=700.0)
    # The head needs both nodes for 300 s: it cannot start before the reservation on a ends.
    c.submit(SimJob("head", 2, 300, 300, 0.0))
    c.submit(SimJob("other", 0, limit, limit, 0.0, procs=procs))
    c.advance()
    clock.advance(5000)
    c.advance()
    assert c.job_starts["head"] == 700, case
    assert c.job_starts["other"] == expected, case
    assert "maint_a" not in c.reservations  # Slurm deletes a reservation when it ends


@pytest.mark.parametrize("nodes, canaries, soak, budget_h, own_h", [
    (100, 2, 600, 10 / 6, 2.0),  # KTH: canaries 10 min, soak 10 min, then 10 rounds of 10 min for 98
    (100, 0, 600, 10 / 6, 10 / 6),  # no canaries: no soak either
    (120, 2, 0, 10 / 6, 11 / 6),  # HPC2N, 12 a round: canaries, then 10 rounds for 118
    (20, 1, 1200, 10 * 600 / 3600, (600 + 1200 + 10 * 600) / 3600),  # budget of 2: 10 rounds, 19 -> 10
])
def test_floors_with_and_without_the_canary_phase(nodes, canaries, soak, budget_h, own_h):
    p = Params(reboot_seconds=600, canaries=canaries, soak_seconds=soak)
    assert bench.budget_floor_h(p, nodes) == pytest.approx(budget_h)
    assert bench.canary_floor_h(p, nodes) == pytest.approx(own_h)


@pytest.mark.parametrize("argv", [["--canaries", "-1"], ["--soak-minutes", "-5"], ["--reboot-minutes", "0"],
                                  ["--starts", "0"], ["--tick", "abc"]])
def test_bench_refuses_bad_options_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


@pytest.mark.parametrize("case, argv, trace, culprit", [
    ("unknown trace", ["--traces", "NOPE"], None, "--traces: unknown trace 'NOPE' (known: KTH, HPC2N)"),
    ("no trace there", ["--traces", "KTH"], None, "cannot read the KTH trace"),
    ("not gzip", ["--traces", "KTH"], b"plain text", "Not a gzipped file"),
    ("not SWF", ["--traces", "KTH"], gzip.compress(b"; MaxNodes: 100\n1 0 0 x 1 -1 -1 1 60 -1 1 1 1 -1 1 1 -1 -1\n"),
     "line 2: an SWF job line holds numbers"),
    ("output under a file", ["--traces", "KTH", "--out", "{file}/out"], "fixture", "--out: cannot create"),
])
def test_bench_checks_its_inputs_before_replaying(tmp_path, monkeypatch, capsys, case, argv, trace, culprit):
    monkeypatch.setenv("AUTOUPDATE_TRACES", str(tmp_path))
    monkeypatch.setattr(bench, "_TRACE_CACHE", {})
    if trace == "fixture":  # a readable trace: the output directory is the culprit
        synthetic_trace(tmp_path / bench.TRACES["KTH"].file, jobs=50)
    elif trace is not None:
        (tmp_path / bench.TRACES["KTH"].file).write_bytes(trace)
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as exc:
        bench.main([a.format(file=tmp_path / "file") for a in argv])
    assert exc.value.code == 2, case
    err = capsys.readouterr().err
    assert culprit in err and "Traceback" not in err, (case, err)


def _point(index: int, done: dict[str, float], lost: dict[str, float] | None = None,
           wait: dict[str, float] | None = None) -> bench.StartPoint:
    results = [bench.RunResult(name, index, h, (lost or {}).get(name, 16.7), 0.0, 0, (wait or {}).get(name, 0.0),
                               0.0, 10, None) for name, h in done.items()]
    return bench.StartPoint(index, 0.0, 1, 0, 1.0, results)


_NAMES = ("all at once", "batches of 10%", "one at a time", "maint reservations", "autoupdate")


@pytest.mark.parametrize("canaries, expected", [
    (2, "start 1: all at once 1.0 h, but with a 10% budget no strategy can finish before 1.7 h (10 rounds of one "
        "reboot), 2.0 h with 2 canaries rebooted and soaked first; autoupdate 2.0 h = 1.01x its own floor"),
    (0, "start 1: all at once 1.0 h, but with a 10% budget no strategy can finish before 1.7 h (10 rounds of one "
        "reboot); autoupdate 2.0 h = 1.21x that floor"),
])
def test_targets_name_the_floor_a_start_point_cannot_beat(canaries, expected):
    p = Params(reboot_seconds=600, canaries=canaries, soak_seconds=600)
    names = _NAMES
    points = [_point(0, dict.fromkeys(names, 20.0)), _point(1, {**dict.fromkeys(names, 1.98), "all at once": 0.98,
                                                              "autoupdate": 2.02})]
    lines = bench.targets(points, p, 100)
    assert expected in lines
    assert "time vs all at once where 1.5x is reachable within the budget: worst 1.00x (1/2 start points)" in lines


# Each budgeted baseline gets a line; ties count as lower or equal (one at a time sits at the bound).
@pytest.mark.parametrize("base, lost, wait, expected", [
    ("batches of 10%", {"batches of 10%": 150.0}, {"batches of 10%": 0.3},
     "vs batches of 10%: lost node-h lower or equal at 2/2 start points, mean extra wait lower or equal at 2/2"),
    ("maint reservations", {"maint reservations": 25.0}, {"maint reservations": -0.2},
     "vs maint reservations: lost node-h lower or equal at 2/2 start points, mean extra wait lower or equal at 1/2"),
    ("one at a time", {"one at a time": 16.67}, {"one at a time": 0.01},
     "vs one at a time: lost node-h lower or equal at 1/2 start points, mean extra wait lower or equal at 2/2"),
])
def test_targets_compare_with_every_budgeted_baseline(base, lost, wait, expected):
    p = Params(reboot_seconds=600, canaries=2, soak_seconds=600)
    done = dict.fromkeys(_NAMES, 20.0)
    ours = {"autoupdate": 16.77}
    points = [_point(0, done, {**lost, **ours}, {**wait, "autoupdate": 0.0}),
              _point(1, done, {base: lost[base], "autoupdate": lost[base]}, {base: 0.0, "autoupdate": 0.0})]
    lines = bench.targets(points, p, 100)
    assert expected in lines
