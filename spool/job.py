"""The job file: validation, defaults (job type, then `[defaults]`) and the frozen `Job` record.

A job body is a plain dict as stored on disk; `normalize` is the one gate every body passes
before spool writes it into `pending/`, whoever made it (API, CLI, a dropped file, cron).
Hostile values stop here as InvalidInput (`spool.jsonvalues`): JSON nested deeper than
MAX_DEPTH, strings UTF-8 cannot encode (lone surrogates), NaN and infinities, values that are
not JSON at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from spool import checks
from spool.config import Config
from spool.errors import InvalidInput, UnknownJobType
from spool.jsonvalues import MAX_DEPTH, check_value, load_json, within_depth
from spool.layout import validate_id
from spool.limitspec import check_limit_list, pools_of
from spool.templates import expand_item, placeholders  # noqa: F401 - re-exported
from spool.timeutil import format_time, parse_duration, parse_time

KNOWN_FIELDS = ("id", "job", "args", "priority", "run_at", "created_at", "attempts",
                "max_attempts", "timeout", "slots", "unique", "after", "schedule", "meta",
                "history", "outcome", "exit_code", "result", "finished_at", "error",
                "after_any", "after_failed")
OUTCOMES = ("completed", "cancelled", "failed", "timeout", "lost", "interrupted", "invalid")
MAX_ATTEMPTS = 1_000_000
_TIME_FIELDS = ("run_at", "created_at", "finished_at")
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "id": str, "job": str, "priority": int, "attempts": int, "max_attempts": int,
    "timeout": (int, float), "slots": int, "unique": str, "after": list, "schedule": str,
    "meta": dict, "history": list, "outcome": str, "exit_code": int, "error": str,
    "after_any": list, "after_failed": list}


@dataclass(frozen=True)
class Job:
    """One job as read from its file: the file's fields plus `state` and `path`."""

    id: str
    job: str
    state: str
    path: Path
    args: Any = None
    priority: int = 5
    run_at: datetime | None = None
    created_at: datetime | None = None
    attempts: int = 0
    max_attempts: int = 3
    timeout: float = 3600.0
    slots: int = 1
    unique: str | None = None
    after: tuple[str, ...] = ()
    schedule: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    history: tuple[dict[str, Any], ...] = ()
    outcome: str | None = None
    exit_code: int | None = None
    result: Any = None
    finished_at: datetime | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # docs/protocol.md, Dependencies: the dependency finished in any way
    after_any: tuple[str, ...] = ()
    after_failed: tuple[str, ...] = ()  # ... or ended in dead/

    @classmethod
    def from_body(cls, body: dict[str, Any], state: str, path: Path) -> Job:
        """A Job from a stored body (times parsed, unknown fields kept in `extra`). Any body
        gives a Job: a field of the wrong type (a file placed by hand) takes its default."""
        known = {key: body[key] for key in KNOWN_FIELDS if key in body}
        for key in _TIME_FIELDS:
            if known.get(key) is not None:
                try:
                    known[key] = parse_time(known[key])
                except InvalidInput:
                    known[key] = None
        for key, kind in _FIELD_TYPES.items():
            if key in known and not _is(known[key], kind):
                del known[key]
        for dependency in ("after", "after_any", "after_failed"):
            known[dependency] = tuple(known.get(dependency) or ())
        known["history"] = tuple(entry for entry in known.get("history") or ()
                                 if isinstance(entry, dict))
        known["meta"] = known.get("meta") or {}
        extra = {key: value for key, value in body.items() if key not in KNOWN_FIELDS}
        known.setdefault("id", path.stem)
        known.setdefault("job", "")
        return cls(state=state, path=path, extra=extra, **known)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "dead")

    def to_json(self, body: dict[str, Any]) -> dict[str, Any]:
        """The `show --json` document: the file's fields plus state and absolute path."""
        return {**body, "state": self.state, "path": str(self.path.absolute())}


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    """isinstance, where a bool is no number (JSON true is not 1)."""
    return isinstance(value, kind) and not isinstance(value, bool)


def normalize(raw: Any, config: Config, now: datetime, job_id: str | None = None) -> dict[str, Any]:
    """A complete, valid job body from `raw`, or InvalidInput naming the bad field.

    Missing fields take the job type's values, then `[defaults]`; unknown fields are kept.
    `job_id` (when given, already validated by the caller) wins over the body's own `id`.
    """
    if not isinstance(raw, dict):
        raise InvalidInput(f"a job must be a JSON object, not {type(raw).__name__}")
    if not within_depth(raw):  # first: the checks below may repr the values
        raise InvalidInput(f"a job must not nest lists and objects deeper than {MAX_DEPTH} levels")
    name = raw.get("job")
    if not isinstance(name, str) or not name:
        raise InvalidInput("field 'job' is missing or not a string: name a job type")
    jtype = config.job_type(name)
    if jtype is None:
        known = ", ".join(sorted(config.jobs)) or "none declared in spool.toml"
        raise UnknownJobType(f"unknown job type {name!r} (known: {known})")
    body = dict(raw)
    body["id"] = job_id if job_id is not None else validate_id(raw.get("id"), "field 'id'")
    body["args"] = raw.get("args", {})
    body["priority"] = _int_field(raw, "priority", jtype.priority, 0, 9)
    body["run_at"] = format_time(_time_field(raw, "run_at", now))
    body["created_at"] = format_time(_time_field(raw, "created_at", now))
    # a processing name carries the attempt in at most 9 digits: stay far below
    body["attempts"] = _int_field(raw, "attempts", 0, 0, MAX_ATTEMPTS)
    body["max_attempts"] = _int_field(raw, "max_attempts", jtype.max_attempts, 1, MAX_ATTEMPTS)
    body["timeout"] = _timeout_field(raw, jtype.timeout)
    body["slots"] = _int_field(raw, "slots", jtype.slots, 1)
    body["unique"] = _optional_string(raw, "unique")
    body["schedule"] = _optional_string(raw, "schedule")
    for kind in ("after", "after_any", "after_failed"):
        body[kind] = [validate_id(dep, f"field {kind!r} item") for dep in _list_field(raw, kind)]
    body["history"] = _list_field(raw, "history")
    meta = raw.get("meta", {})
    if not isinstance(meta, dict):
        raise InvalidInput(f"field 'meta' must be an object, not {meta!r}")
    body["meta"] = meta
    if jtype.command:
        _check_placeholders(name, jtype.command, body["args"])
    if "limits" in raw:
        body["limits"] = check_limit_list(raw["limits"])
    pools_of(config, body)  # an undeclared limit, or a key its args cannot fill, is rejected
    _check_body(body)
    return body


def renew(template: dict[str, Any], config: Config, now: datetime, job_id: str, args: Any,
          unique: Any, fixed_run_at: bool) -> dict[str, Any]:
    """One more job like `template` (a body `normalize` made, due at its creation unless
    `fixed_run_at`), with its own id, times, args and unique key: what `normalize` would check
    again for these is checked, the rest was checked once (submit_many)."""
    args = {} if args is None else args
    if not within_depth(args):  # first: the checks below may repr the values
        raise InvalidInput(f"a job must not nest lists and objects deeper than {MAX_DEPTH} levels")
    body = dict(template)
    body["id"] = job_id
    body["created_at"] = format_time(now)
    if not fixed_run_at:
        body["run_at"] = body["created_at"]
    body["args"] = args
    body["unique"] = _optional_string({"unique": unique}, "unique")
    for kind in ("after", "after_any", "after_failed", "history"):
        body[kind] = []
    body["meta"] = dict(template["meta"])
    jtype = config.job_type(body["job"])
    if jtype is not None and jtype.command:
        _check_placeholders(body["job"], jtype.command, args)
    pools_of(config, body)
    check_value(args, "field 'args'")
    if body["unique"] is not None:
        check_value(body["unique"], "field 'unique'")
    return body


def _check_placeholders(name: str, command: tuple[str, ...], args: Any) -> None:
    """InvalidInput when args lack an argument the job type's argv names."""
    needed = placeholders(command)
    if not needed:
        return
    if not isinstance(args, dict):
        raise InvalidInput(f"job type {name!r} fills its command {list(command)} from args: "
                           f"args must be an object with {', '.join(needed)}, not {args!r}")
    missing = [each for each in needed if each not in args]
    if missing:
        raise InvalidInput(f"job type {name!r} needs argument{'s' if len(missing) > 1 else ''} "
                           f"{', '.join(repr(m) for m in missing)} for its command "
                           f"{list(command)} (give it with -a {missing[0]}=VALUE)")


def _check_body(body: dict[str, Any]) -> None:
    """InvalidInput naming the first field spool could not write as JSON."""
    try:
        check_value(body, "job")
    except InvalidInput:
        for key, value in body.items():
            check_value(value, f"field {key!r}")
        raise


def _int_field(raw: dict[str, Any], key: str, default: int, low: int,
               high: int = checks.INT_MAX) -> int:
    value = raw.get(key, default)
    if value is None:
        return default
    try:
        return checks.integer(low, high)(value)
    except InvalidInput as exc:
        raise InvalidInput(f"field {key!r}: {exc}") from None


def _time_field(raw: dict[str, Any], key: str, default: datetime) -> datetime:
    value = raw.get(key)
    return default if value is None else parse_time(value, f"field {key!r}")


def _timeout_field(raw: dict[str, Any], default: float) -> float:
    value = raw.get("timeout")
    if value is None:
        return default
    seconds = parse_duration(value, "field 'timeout'")
    if seconds <= 0:
        raise InvalidInput(f"field 'timeout' must be longer than zero, not {value!r}")
    return seconds


def _optional_string(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise InvalidInput(f"field {key!r} must be a non-empty string or null, not {value!r}")
    return value


def _list_field(raw: dict[str, Any], key: str) -> list[Any]:
    value = raw.get(key) or []
    if not isinstance(value, list):
        raise InvalidInput(f"field {key!r} must be a list, not {value!r}")
    return value


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode(body: dict[str, Any]) -> bytes:
    """The bytes spool writes for a job body (compact, one trailing newline)."""
    return _ENCODER.encode(body).encode() + b"\n"


def decode(data: bytes, what: str) -> dict[str, Any]:
    """The body in `data`; InvalidInput naming `what` when it is not a JSON object."""
    body = load_json(data, what)
    if not isinstance(body, dict):
        raise InvalidInput(f"{what}: a job must be a JSON object, not {type(body).__name__}")
    return body
