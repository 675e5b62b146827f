"""Durations and times as the contract spells them: aware UTC datetimes, RFC 3339 text, DUE stamps.

Pure functions only; the clock is always passed in by the caller. Values out of range (a
duration past MAX_DURATION, a time that leaves years 1-9999 once in UTC) are InvalidInput naming
the value, never OverflowError. Digits are ASCII only.
"""

from __future__ import annotations

import math
import re
from datetime import UTC as UTC  # re-exported: spool's modules take UTC from here
from datetime import datetime, timedelta

from spool.errors import InvalidInput

DUE_LENGTH = 23
MAX_DURATION = 36500 * 86400.0  # 100 years: any wait or delay fits a timedelta and a timeout
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*", re.ASCII)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_RANGE = "years 0001 to 9999 in UTC"


def parse_duration(value: object, what: str = "duration") -> float:
    """Seconds from `90`, `90s`, `15m`, `2h`, `1d`, a number or a timedelta; never negative."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise InvalidInput(f"{what}: {value!r} is not a duration (use e.g. 90, 90s, 15m, 2h, 1d)")
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise InvalidInput(f"{what}: {value!r} is not a duration (use e.g. 90, 90s, 15m, 2h, 1d)")
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidInput(f"{what}: {value!r} must be a finite, non-negative duration")
    if seconds > MAX_DURATION:
        raise InvalidInput(f"{what}: {value!r} is out of range (at most 36500d, 100 years)")
    return seconds


def to_utc(moment: datetime, what: str = "time") -> datetime:
    """`moment` in UTC (a naive one is taken as UTC); InvalidInput when UTC leaves the calendar."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    if moment.tzinfo is UTC:
        return moment
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise InvalidInput(f"{what}: {moment.isoformat()!r} is out of range ({_RANGE})") from None


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC text, `2026-11-22T09:35:00Z` (microseconds only when present)."""
    return to_utc(moment).replace(tzinfo=None).isoformat() + "Z"


def parse_time(value: object, what: str = "time", *, local_naive: bool = False) -> datetime:
    """An aware UTC datetime from RFC 3339 text or a datetime. A time without an offset is
    UTC — or, with `local_naive` (what a person typed: `--at "2026-12-03 09:00"`), this
    host's local time, as at(1) reads it. Stored times always carry their offset."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:  # UnicodeEncodeError (a lone surrogate) included
            raise InvalidInput(
                f"{what}: {value!r} is not an RFC 3339 time (e.g. 2026-11-22T09:35:00Z)"
            ) from None
    else:
        raise InvalidInput(f"{what}: {value!r} is not an RFC 3339 time")
    try:
        if local_naive and moment.tzinfo is None:
            moment = moment.astimezone()  # the local zone's offset at that moment (DST too)
        return to_utc(moment, what)
    except (InvalidInput, OverflowError, ValueError, OSError):
        raise InvalidInput(f"{what}: {value!r} is out of range ({_RANGE})") from None


def human_time(moment: datetime) -> str:
    """A time for people: this host's local time with its offset, to the second
    (`2026-12-03 10:00:00+01:00`), so nobody has to guess the zone."""
    try:
        local = to_utc(moment).astimezone()
    except (OverflowError, ValueError, OSError):
        local = to_utc(moment)
    return local.isoformat(sep=" ", timespec="seconds")


def human_duration(seconds: float) -> str:
    """`45s`, `5m`, `2h10m`, `3d4h`: a short rounded duration for people (never negative)."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 1 or seconds == 0 else f"{seconds:.1f}s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"


def due_stamp(moment: datetime) -> str:
    """The DUE part of a pending name: `YYYYMMDDTHHMMSS.ffffffZ`, sorting as time does."""
    m = to_utc(moment)
    return (f"{m.year:04d}{m.month:02d}{m.day:02d}T{m.hour:02d}{m.minute:02d}{m.second:02d}"
            f".{m.microsecond:06d}Z")


def parse_due(stamp: str) -> datetime:
    """The datetime a DUE stamp stands for; ValueError when it is not one."""
    digits = stamp[:8] + stamp[9:15] + stamp[16:22]
    if len(stamp) != DUE_LENGTH or stamp[8] != "T" or stamp[15] != "." or stamp[-1] != "Z" \
            or not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"{stamp!r} is not a DUE stamp (YYYYMMDDTHHMMSS.ffffffZ)")
    return datetime(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:8]), int(stamp[9:11]),
                    int(stamp[11:13]), int(stamp[13:15]), int(stamp[16:22]), tzinfo=UTC)


_LAST_SECOND = 253402300799.0  # 9999-12-31T23:59:59Z
_FIRST_SECOND = -62135596800.0  # 0001-01-01T00:00:00Z


def from_timestamp(seconds: float) -> datetime:
    """An aware UTC datetime from Unix seconds (e.g. a file's mtime, which anyone can set):
    clamped into years 0001-9999, never an error."""
    if not math.isfinite(seconds):
        seconds = 0.0
    return datetime.fromtimestamp(min(max(seconds, _FIRST_SECOND), _LAST_SECOND), UTC)
