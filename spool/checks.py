"""Value checks for spool.toml: each takes a TOML value and returns it converted, or raises
InvalidInput saying what is wrong with it (the config reader adds the file and the key)."""

from __future__ import annotations

from typing import Any
from collections.abc import Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from spool.errors import InvalidInput
from spool.timeutil import parse_duration


INT_MAX = 2**31 - 1  # the default ceiling: counts and sizes beyond it are typos or attacks


def integer(low: int, high: int = INT_MAX) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"{value!r} is not an integer")
        if not low <= value <= high:
            shown = value if value.bit_length() < 64 else f"an integer of {value.bit_length()} bits"
            raise InvalidInput(f"{shown} is out of range (from {low} to {high})")
        return value
    return check


def number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise InvalidInput(f"{value!r} is not a non-negative number")
    return float(value)


def positive_duration(value: Any) -> float:
    seconds = parse_duration(value, repr(value))
    if seconds <= 0:
        raise InvalidInput(f"{value!r} must be longer than zero")
    return seconds


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{value!r} is not true or false")
    return value


def string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{value!r} is not a non-empty string")
    return value


def command(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f"{value!r} is not a non-empty list of strings")
    return tuple(value)


def handler(value: Any) -> str:
    module, _, function = string(value).partition(":")
    if not module or not function.isidentifier():
        raise InvalidInput(f"{value!r} is not 'package.module:function'")
    return f"{module}:{function}"


def env_table(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidInput(f"{value!r} is not a table of strings")
    return dict(value)


def cron(value: Any) -> str:
    from croniter import croniter

    text = string(value)
    if not croniter.is_valid(text):
        raise InvalidInput(f"{text!r} is not a valid cron expression")
    return text


def zone(value: Any) -> str:
    try:
        ZoneInfo(string(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"{value!r} is not an IANA time zone (e.g. Europe/Paris)") from None
    return str(value)


def choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise InvalidInput(f"{value!r} is not one of {', '.join(choices)}")
        return str(value)
    return check
