"""Maintenance windows: when NEW node work of a change class may start (pure, no I/O).

Per change class: a time zone, a list of weekly windows ("mon-fri 08:00-17:00"; a window whose
end is not after its start crosses midnight and belongs to the day it starts on), and blackout
dates or date ranges (whole local days on which nothing new starts). A class with no `open` list
may start at any time outside its blackouts. Work already in flight is never stopped by a
window: the engine asks `allows()` only before starting a node.

Times are wall-clock times in the class's zone, so a window keeps its local hours across DST
changes; a window start that does not exist on a spring-forward day opens at the first instant
after the gap that lies inside the window.

The parse_* helpers are used by config.py to validate the `windows:` section with clear errors.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .model import ChangeClass

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")
#: How far ahead next_open() looks: blackouts longer than this mean "not within a year".
LOOKAHEAD_DAYS = 400


# --- parsing (shared with config validation) ---------------------------------------------------

def parse_clock(value: Any) -> int:
    """'08:00' -> minutes after midnight (0..1440; '24:00' is the end of the day)."""
    if isinstance(value, bool) or isinstance(value, int):
        # YAML 1.1 reads an unquoted 17:00 as the base-60 number 1020: refuse to guess.
        raise ValueError(f"write times in quotes, e.g. '17:00' (got the number {value!r}; "
                         "YAML reads unquoted HH:MM as a number)")
    m = _CLOCK.match(str(value))
    if not m:
        raise ValueError(f"invalid time {value!r} (expected HH:MM, e.g. '08:00')")
    hours, minutes = int(m.group(1)), int(m.group(2))
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f"invalid time {value!r} (hours 00-24, minutes 00-59)")
    return hours * 60 + minutes


_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _day_index(name: str) -> int:
    key = name.strip().lower()
    if key in _FULL_DAY_NAMES:
        return _FULL_DAY_NAMES.index(key)
    if key not in DAY_NAMES:
        raise ValueError(f"unknown day {name.strip()!r} (expected one of {', '.join(DAY_NAMES)})")
    return DAY_NAMES.index(key)


def parse_days(value: Any) -> frozenset[int]:
    """'mon-fri', 'sat,sun', 'fri-mon' (wraps), 'daily' or a list -> weekday numbers (Mon=0)."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    days: set[int] = set()
    for item in items:
        text = str(item).strip().lower()
        if text in ("daily", "*", "all", "every day"):
            days.update(range(7))
        elif "-" in text:
            first, _, last = text.partition("-")
            a, b = _day_index(first), _day_index(last)
            days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
        else:
            days.add(_day_index(text))
    if not days:
        raise ValueError("no days given (e.g. 'mon-fri' or 'daily')")
    return frozenset(days)


def parse_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (expected an IANA name such as "
                         "'Europe/Berlin' or 'UTC')") from None


def _date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise ValueError(f"invalid date {value!r} (expected YYYY-MM-DD)") from None


def parse_blackout(value: Any) -> tuple[dt.date, dt.date]:
    """'2026-12-24' or '2026-12-24..2027-01-01' (inclusive) -> (first, last)."""
    if isinstance(value, str) and ".." in value:
        first_text, _, last_text = value.partition("..")
        first, last = _date(first_text), _date(last_text)
    else:
        first = last = _date(value)
    if last < first:
        raise ValueError(f"blackout range {value!r} ends before it starts")
    return first, last


# --- the model ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Span:
    """One weekly window: on `days`, from `start` to `end` minutes (end <= start: next day)."""

    days: frozenset[int]
    start: int
    end: int

    @property
    def crosses_midnight(self) -> bool:
        return self.end <= self.start

    def covers(self, weekday: int, minute: int) -> bool:
        if not self.crosses_midnight:
            return weekday in self.days and self.start <= minute < self.end
        # The evening part belongs to today; the morning part to the window that began yesterday.
        return ((weekday in self.days and minute >= self.start)
                or ((weekday - 1) % 7 in self.days and minute < self.end))


@dataclass(frozen=True)
class ClassWindow:
    zone: ZoneInfo
    spans: tuple[Span, ...] | None  # None: any time
    blackouts: tuple[tuple[dt.date, dt.date], ...] = ()

    def _local(self, now: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(now, tz=self.zone)

    def blacked_out(self, day: dt.date) -> bool:
        return any(first <= day <= last for first, last in self.blackouts)

    def allows(self, now: float) -> bool:
        local = self._local(now)
        if self.blacked_out(local.date()):
            return False
        if self.spans is None:
            return True
        minute = local.hour * 60 + local.minute
        return any(span.covers(local.weekday(), minute) for span in self.spans)

    def _candidates(self, now: float) -> list[float]:
        """Instants at which the answer may turn to yes, in order: window starts and local
        midnights (blackouts end there). Both folds: after a fall-back the same wall-clock
        start happens twice; in a spring-forward gap fold=0 lands right after the gap."""
        today = self._local(now).date()
        starts = sorted({0, *(s.start for s in self.spans or ())} - {1440})
        out = []
        for offset in range(LOOKAHEAD_DAYS + 1):
            day = today + dt.timedelta(days=offset)
            for minute in starts:
                wall = dt.datetime.combine(day, dt.time(minute // 60, minute % 60), tzinfo=self.zone)
                out += [wall.timestamp(), wall.replace(fold=1).timestamp()]
        return sorted(set(out))

    def next_open(self, now: float) -> float | None:
        if self.allows(now):
            return now
        for instant in self._candidates(now):
            if instant > now and self.allows(instant):
                return instant
        return None


_ALWAYS = ClassWindow(zone=ZoneInfo("UTC"), spans=None)


class Windows:
    """The windows of every change class. GOOD needs no work and is always allowed."""

    def __init__(self, by_class: dict[ChangeClass, ClassWindow] | None = None):
        self._by_class = dict(by_class or {})

    @classmethod
    def always(cls) -> "Windows":
        return cls()

    @classmethod
    def from_settings(cls, settings: Any) -> "Windows":
        """From Settings (its `windows` section) or a WindowsSettings itself."""
        section = getattr(settings, "windows", settings)
        if section is None:
            return cls.always()
        shared = tuple(parse_blackout(b) for b in section.blackout)
        by_class: dict[ChangeClass, ClassWindow] = {}
        for klass in (ChangeClass.HOT, ChangeClass.DRAIN):
            spec = getattr(section, klass.label)
            spans = None if spec.open is None else tuple(
                Span(parse_days(w.days), parse_clock(w.start), parse_clock(w.end)) for w in spec.open)
            by_class[klass] = ClassWindow(
                zone=parse_zone(spec.timezone or section.timezone),
                spans=spans,
                blackouts=shared + tuple(parse_blackout(b) for b in spec.blackout),
            )
        return cls(by_class)

    def window(self, klass: ChangeClass) -> ClassWindow:
        return self._by_class.get(klass, _ALWAYS)

    def allows(self, klass: ChangeClass, now: float) -> bool:
        if klass == ChangeClass.GOOD:
            return True
        return self.window(klass).allows(now)

    def next_open(self, klass: ChangeClass, now: float) -> float | None:
        """`now` if open now, else when new work of `klass` may next start (None: not within
        LOOKAHEAD_DAYS, e.g. an open list that matches nothing or a very long blackout)."""
        if klass == ChangeClass.GOOD:
            return now
        return self.window(klass).next_open(now)

    def describe(self, klass: ChangeClass, now: float) -> str:
        """'open' / 'opens 2026-11-23 08:00 CET' / 'closed' for status output."""
        when = self.next_open(klass, now)
        if when is None:
            return "closed"
        if when <= now:
            return "open"
        local = dt.datetime.fromtimestamp(when, tz=self.window(klass).zone)
        return "opens " + local.strftime("%Y-%m-%d %H:%M %Z")
