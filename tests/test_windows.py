"""Maintenance windows: table-driven across midnight, DST, time zones and blackouts."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from autoupdate.config import ConfigError, parse_config
from autoupdate.model import ChangeClass
from autoupdate.windows import Windows, parse_days

DRAIN, HOT, GOOD = ChangeClass.DRAIN, ChangeClass.HOT, ChangeClass.GOOD


def at(text: str, zone: str = "UTC") -> float:
    """'2026-11-23 08:00' in `zone` -> epoch seconds (first occurrence when ambiguous)."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


def windows(section: dict) -> Windows:
    return Windows.from_settings(parse_config({"repository": {"url": "x"}, "windows": section}))


OFFICE_BERLIN = {"drain": {"timezone": "Europe/Berlin",
                           "open": [{"days": "mon-fri", "start": "08:00", "end": "17:00"}]}}
NIGHTS = {"timezone": "America/New_York",
          "drain": {"open": [{"days": "fri", "start": "22:00", "end": "06:00"}]}}
WEEKEND_WRAP = {"drain": {"open": [{"days": "fri-mon", "start": "00:00", "end": "24:00"}]}}
BLACKOUT = {"blackout": ["2026-12-24..2026-12-26"],
            "drain": {"open": [{"days": "daily", "start": "20:00", "end": "04:00"}],
                      "blackout": ["2026-12-31"]}}
DST_BERLIN = {"timezone": "Europe/Berlin",
              "drain": {"open": [{"days": "sun", "start": "02:00", "end": "04:00"}]},
              "hot": {"open": [{"days": "sun", "start": "02:00", "end": "02:30"}]}}

# 2026-11-23 is a Monday; 2026-11-27 a Friday.
ALLOWS = [
    # (section, class, instant, expected)
    (OFFICE_BERLIN, DRAIN, at("2026-11-23 08:00", "Europe/Berlin"), True),
    (OFFICE_BERLIN, DRAIN, at("2026-11-23 07:59", "Europe/Berlin"), False),
    (OFFICE_BERLIN, DRAIN, at("2026-11-23 16:59", "Europe/Berlin"), True),
    (OFFICE_BERLIN, DRAIN, at("2026-11-23 17:00", "Europe/Berlin"), False),  # end is exclusive
    (OFFICE_BERLIN, DRAIN, at("2026-11-23 07:30"), True),  # 08:30 in Berlin (UTC+1 in winter)
    (OFFICE_BERLIN, DRAIN, at("2026-07-06 06:30"), True),  # 08:30 in Berlin (UTC+2 in summer)
    (OFFICE_BERLIN, DRAIN, at("2026-07-06 15:30"), False),  # 17:30 in Berlin
    (OFFICE_BERLIN, DRAIN, at("2026-11-28 10:00", "Europe/Berlin"), False),  # Saturday
    (OFFICE_BERLIN, HOT, at("2026-11-28 03:00"), True),  # no windows for hot: always
    (OFFICE_BERLIN, GOOD, at("2026-11-28 03:00"), True),
    # Friday 22:00 -> Saturday 06:00 New York time, the morning part belongs to Friday.
    (NIGHTS, DRAIN, at("2026-11-27 22:00", "America/New_York"), True),
    (NIGHTS, DRAIN, at("2026-11-28 05:59", "America/New_York"), True),
    (NIGHTS, DRAIN, at("2026-11-28 06:00", "America/New_York"), False),
    (NIGHTS, DRAIN, at("2026-11-27 05:00", "America/New_York"), False),  # Thursday's night: no
    (NIGHTS, DRAIN, at("2026-11-28 23:00", "America/New_York"), False),  # Saturday evening
    (NIGHTS, DRAIN, at("2026-11-28 03:00"), True),  # 22:00 Friday in New York
    # Day ranges wrap around the week end.
    (WEEKEND_WRAP, DRAIN, at("2026-11-29 12:00"), True),  # Sunday
    (WEEKEND_WRAP, DRAIN, at("2026-11-23 23:59"), True),  # Monday
    (WEEKEND_WRAP, DRAIN, at("2026-11-24 00:00"), False),  # Tuesday
    # Blackouts are whole local days; a night window cut at the blackout's midnight.
    (BLACKOUT, DRAIN, at("2026-12-23 23:00"), True),
    (BLACKOUT, DRAIN, at("2026-12-24 01:00"), False),  # inside the night window, but blacked out
    (BLACKOUT, DRAIN, at("2026-12-26 21:00"), False),  # last day of the range is included
    (BLACKOUT, DRAIN, at("2026-12-27 01:00"), True),  # the 26th's night window, on a free day
    (BLACKOUT, DRAIN, at("2026-12-27 04:00"), False),
    (BLACKOUT, HOT, at("2026-12-25 12:00"), False),  # the shared blackout applies to hot as well
    (BLACKOUT, HOT, at("2026-12-31 12:00"), True),  # the drain-only blackout does not
    # DST in Berlin: 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET.
    (DST_BERLIN, DRAIN, at("2026-03-29 01:00"), True),  # 03:00 CEST: window keeps wall hours
    (DST_BERLIN, DRAIN, at("2026-03-29 02:00"), False),  # 04:00 CEST
    (DST_BERLIN, DRAIN, at("2026-10-25 00:30"), True),  # 02:30 CEST (first pass)
    (DST_BERLIN, DRAIN, at("2026-10-25 01:30"), True),  # 02:30 CET (second pass)
    (DST_BERLIN, DRAIN, at("2026-10-25 03:00"), False),  # 04:00 CET
    (DST_BERLIN, HOT, at("2026-03-29 00:59"), False),  # 01:59 CET
    (DST_BERLIN, HOT, at("2026-03-29 01:00"), False),  # 03:00 CEST: the 02:00-02:30 window never was
]


@pytest.mark.parametrize("section,klass,now,expected", ALLOWS)
def test_allows(section, klass, now, expected):
    assert windows(section).allows(klass, now) is expected


def test_blackout_ends_at_local_midnight_inside_a_night_window():
    # The window that began on the 26th (blacked out) reaches into the free 27th: blackout is
    # about the local day on which work would start, so it opens at midnight.
    w = windows(BLACKOUT)
    assert w.next_open(DRAIN, at("2026-12-26 21:00")) == at("2026-12-27 00:00")


NEXT_OPEN = [
    # (section, class, now, expected next open)
    (OFFICE_BERLIN, DRAIN, at("2026-11-23 09:00", "Europe/Berlin"), at("2026-11-23 09:00", "Europe/Berlin")),
    (OFFICE_BERLIN, DRAIN, at("2026-11-23 18:00", "Europe/Berlin"), at("2026-11-24 08:00", "Europe/Berlin")),
    (OFFICE_BERLIN, DRAIN, at("2026-11-27 17:00", "Europe/Berlin"), at("2026-11-30 08:00", "Europe/Berlin")),
    (NIGHTS, DRAIN, at("2026-11-28 06:00", "America/New_York"), at("2026-12-04 22:00", "America/New_York")),
    (BLACKOUT, DRAIN, at("2026-12-23 12:00"), at("2026-12-23 20:00")),
    (BLACKOUT, DRAIN, at("2026-12-24 00:00"), at("2026-12-27 00:00")),
    (BLACKOUT, DRAIN, at("2026-12-30 23:30"), at("2026-12-30 23:30")),
    (BLACKOUT, DRAIN, at("2026-12-31 00:00"), at("2027-01-01 00:00")),  # morning of the 1st
    (BLACKOUT, HOT, at("2026-12-24 10:00"), at("2026-12-27 00:00")),
    # Spring forward: a 02:00 start falls into the gap and opens right after it, at 03:00 CEST.
    (DST_BERLIN, DRAIN, at("2026-03-28 12:00"), at("2026-03-29 03:00", "Europe/Berlin")),
    # Fall back: the 02:00-04:00 wall-clock window opens at the first 02:00 (CEST).
    (DST_BERLIN, DRAIN, at("2026-10-24 12:00"), at("2026-10-25 00:00")),
    # The hot window 02:00-02:30 does not exist on the spring-forward Sunday: next Sunday.
    (DST_BERLIN, HOT, at("2026-03-28 12:00"), at("2026-04-05 02:00", "Europe/Berlin")),
]


@pytest.mark.parametrize("section,klass,now,expected", NEXT_OPEN)
def test_next_open(section, klass, now, expected):
    assert windows(section).next_open(klass, now) == expected


def test_fall_back_second_pass_reopens():
    # A window at 02:40-03:00 wall time is open twice on the fall-back night; between the two
    # passes next_open must find the second one (same wall time, fold=1), not next week.
    w = windows({"timezone": "Europe/Berlin",
                 "drain": {"open": [{"days": "sun", "start": "02:40", "end": "03:00"}]}})
    first_pass_over = at("2026-10-25 01:00")  # 02:00 CET, after 03:00 CEST
    assert w.allows(DRAIN, first_pass_over) is False
    assert w.next_open(DRAIN, first_pass_over) == at("2026-10-25 01:40")  # 02:40 CET


def test_never_open_within_lookahead():
    w = windows({"blackout": ["2026-01-01..2030-01-01"]})
    assert w.next_open(DRAIN, at("2026-06-01 00:00")) is None
    assert w.describe(DRAIN, at("2026-06-01 00:00")) == "closed"


def test_describe():
    w = windows(OFFICE_BERLIN)
    assert w.describe(DRAIN, at("2026-11-23 09:00", "Europe/Berlin")) == "open"
    assert w.describe(DRAIN, at("2026-11-28 09:00", "Europe/Berlin")) == "opens 2026-11-30 08:00 CET"


def test_the_engine_gets_the_gate_and_the_next_opening_and_a_broken_check_means_not_now():
    from autoupdate.supervision import Supervision
    sup = Supervision(parse_config({"repository": {"url": "x"}, "windows": OFFICE_BERLIN}))
    saturday = at("2026-11-28 09:00", "Europe/Berlin")
    assert "outside the drain maintenance window" in sup.window_gate(DRAIN, saturday)
    assert sup.window_opens(DRAIN, saturday) == at("2026-11-30 08:00", "Europe/Berlin")
    assert sup.window_gate(HOT, saturday) is None

    def broken(*_):
        raise ValueError("zone data missing")
    sup.windows.allows = sup.windows.next_open = broken
    assert "window check failed" in sup.window_gate(DRAIN, saturday)
    assert sup.window_opens(DRAIN, saturday) is None  # the engine then moves slots back a little at a time


def test_no_windows_section_means_always():
    w = Windows.from_settings(parse_config({"repository": {"url": "x"}}))
    assert w.allows(DRAIN, 0.0) and w.allows(HOT, 0.0)


@pytest.mark.parametrize("text,expected", [
    ("mon-fri", {0, 1, 2, 3, 4}),
    ("sat,sun", {5, 6}),
    ("fri-mon", {4, 5, 6, 0}),
    ("daily", set(range(7))),
    (["Monday", "wed"], {0, 2}),
])
def test_parse_days(text, expected):
    assert parse_days(text) == frozenset(expected)


BAD = [
    ({"drain": {"open": [{"start": "08:00", "end": 1020}]}}, "windows.drain.open[0].end: write times in quotes"),
    ({"drain": {"open": [{"start": "8am", "end": "17:00"}]}}, "windows.drain.open[0].start: invalid time '8am'"),
    ({"drain": {"open": [{"start": "24:00", "end": "02:00"}]}}, "windows.drain.open[0].start: a window cannot start at 24:00"),
    ({"drain": {"open": [{"start": "08:60", "end": "17:00"}]}}, "windows.drain.open[0].start: invalid time '08:60'"),
    ({"drain": {"open": [{"days": "mon-fry", "start": "08:00", "end": "17:00"}]}}, "windows.drain.open[0].days: unknown day 'fry'"),
    ({"drain": {"open": [{"start": "08:00"}]}}, "windows.drain.open[0].end: Field required"),
    ({"hot": {"timezone": "Europe/Berln"}}, "windows.hot.timezone: unknown time zone 'Europe/Berln'"),
    ({"timezone": "../../etc/passwd"}, "windows.timezone: unknown time zone"),
    ({"blackout": ["2026-02-30"]}, "windows.blackout[0]: invalid date '2026-02-30'"),
    ({"blackout": ["2026-03-02..2026-03-01"]}, "windows.blackout[0]: blackout range '2026-03-02..2026-03-01' ends before it starts"),
    ({"drian": {}}, "windows.drian: unknown key"),
    ({"drain": {"open": [{"start": "08:00", "end": "17:00", "zone": "UTC"}]}}, "windows.drain.open[0].zone: unknown key"),
]


@pytest.mark.parametrize("section,message", BAD)
def test_bad_windows_config(section, message):
    with pytest.raises(ConfigError) as err:
        parse_config({"repository": {"url": "x"}, "windows": section})
    assert any(line.startswith(message) for line in err.value.problems), err.value.problems


def test_yaml_dates_are_accepted(tmp_path):
    # Unquoted YAML dates arrive as datetime.date objects.
    from autoupdate.config import load_config
    cfg = tmp_path / "c.yaml"
    cfg.write_text("repository: {url: x}\nwindows:\n  blackout: [2026-12-24]\n"
                   "  drain: {open: [{days: mon-fri, start: '08:00', end: '17:00'}]}\n")
    w = Windows.from_settings(load_config(cfg))
    assert not w.allows(HOT, at("2026-12-24 12:00"))
    assert w.allows(HOT, at("2026-12-23 12:00"))
