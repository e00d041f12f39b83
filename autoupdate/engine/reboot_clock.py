"""When to look at a rebooting node again: when it is due back, not a poll interval later.

Every second between a node coming back and autoupdate noticing is a node out of service for
nothing: with a 30 s poll that is about 15 s per node, 4 node-hours on a 1000-node rollout. The
reboots that finished tell how long one takes here; a node rebooting is looked at when the
fastest of them would be back, then every `fast` seconds for a short while (a slower one), then at
the plain poll again. No reboot seen yet (a fresh start): the plain poll only.
"""
from __future__ import annotations

from collections import deque
from typing import Iterable

#: After a node is due back, fast looks go on for this share of the expected reboot, at most
#: LOOK_WINDOW_MAX seconds (and at least LOOK_WINDOW_MIN looks): long enough for the ordinary
#: spread, short enough that one slow node class does not make the loop read the whole cluster
#: every few seconds for minutes.
LOOK_WINDOW_SHARE, LOOK_WINDOW_MAX, LOOK_WINDOW_MIN = 0.25, 120.0, 3


class RebootClock:
    def __init__(self, keep: int = 16):
        self._seen: deque[float] = deque(maxlen=keep)  # recent reboot durations, seconds

    def learn(self, seconds: float) -> None:
        if seconds > 0:
            self._seen.append(seconds)

    def expected(self) -> float | None:
        """The fastest recent reboot: no node is looked at later than it could be back."""
        return min(self._seen) if self._seen else None

    def next_look(self, issued: Iterable[float], now: float, fast: float) -> float | None:
        """The earliest time one of the reboots issued at `issued` is worth a look, or None
        (nothing better than the plain poll)."""
        est = self.expected()
        if est is None or fast <= 0:
            return None
        window = max(min(est * LOOK_WINDOW_SHARE, LOOK_WINDOW_MAX), LOOK_WINDOW_MIN * fast)
        best = None
        for since in issued:
            due = since + est
            at = due if due > now else now + fast if now < due + window else None
            if at is not None and (best is None or at < best):
                best = at
        return best
