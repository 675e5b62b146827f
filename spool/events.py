"""Reading the events journal of every host (`events/<host>/<YYYY-MM-DD>.jsonl`), merged in
time order, once or following it (`spool events [-f]`).

Each host appends only to its own files, so a reader merges: it reads every day file of every
host, keeps complete lines only (a line being appended is read once its newline is there) and
sorts by time. Following polls: each pass lists the hosts and their day files (new hosts and
new days appear by themselves) and reads each file from where the last pass stopped. Nothing
here writes. A line that is not a JSON object is skipped, not fatal.

Journal lines name the job by id; the job type (`--job T`) is not on every line, so it is
read from the job's file through the catalog and cached per id (an event carrying `job`
answers by itself). A job purged since has no file: its events do not match `--job`.
"""

from __future__ import annotations

import functools
import json
import os
import pwd
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from spool.catalog import Catalog
from spool.errors import InvalidInput, SpoolError
from spool.files import list_names
from spool.timeutil import MAX_DURATION, UTC, human_time, parse_duration, parse_time

_DAY_FILE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})\.jsonl", re.ASCII)
_CHUNK = 1 << 20
_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_EPOCH = datetime(1, 1, 1, tzinfo=UTC)


def parse_since(value: str, now: datetime) -> datetime:
    """`--since`: a duration back from now (`90s`, `15m`, `2h`, `1d`) or a time (RFC 3339; a
    time without an offset is this host's local time)."""
    try:
        return now - timedelta(seconds=min(parse_duration(value, "--since"), MAX_DURATION))
    except (InvalidInput, OverflowError):
        pass
    try:
        return parse_time(value, "--since", local_naive=True)
    except InvalidInput:
        raise InvalidInput(f"--since {value!r} is neither a duration (90s, 15m, 2h, 1d) nor "
                           "a time (2026-12-03T09:00:00Z, or local: 2026-12-03 09:00)") from None


def event_time(event: dict[str, Any]) -> datetime:
    """When an event happened (an unreadable time sorts first)."""
    try:
        return parse_time(event.get("time"))
    except InvalidInput:
        return _EPOCH


@dataclass
class Filter:
    """Which events to show; `job` resolves job types through the catalog, cached."""

    catalog: Catalog
    since: datetime | None = None
    job_id: str | None = None
    job: str | None = None
    types: dict[str, str | None] = field(default_factory=dict)

    def job_type(self, event: dict[str, Any]) -> str | None:
        if isinstance(event.get("job"), str):
            return str(event["job"])
        job_id = str(event.get("id") or "")
        if job_id not in self.types:
            try:
                self.types[job_id] = self.catalog.get(job_id)[0].job or None
            except (SpoolError, OSError, ValueError):
                self.types[job_id] = None  # purged, or never a job: cached as unknown
        return self.types[job_id]

    def day_wanted(self, day: str) -> bool:
        """Whether a day file may hold events since `since` (days are UTC days)."""
        return self.since is None or day >= self.since.strftime("%Y-%m-%d.jsonl")

    def __call__(self, event: dict[str, Any]) -> bool:
        if self.job_id is not None and event.get("id") != self.job_id:
            return False
        if self.since is not None and event_time(event) < self.since:
            return False
        return self.job is None or self.job_type(event) == self.job


def _read_from(path: str, offset: int) -> bytes:
    """The bytes of a regular file from `offset` (never through a link; b"" when gone)."""
    try:
        fd = os.open(path, _FLAGS)
    except OSError:
        return b""
    try:
        os.lseek(fd, offset, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, _CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return b""
    finally:
        os.close(fd)


def _parse(lines: bytes, host: str) -> Iterator[dict[str, Any]]:
    for line in lines.splitlines():
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(event, dict):
            event.setdefault("host", host)
            yield event


class Reader:
    """The journal of every host; `poll()` returns the complete lines added since the last
    poll (all of them the first time), merged in time order."""

    def __init__(self, catalog: Catalog, keep: Filter) -> None:
        self.catalog = catalog
        self.keep = keep
        self.offsets: dict[str, int] = {}

    def files(self) -> Iterator[tuple[str, str]]:
        """(host, path) of every day file, oldest day first within each host."""
        root = self.catalog.layout.events
        for host in sorted(list_names(root)):
            if host.startswith("."):
                continue
            for day in sorted(list_names(root / host)):
                if _DAY_FILE.fullmatch(day) and self.keep.day_wanted(day):
                    yield host, os.path.join(root, host, day)

    def poll(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for host, path in self.files():
            offset = self.offsets.get(path, 0)
            data = _read_from(path, offset)
            complete = data.rfind(b"\n") + 1  # a line still being written waits its turn
            if complete:
                self.offsets[path] = offset + complete
                found.extend(e for e in _parse(data[:complete], host) if self.keep(e))
        found.sort(key=event_time)  # stable: one host's lines keep their order
        return found


def read_events(catalog: Catalog, keep: Filter) -> list[dict[str, Any]]:
    """Every event the filter keeps, in time order."""
    return Reader(catalog, keep).poll()


_MAIN = ("time", "host", "event", "id")


def format_event(event: dict[str, Any], host_width: int = 8, id_width: int = 35) -> str:
    """One aligned line: local time with offset, host, event, id, then the other fields."""
    when = event_time(event)
    shown = human_time(when) if when != _EPOCH else str(event.get("time"))
    extra = " ".join(f"{key}={_value(value)}" if key != "uid" else f"user={user_name(value)}"
                     for key, value in event.items() if key not in _MAIN and value is not None)
    return (f"{shown:<25}  {event.get('host')!s:<{host_width}}  "
            f"{event.get('event')!s:<8}  {event.get('id')!s:<{id_width}}  {extra}").rstrip()


def user_name(uid: object) -> str:
    """The name of the user `uid` on this host, else the number as written (the journal of
    another host may name a uid this one does not know)."""
    if isinstance(uid, int) and not isinstance(uid, bool):
        return _name_of(uid)
    return _value(uid)


@functools.lru_cache(maxsize=256)  # one passwd lookup per uid, not per line
def _name_of(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError, ValueError):
        return str(uid)


def _value(value: object) -> str:
    if isinstance(value, str) and value and " " not in value and "=" not in value:
        return value
    return json.dumps(value, ensure_ascii=False)


def format_events(events: list[dict[str, Any]]) -> list[str]:
    """Lines aligned on the widest host and id of the listing."""
    host_width = max([8, *(len(str(e.get("host"))) for e in events)])
    id_width = max([35, *(len(str(e.get("id"))) for e in events)])
    return [format_event(e, host_width, id_width) for e in events]
