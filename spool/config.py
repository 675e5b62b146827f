"""spool.toml: `[defaults]`, `[jobs.NAME]` and `[schedules.NAME]`, parsed into frozen records.

Every key is optional and every unknown key is an error; errors name the file, the key and the
problem. A missing file is an empty config (no job types).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from spool.errors import ConfigError, InvalidInput
from spool.timeutil import UTC, parse_duration, parse_time

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class Backoff:
    """Retry delay for attempt n: min(max, base * factor**(n-1)) * (1 + u), |u| <= jitter."""

    base: float = 5.0
    factor: float = 2.0
    max: float = 3600.0
    jitter: float = 0.2


@dataclass(frozen=True)
class Defaults:
    """`[defaults]`: what every job type inherits and the daemons' timings."""

    priority: int = 5
    max_attempts: int = 3
    timeout: float = 3600.0
    slots: int = 1
    backoff: Backoff = Backoff()
    kill_grace: float = 10.0
    grace: float = 30.0
    heartbeat: float = 10.0
    lease: float = 60.0
    poll: float = 1.0
    refresh: float = 30.0
    durable: bool = True
    max_job_bytes: int = 1048576
    retention: float = 30 * 86400.0


@dataclass(frozen=True)
class JobType:
    """`[jobs.NAME]`: what to run and how; unset options fall back to `[defaults]`."""

    name: str
    command: tuple[str, ...] | None = None
    handler: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    priority: int = 5
    max_attempts: int = 3
    timeout: float = 3600.0
    slots: int = 1
    backoff: Backoff = Backoff()
    kill_grace: float = 10.0
    retention: float = 30 * 86400.0


@dataclass(frozen=True)
class Schedule:
    """`[schedules.NAME]`: when to enqueue which job."""

    name: str
    job: str
    cron: str | None = None
    every: float | None = None
    after: str | None = None
    timezone: str = "UTC"
    args: Any = None
    priority: int | None = None
    overlap: str = "skip"
    catchup: str = "latest"
    start_at: datetime | None = None


@dataclass(frozen=True)
class Config:
    """The whole of spool.toml."""

    defaults: Defaults = Defaults()
    jobs: dict[str, JobType] = field(default_factory=dict)
    schedules: dict[str, Schedule] = field(default_factory=dict)
    path: Path | None = None

    def job_type(self, name: str) -> JobType | None:
        return self.jobs.get(name)


def load_config(path: Path) -> Config:
    """Read and validate spool.toml at `path`; a missing file gives an empty Config."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config(path=path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> Config:
    """Validate the TOML `text` of spool.toml (`path` is for messages)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    reader = _Reader(path)
    reader.keys(data, "", {"defaults", "jobs", "schedules"})
    defaults = _defaults(reader, reader.table(data, "defaults"))
    jobs = {
        name: _job_type(reader, name, spec, defaults)
        for name, spec in reader.table(data, "jobs").items()
    }
    schedules = {
        name: _schedule(reader, name, spec, jobs)
        for name, spec in reader.table(data, "schedules").items()
    }
    for sched in schedules.values():
        if sched.after is not None and sched.after not in schedules:
            raise reader.error(f"schedules.{sched.name}.after", f"no schedule named {sched.after!r}")
    return Config(defaults, jobs, schedules, path)


class _Reader:
    """Typed access to TOML values, raising ConfigError that names file and key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: key '{key}': {problem}")

    def keys(self, table: dict, where: str, allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                place = f"{where}.{key}" if where else key
                raise self.error(place, f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def table(self, data: dict, key: str) -> dict:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.error(key, "must be a table")
        for name, spec in value.items():
            if key in ("jobs", "schedules"):
                if not _NAME.match(name):
                    raise self.error(f"{key}.{name}", "name may use A-Z a-z 0-9 . _ - only")
                if not isinstance(spec, dict):
                    raise self.error(f"{key}.{name}", "must be a table")
        return value

    def convert(self, table: dict, where: str, key: str, default: Any,
                check: Callable[[Any], Any]) -> Any:
        if key not in table:
            return default
        try:
            return check(table[key])
        except (InvalidInput, ValueError, TypeError) as exc:
            raise self.error(f"{where}.{key}", str(exc)) from None


def _int(low: int, high: int | None = None) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"{value!r} is not an integer")
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f">= {low}"
            raise InvalidInput(f"{value} is out of range ({bound})")
        return value
    return check


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise InvalidInput(f"{value!r} is not a non-negative number")
    return float(value)


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value, repr(value))
    if seconds <= 0:
        raise InvalidInput(f"{value!r} must be longer than zero")
    return seconds


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{value!r} is not true or false")
    return value


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{value!r} is not a non-empty string")
    return value


_COMMON = {"priority", "max_attempts", "timeout", "slots", "backoff", "kill_grace", "retention"}
_DAEMON = {"grace", "heartbeat", "lease", "poll", "refresh", "durable", "max_job_bytes"}


def _backoff(reader: _Reader, value: Any, where: str, base: Backoff) -> Backoff:
    if not isinstance(value, dict):
        raise reader.error(where, "must be a table {base, factor, max, jitter}")
    reader.keys(value, where, {"base", "factor", "max", "jitter"})
    backoff = Backoff(
        base=reader.convert(value, where, "base", base.base, lambda v: parse_duration(v)),
        factor=reader.convert(value, where, "factor", base.factor, _number),
        max=reader.convert(value, where, "max", base.max, lambda v: parse_duration(v)),
        jitter=reader.convert(value, where, "jitter", base.jitter, _number),
    )
    if backoff.jitter >= 1:
        raise reader.error(f"{where}.jitter", f"{backoff.jitter} must be below 1")
    return backoff


def _common(reader: _Reader, table: dict, where: str, base: Any) -> dict[str, Any]:
    return {
        "priority": reader.convert(table, where, "priority", base.priority, _int(0, 9)),
        "max_attempts": reader.convert(table, where, "max_attempts", base.max_attempts, _int(1)),
        "timeout": reader.convert(table, where, "timeout", base.timeout, _positive_duration),
        "slots": reader.convert(table, where, "slots", base.slots, _int(1)),
        "backoff": _backoff(reader, table["backoff"], f"{where}.backoff", base.backoff)
        if "backoff" in table else base.backoff,
        "kill_grace": reader.convert(table, where, "kill_grace", base.kill_grace,
                                     lambda v: parse_duration(v)),
        "retention": reader.convert(table, where, "retention", base.retention,
                                    lambda v: parse_duration(v)),
    }


def _defaults(reader: _Reader, table: dict) -> Defaults:
    reader.keys(table, "defaults", _COMMON | _DAEMON)
    base = Defaults()
    defaults = Defaults(
        **_common(reader, table, "defaults", base),
        grace=reader.convert(table, "defaults", "grace", base.grace, lambda v: parse_duration(v)),
        heartbeat=reader.convert(table, "defaults", "heartbeat", base.heartbeat, _positive_duration),
        lease=reader.convert(table, "defaults", "lease", base.lease, _positive_duration),
        poll=reader.convert(table, "defaults", "poll", base.poll, _positive_duration),
        refresh=reader.convert(table, "defaults", "refresh", base.refresh, _positive_duration),
        durable=reader.convert(table, "defaults", "durable", base.durable, _bool),
        max_job_bytes=reader.convert(table, "defaults", "max_job_bytes", base.max_job_bytes,
                                     _int(64)),
    )
    if defaults.lease < 3 * defaults.heartbeat:
        raise reader.error("defaults.lease", f"{defaults.lease:g}s must be at least 3 heartbeats "
                           f"({3 * defaults.heartbeat:g}s)")
    return defaults


def _job_type(reader: _Reader, name: str, table: dict, defaults: Defaults) -> JobType:
    where = f"jobs.{name}"
    reader.keys(table, where, _COMMON | {"command", "handler", "env"})
    if ("command" in table) == ("handler" in table):
        raise reader.error(where, "needs exactly one of 'command' (a list) or 'handler' "
                           "('package.module:function')")
    command = reader.convert(table, where, "command", None, _command)
    handler = reader.convert(table, where, "handler", None, _handler)
    env = reader.convert(table, where, "env", {}, _env)
    return JobType(name, command, handler, env, **_common(reader, table, where, defaults))


def _command(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f"{value!r} is not a non-empty list of strings")
    return tuple(value)


def _handler(value: Any) -> str:
    module, _, function = _string(value).partition(":")
    if not module or not function.isidentifier():
        raise InvalidInput(f"{value!r} is not 'package.module:function'")
    return value


def _env(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidInput(f"{value!r} is not a table of strings")
    return dict(value)


def _schedule(reader: _Reader, name: str, table: dict, jobs: dict[str, JobType]) -> Schedule:
    where = f"schedules.{name}"
    reader.keys(table, where, {"cron", "every", "after", "timezone", "job", "args", "priority",
                               "overlap", "catchup", "start_at"})
    if sum(key in table for key in ("cron", "every", "after")) != 1:
        raise reader.error(where, "needs exactly one of 'cron', 'every' or 'after'")
    job = reader.convert(table, where, "job", None, _string)
    if job is None:
        raise reader.error(f"{where}.job", "missing: name the job type to enqueue")
    if job not in jobs:
        raise reader.error(f"{where}.job", f"unknown job type {job!r}")
    sched = Schedule(
        name=name, job=job,
        cron=reader.convert(table, where, "cron", None, _cron),
        every=reader.convert(table, where, "every", None, _positive_duration),
        after=reader.convert(table, where, "after", None, _string),
        timezone=reader.convert(table, where, "timezone", "UTC", _zone),
        args=table.get("args"),
        priority=reader.convert(table, where, "priority", None, _int(0, 9)),
        overlap=reader.convert(table, where, "overlap", "allow" if "after" in table else "skip",
                               _choice("skip", "allow")),
        catchup=reader.convert(table, where, "catchup", "latest",
                               _choice("latest", "all", "none")),
        start_at=reader.convert(table, where, "start_at", None,
                                lambda v: parse_time(v).astimezone(UTC)),
    )
    return sched


def _cron(value: Any) -> str:
    from croniter import croniter

    text = _string(value)
    if not croniter.is_valid(text):
        raise InvalidInput(f"{text!r} is not a valid cron expression")
    return text


def _zone(value: Any) -> str:
    try:
        ZoneInfo(_string(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"{value!r} is not an IANA time zone (e.g. Europe/Paris)") from None
    return value


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise InvalidInput(f"{value!r} is not one of {', '.join(choices)}")
        return value
    return check


def with_defaults(config: Config, **changes: Any) -> Config:
    """A copy of `config` with some `[defaults]` replaced (tests, benchmarks)."""
    return replace(config, defaults=replace(config.defaults, **changes))
