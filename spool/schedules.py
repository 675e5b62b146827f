"""Which fires of a schedule fall due: pure functions of (schedule, last, now).

Fire times are computed in the schedule's zone by croniter (daylight-saving changes neither
skip nor double a fire, as croniter defines it) or as `start_at + k * every`, so every cron
daemon on every host computes the same fires.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

from spool.config import Schedule
from spool.timeutil import UTC

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_CATCHUP = 1000
ON_TIME = timedelta(seconds=60)  # a fire this recent is on time, not a missed one


def next_fire(schedule: Schedule, after: datetime) -> datetime | None:
    """The first fire strictly after `after` (None for `after =` schedules)."""
    if schedule.cron:
        zone = ZoneInfo(schedule.timezone)
        start = after.astimezone(zone)
        it = _croniter()(schedule.cron, start)
        while True:
            fire: datetime = it.get_next(datetime)
            # when clocks fall back a wall time happens twice: fire at the first one only
            if fire.replace(tzinfo=None) != start.replace(tzinfo=None):
                return fire.astimezone(UTC)
    if schedule.every:
        start = schedule.start_at or EPOCH
        if after < start:
            return start
        k = math.floor((after - start).total_seconds() / schedule.every) + 1
        return start + timedelta(seconds=k * schedule.every)
    return None


def fires_between(schedule: Schedule, last: datetime, now: datetime) -> list[datetime]:
    """Fires in (last, now], oldest first: at most MAX_CATCHUP, the newest ones.

    Walks back from `now`, so a long downtime costs MAX_CATCHUP steps, not one per fire.
    """
    fires: list[datetime] = []
    for fire in _backwards(schedule, now):
        if fire <= last or len(fires) >= MAX_CATCHUP:
            break
        fires.append(fire)
    return fires[::-1]


def _backwards(schedule: Schedule, now: datetime) -> Iterator[datetime]:
    """Fires at or before `now`, newest first."""
    if schedule.every:
        start = schedule.start_at or EPOCH
        if now < start:
            return
        k = math.floor((now - start).total_seconds() / schedule.every)
        while k >= 0:
            yield start + timedelta(seconds=k * schedule.every)
            k -= 1
    elif schedule.cron:
        zone = ZoneInfo(schedule.timezone)
        ceiling = now.replace(microsecond=0) + timedelta(seconds=1)
        it = _croniter()(schedule.cron, ceiling.astimezone(zone))
        newer: datetime | None = None
        while True:
            fire = it.get_prev(datetime)
            if newer is not None and fire.replace(tzinfo=None) == newer.replace(tzinfo=None):
                newer = fire  # a wall time repeated by a fall-back: keep its first instance
                continue
            if newer is not None and newer <= now:
                yield newer.astimezone(UTC)
            newer = fire


def due_fires(schedule: Schedule, last: datetime, now: datetime) -> list[datetime]:
    """The fires to enqueue now under the schedule's catch-up policy.

    The newest fire in (last, now] is on time; older ones were missed during downtime:
    `all` enqueues them too, `latest` only the newest, `none` only an on-time fire.
    """
    fires = fires_between(schedule, last, now)
    if not fires or schedule.catchup == "all":
        return fires
    newest = fires[-1]
    if schedule.catchup == "latest" or now - newest <= ON_TIME:
        return [newest]
    return []


def _croniter() -> Any:
    """croniter, imported on first use: importing it runs `file -b` on the interpreter (a fork
    and exec, in croniter's 32-bit check), a cost every worker start would pay for nothing."""
    from croniter import croniter

    return croniter
