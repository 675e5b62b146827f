"""spool.toml: `[defaults]`, `[jobs.NAME]` and `[schedules.NAME]`, parsed into frozen records.

Every key is optional and every unknown key is an error; errors name the file, the key and the
problem. A missing file is an empty config (no job types).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from collections.abc import Callable

from spool import checks
from spool.allow import check_allow
from spool.errors import ConfigError, InvalidInput
from spool.jsonvalues import check_value
from spool.timeutil import UTC, parse_duration, parse_time

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
MAX_ID = 128  # a job id's length, fire ids included
# the longest fire ids: `NAME@manual.YYYYMMDDTHHMMSSZ` (and `NAME@YYYYMMDDTHHMMSSZ`, shorter)
_FIRE_SUFFIX = len("@manual.YYYYMMDDTHHMMSSZ")
_AFTER_INFIX = len("@after.")


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
    max_result_bytes: int = 1048576
    max_log_bytes: int = 104857600
    retention: float = 30 * 86400.0
    isolation: str = "pool"  # of handler job types: "pool" (a warm child) or "fork" (a fresh one)
    max_jobs_per_child: int = 1000  # attempts a pool child runs before it is replaced
    max_child_rss_bytes: int = 512 << 20  # resident memory past which a pool child is replaced


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
    limits: tuple[str, ...] = ()  # "NAME" or "NAME:KEY", KEY may hold {arg} placeholders
    # who may submit it (docs/protocol.md, Who may submit what); None: anyone
    allow: tuple[str, ...] | None = None
    isolation: str = "pool"  # handlers only (README, Handler pool)


@dataclass(frozen=True)
class Limit:
    """`[limits.NAME]`: at most `max` running jobs hold it at once, cluster-wide."""

    name: str
    max: int


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
    limits: dict[str, Limit] = field(default_factory=dict)

    def job_type(self, name: str) -> JobType | None:
        return self.jobs.get(name)


def load_config(path: Path) -> Config:
    """Read and validate spool.toml at `path`; a missing file gives an empty Config."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config(path=path)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except OSError as exc:  # kept as the cause: a daemon retries a filesystem fault
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> Config:
    """Validate the TOML `text` of spool.toml (`path` is for messages)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: arrays or tables nested too deep") from None
    reader = _Reader(path)
    reader.keys(data, "", {"defaults", "jobs", "schedules", "limits"})
    defaults = _defaults(reader, reader.table(data, "defaults"))
    limits = {name: _limit(reader, name, spec)
              for name, spec in reader.table(data, "limits").items()}
    jobs = {
        name: _job_type(reader, name, spec, defaults, limits)
        for name, spec in reader.table(data, "jobs").items()
    }
    schedules = {
        name: _schedule(reader, name, spec, jobs)
        for name, spec in reader.table(data, "schedules").items()
    }
    for sched in schedules.values():
        if sched.after is not None and sched.after not in schedules:
            raise reader.error(f"schedules.{sched.name}.after",
                               f"no schedule named {sched.after!r}")
    for sched in schedules.values():
        _check_fire_ids(reader, sched, schedules)
    return Config(defaults, jobs, schedules, path, limits)


def longest_fire_id(name: str, schedules: dict[str, Schedule]) -> int:
    """The length of the longest job id a fire of schedule `name` can get: `NAME@manual.STAMP`,
    or `NAME@after.UPSTREAM` with UPSTREAM the longest id of the upstream schedule.
    ValueError names the chain when `after` schedules form a cycle."""
    chain = [name]
    length = 0
    while True:
        sched = schedules[chain[-1]]
        if sched.after is None:
            return length + len(sched.name) + _FIRE_SUFFIX
        length += len(sched.name) + _AFTER_INFIX
        if sched.after in chain:
            raise ValueError(" -> ".join([*chain, sched.after]))
        chain.append(sched.after)


def _check_fire_ids(reader: _Reader, sched: Schedule, schedules: dict[str, Schedule]) -> None:
    try:
        longest = longest_fire_id(sched.name, schedules)
    except ValueError as exc:
        raise reader.error(f"schedules.{sched.name}.after", f"'after' schedules form a cycle "
                           f"({exc}): none would ever fire") from None
    if longest > MAX_ID:
        raise reader.error(f"schedules.{sched.name}", (
            f"name too long: its fire ids (e.g. '{sched.name}@manual.YYYYMMDDTHHMMSSZ'"
            + (f", '{sched.name}@after.' + an id of '{sched.after}'" if sched.after else "")
            + f") reach {longest} characters, more than the {MAX_ID} of a job id; "
            "shorten the schedule name"
            + (" or the upstream's" if sched.after else "")))


class _Reader:
    """Typed access to TOML values, raising ConfigError that names file and key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: key '{key}': {problem}")

    def keys(self, table: dict[str, Any], where: str, allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                place = f"{where}.{key}" if where else key
                raise self.error(place, f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def table(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.error(key, "must be a table")
        for name, spec in value.items():
            if key in ("jobs", "schedules", "limits"):
                if not _NAME.fullmatch(name):
                    raise self.error(f"{key}.{name}", "name may use A-Z a-z 0-9 . _ - only")
                if not isinstance(spec, dict):
                    raise self.error(f"{key}.{name}", "must be a table")
        return value

    def convert(self, table: dict[str, Any], where: str, key: str, default: Any,
                check: Callable[[Any], Any]) -> Any:
        if key not in table:
            return default
        try:
            return check(table[key])
        except (InvalidInput, ValueError, TypeError) as exc:
            raise self.error(f"{where}.{key}", str(exc)) from None


_COMMON = {"priority", "max_attempts", "timeout", "slots", "backoff", "kill_grace", "retention"}
_DAEMON = {"grace", "heartbeat", "lease", "poll", "refresh", "durable", "max_job_bytes",
           "max_result_bytes", "max_log_bytes", "isolation", "max_jobs_per_child",
           "max_child_rss_bytes"}
_ISOLATION = checks.choice("pool", "fork")
_GIB = 1 << 30


def _backoff(reader: _Reader, value: Any, where: str, base: Backoff) -> Backoff:
    if not isinstance(value, dict):
        raise reader.error(where, "must be a table {base, factor, max, jitter}")
    reader.keys(value, where, {"base", "factor", "max", "jitter"})
    backoff = Backoff(
        base=reader.convert(value, where, "base", base.base, lambda v: parse_duration(v)),
        factor=reader.convert(value, where, "factor", base.factor, checks.number),
        max=reader.convert(value, where, "max", base.max, lambda v: parse_duration(v)),
        jitter=reader.convert(value, where, "jitter", base.jitter, checks.number),
    )
    if backoff.jitter >= 1:
        raise reader.error(f"{where}.jitter", f"{backoff.jitter} must be below 1")
    return backoff


def _common(reader: _Reader, table: dict[str, Any], where: str, base: Any) -> dict[str, Any]:
    def get(key: str, check: Callable[[Any], Any]) -> Any:
        return reader.convert(table, where, key, getattr(base, key), check)

    return {
        "priority": get("priority", checks.integer(0, 9)),
        "max_attempts": get("max_attempts", checks.integer(1, 1_000_000)),
        "timeout": get("timeout", checks.positive_duration),
        "slots": get("slots", checks.integer(1)),
        "backoff": _backoff(reader, table["backoff"], f"{where}.backoff", base.backoff)
        if "backoff" in table else base.backoff,
        "kill_grace": get("kill_grace", parse_duration),
        "retention": get("retention", parse_duration),
    }


def _defaults(reader: _Reader, table: dict[str, Any]) -> Defaults:
    reader.keys(table, "defaults", _COMMON | _DAEMON)
    base = Defaults()

    def get(key: str, check: Callable[[Any], Any]) -> Any:
        return reader.convert(table, "defaults", key, getattr(base, key), check)

    defaults = Defaults(
        **_common(reader, table, "defaults", base),
        grace=get("grace", parse_duration),
        heartbeat=get("heartbeat", checks.positive_duration),
        lease=get("lease", checks.positive_duration),
        poll=get("poll", checks.positive_duration),
        refresh=get("refresh", checks.positive_duration),
        durable=get("durable", checks.boolean),
        max_job_bytes=get("max_job_bytes", checks.integer(64, _GIB)),
        max_result_bytes=get("max_result_bytes", checks.integer(64, _GIB)),
        max_log_bytes=get("max_log_bytes", checks.integer(1024, 1 << 50)),
        isolation=get("isolation", _ISOLATION),
        max_jobs_per_child=get("max_jobs_per_child", checks.integer(1)),
        max_child_rss_bytes=get("max_child_rss_bytes", checks.integer(1 << 20, 1 << 50)),
    )
    if defaults.lease < 3 * defaults.heartbeat:
        raise reader.error("defaults.lease", f"{defaults.lease:g}s must be at least 3 heartbeats "
                           f"({3 * defaults.heartbeat:g}s)")
    return defaults


def _limit(reader: _Reader, name: str, table: dict[str, Any]) -> Limit:
    reader.keys(table, f"limits.{name}", {"max"})
    if "max" not in table:
        raise reader.error(f"limits.{name}.max", "missing: how many jobs may hold it at once")
    return Limit(name, reader.convert(table, f"limits.{name}", "max", 1,
                                      checks.integer(1, 1_000_000)))


def _job_limits(value: Any, limits: dict[str, Limit]) -> tuple[str, ...]:
    """A job type's `limits`: "NAME" or "NAME:KEY" strings naming declared limits."""
    if not isinstance(value, list) or not all(isinstance(ref, str) for ref in value):
        raise InvalidInput(f"must be a list of \"NAME\" or \"NAME:KEY\" strings, not {value!r}")
    for ref in value:
        name = ref.partition(":")[0]
        if name not in limits:
            known = ", ".join(sorted(limits)) or "none declared"
            raise InvalidInput(f"unknown limit {name!r} (declare it as [limits.{name}]; "
                               f"known: {known})")
    return tuple(value)


def _job_type(reader: _Reader, name: str, table: dict[str, Any], defaults: Defaults,
              limits: dict[str, Limit]) -> JobType:
    where = f"jobs.{name}"
    reader.keys(table, where, _COMMON | {"command", "handler", "env", "limits", "allow",
                                         "isolation"})
    if ("command" in table) == ("handler" in table):
        raise reader.error(where, "needs exactly one of 'command' (a list) or 'handler' "
                           "('package.module:function')")
    if "isolation" in table and "command" in table:
        raise reader.error(f"{where}.isolation", "applies to handler job types only (a command "
                           "always runs in a process of its own)")
    command = reader.convert(table, where, "command", None, checks.command)
    handler = reader.convert(table, where, "handler", None, checks.handler)
    env = reader.convert(table, where, "env", {}, checks.env_table)
    refs = reader.convert(table, where, "limits", (), lambda v: _job_limits(v, limits))
    return JobType(name, command, handler, env, **_common(reader, table, where, defaults),
                   limits=refs, allow=reader.convert(table, where, "allow", None, check_allow),
                   isolation=reader.convert(table, where, "isolation", defaults.isolation,
                                            _ISOLATION))


def _json_args(value: Any) -> Any:
    """Schedule args as the job will carry them: JSON only (no TOML dates, nan or inf)."""
    check_value(value, repr(value)[:60])
    return value


def _schedule(reader: _Reader, name: str, table: dict[str, Any],
              jobs: dict[str, JobType]) -> Schedule:
    where = f"schedules.{name}"
    reader.keys(table, where, {"cron", "every", "after", "timezone", "job", "args", "priority",
                               "overlap", "catchup", "start_at"})
    if sum(key in table for key in ("cron", "every", "after")) != 1:
        raise reader.error(where, "needs exactly one of 'cron', 'every' or 'after'")
    job = reader.convert(table, where, "job", None, checks.string)
    if job is None:
        raise reader.error(f"{where}.job", "missing: name the job type to enqueue")
    if job not in jobs:
        raise reader.error(f"{where}.job", f"unknown job type {job!r}")
    sched = Schedule(
        name=name, job=job,
        cron=reader.convert(table, where, "cron", None, checks.cron),
        every=reader.convert(table, where, "every", None, checks.positive_duration),
        after=reader.convert(table, where, "after", None, checks.string),
        timezone=reader.convert(table, where, "timezone", "UTC", checks.zone),
        args=reader.convert(table, where, "args", None, _json_args),
        priority=reader.convert(table, where, "priority", None, checks.integer(0, 9)),
        overlap=reader.convert(table, where, "overlap", "allow" if "after" in table else "skip",
                               checks.choice("skip", "allow")),
        catchup=reader.convert(table, where, "catchup", "latest",
                               checks.choice("latest", "all", "none")),
        start_at=reader.convert(table, where, "start_at", None,
                                lambda v: parse_time(v).astimezone(UTC)),
    )
    return sched
