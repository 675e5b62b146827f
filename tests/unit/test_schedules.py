"""Fire times: every, cron in a zone across daylight saving, catch-up policies."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from spool.config import Schedule
from spool.schedules import due_fires, fires_between, next_fire
from spool.timeutil import UTC


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_every_fires_on_multiples_from_start_at():
    sched = Schedule("s", "noop", every=10, start_at=at(2026, 1, 1, 0, 0, 3))
    assert next_fire(sched, at(2026, 1, 1, 0, 0, 0)) == at(2026, 1, 1, 0, 0, 3)
    assert next_fire(sched, at(2026, 1, 1, 0, 0, 3)) == at(2026, 1, 1, 0, 0, 13)
    assert next_fire(sched, at(2026, 1, 1, 0, 0, 14)) == at(2026, 1, 1, 0, 0, 23)


def test_cron_in_paris_across_daylight_saving_neither_skips_nor_doubles():
    sched = Schedule("s", "noop", cron="30 2 * * *", timezone="Europe/Paris")
    # 2026-03-29: clocks jump 02:00 -> 03:00 in Paris; 2026-10-25: 03:00 -> 02:00
    spring = fires_between(sched, at(2026, 3, 27, 12), at(2026, 3, 31, 12))
    autumn = fires_between(sched, at(2026, 10, 23, 12), at(2026, 10, 27, 12))
    assert len(spring) == 4 and len(set(spring)) == 4
    assert len(autumn) == 4 and len(set(autumn)) == 4
    assert all(b - a >= timedelta(hours=22) for a, b in itertools.pairwise(autumn))


def test_catchup_policies_after_downtime():
    last, now = at(2026, 1, 1, 0, 0), at(2026, 1, 1, 0, 5, 30)
    every_minute = {"name": "s", "job": "noop", "cron": "* * * * *"}
    assert len(due_fires(Schedule(**every_minute, catchup="all"), last, now)) == 5
    assert due_fires(Schedule(**every_minute, catchup="latest"), last, now) == [at(2026, 1, 1, 0,
                                                                                   5)]
    assert due_fires(Schedule(**every_minute, catchup="none"), last, now) == [at(2026, 1, 1, 0, 5)]
    late = at(2026, 1, 1, 0, 5) + timedelta(minutes=50)
    hourly = Schedule("h", "noop", cron="5 * * * *", catchup="none")
    assert due_fires(hourly, last, late) == []


def test_cron_with_seconds_field():
    sched = Schedule("s", "noop", cron="* * * * * */15")
    fires = fires_between(sched, at(2026, 1, 1), at(2026, 1, 1, 0, 1))
    assert [f.second for f in fires] == [15, 30, 45, 0]


def test_long_downtime_is_capped_and_keeps_the_newest_fires():
    sched = Schedule("s", "noop", every=1, catchup="all")
    last, now = at(2025, 1, 1), at(2026, 1, 1)
    fires = due_fires(sched, last, now)
    assert len(fires) == 1000 and fires[-1] == now and fires[0] == now - timedelta(seconds=999)


def test_an_after_fire_id_stays_a_valid_id_whatever_the_upstream_id():
    from spool.cron import after_id
    from spool.layout import is_valid_id

    upstream = "nightly@" + "x" * 120  # a caller's own id that looks like a fire of `nightly`
    assert is_valid_id(after_id("report", upstream))
    assert after_id("report", "nightly@20260101T000000Z") == "report@after.nightly@20260101T000000Z"
