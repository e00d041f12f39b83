"""What one tick did and saw: for the service (when to tick again), status and the simulator."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TickReport:
    at: float
    ok: bool = True
    error: str = ""
    paused: bool = False
    started: list[str] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)
    held: dict[str, str] = field(default_factory=dict)  # node -> why someone else holds it
    look_again_at: float | None = None  # a rebooting node is due back: tick then, not at the poll
