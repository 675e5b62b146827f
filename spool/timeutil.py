"""Durations and times as the contract spells them: aware UTC datetimes, RFC 3339 text, DUE stamps.

Pure functions only; the clock is always passed in by the caller.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone

from spool.errors import InvalidInput

UTC = timezone.utc
DUE_LENGTH = 23
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object, what: str = "duration") -> float:
    """Seconds from `90`, `90s`, `15m`, `2h`, `1d`, a number or a timedelta; never negative."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise InvalidInput(f"{what}: {value!r} is not a duration (use e.g. 90, 90s, 15m, 2h, 1d)")
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise InvalidInput(f"{what}: {value!r} is not a duration (use e.g. 90, 90s, 15m, 2h, 1d)")
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidInput(f"{what}: {value!r} must be a finite, non-negative duration")
    return seconds


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC text, `2026-11-22T09:35:00Z` (microseconds only when present)."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat() + "Z"


def parse_time(value: object, what: str = "time") -> datetime:
    """An aware UTC datetime from RFC 3339 text or a datetime (a naive one is taken as UTC)."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise InvalidInput(
                f"{what}: {value!r} is not an RFC 3339 time (e.g. 2026-11-22T09:35:00Z)"
            ) from None
    else:
        raise InvalidInput(f"{what}: {value!r} is not an RFC 3339 time")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


def due_stamp(moment: datetime) -> str:
    """The DUE part of a pending name: `YYYYMMDDTHHMMSS.ffffffZ`, sorting as time does."""
    m = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    return (f"{m.year:04d}{m.month:02d}{m.day:02d}T{m.hour:02d}{m.minute:02d}{m.second:02d}"
            f".{m.microsecond:06d}Z")


def parse_due(stamp: str) -> datetime:
    """The datetime a DUE stamp stands for; ValueError when it is not one."""
    if len(stamp) != DUE_LENGTH or stamp[8] != "T" or stamp[15] != "." or stamp[-1] != "Z" \
            or not (stamp[:8] + stamp[9:15] + stamp[16:22]).isdigit():
        raise ValueError(f"{stamp!r} is not a DUE stamp (YYYYMMDDTHHMMSS.ffffffZ)")
    return datetime(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:8]), int(stamp[9:11]),
                    int(stamp[11:13]), int(stamp[13:15]), int(stamp[16:22]), tzinfo=UTC)


def from_timestamp(seconds: float) -> datetime:
    """An aware UTC datetime from Unix seconds."""
    return datetime.fromtimestamp(seconds, UTC)
