"""When the loop looks at a rebooting node again: the pure rule, then the engine driven as the
service drives it (a node back from its reboot is noticed when due, not at the next poll)."""
from __future__ import annotations

import pytest

from autoupdate.engine.engine import WAKE_DELAY
from autoupdate.engine.reboot_clock import LOOK_WINDOW_MAX, RebootClock
from autoupdate.model import NodePhase
from enginekit import Kit

NOW = 10_000.0


def clock_with(*seen: float) -> RebootClock:
    c = RebootClock(keep=4)
    for s in seen:
        c.learn(s)
    return c


@pytest.mark.parametrize("seen, issued, fast, expected", [
    ((), [NOW - 100], 5, None),                       # nothing learnt yet: the plain poll
    ((600,), [NOW - 100], 0, None),                   # fast looks switched off
    ((600,), [], 5, None),                            # nothing rebooting
    ((600,), [NOW - 100], 5, NOW + 500),              # due back in 500 s
    ((700, 600, 650), [NOW - 100], 5, NOW + 500),     # the fastest reboot seen decides
    ((600,), [NOW - 100, NOW - 550], 5, NOW + 50),    # the earliest due node decides
    ((600,), [NOW - 600], 5, NOW + 5),                # due now: look again in `fast` seconds
    ((600,), [NOW - 700], 5, NOW + 5),                # overdue, still inside the window (120 s)
    ((600,), [NOW - 600 - LOOK_WINDOW_MAX], 5, None),  # past the window: back to the plain poll
    ((100,), [NOW - 126], 5, None),                   # window: 25% of a shorter reboot (25 s)
    ((100,), [NOW - 124], 5, NOW + 5),
    ((4,), [NOW - 18], 5, NOW + 5),                   # a very short reboot: still 3 fast looks
    ((4,), [NOW - 20], 5, None),
    ((0, -3), [NOW - 100], 5, None),                  # nonsense durations are not learnt
])
def test_next_look(seen, issued, fast, expected):
    assert clock_with(*seen).next_look(issued, NOW, fast) == expected


def test_only_recent_reboots_count():
    c = clock_with(100, 600, 600, 600, 600)  # keep=4: the old fast one has gone
    assert c.expected() == 600


def drive(kit: Kit, poll: float) -> dict[str, float]:
    """Tick as the service does (poll grid, wake-ups, look-again times) until the rollout is
    done; return, per node, the seconds between its boot and its return to service."""
    woken: list[bool] = []
    kit.engine.wake = lambda: woken.append(True)
    back: dict[str, float] = {}
    t0 = kit.clock.now()
    for _ in range(2000):
        woken.clear()
        report = kit.engine.tick()
        now = kit.clock.now()
        for node, sim in kit.cluster.nodes.items():
            if node not in back and kit.phase(node) == NodePhase.DONE.value:
                back[node] = now - sim.boot_time
        if kit.rollout_state() == "done":
            return back
        at = t0 + ((now - t0) // poll + 1) * poll
        if woken:
            at = min(at, now + WAKE_DELAY)
        if report.look_again_at is not None:
            at = min(at, report.look_again_at)
        kit.clock.advance(at - now)
    raise AssertionError("the rollout did not finish")


@pytest.mark.parametrize("fast, worst_wave_delay", [
    (5.0, 2 * WAKE_DELAY),  # looked at when due: verify and resume follow within two wake-ups
    (0.0, None),            # plain 30 s poll: a node waits for the next poll after its boot
])
def test_a_node_back_from_reboot_is_noticed_when_due(tmp_path, fast, worst_wave_delay):
    kit = Kit(tmp_path, n=4, reboot_seconds=300,
              config={"nodes": {"canaries": "n01"}, "rollout": {"canary_count": 1, "soak_seconds": 0,
                                                                "max_unavailable": 1},
                      "control": {"poll_interval": 30, "reboot_poll_interval": fast}})
    kit.engine.fetch()
    kit.commit({"drain/k": "2"})
    back = drive(kit, poll=30)
    assert set(back) == {"n01", "n02", "n03", "n04"}
    waves = [back[n] for n in ("n02", "n03", "n04")]
    if worst_wave_delay is None:
        assert max(waves) > 10  # what the fast look saves
    else:
        assert max(waves) <= worst_wave_delay
    assert kit.engine.reboot_clock.expected() == 300  # learnt from the new boot time, not the tick
