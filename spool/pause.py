"""Pause markers (docs/protocol.md, Markers): empty files `paused/job.NAME`, `paused/host.NAME`,
`paused/schedule.NAME` and `paused/all`.

A marker's presence is the whole state: `pause` creates it, `resume` removes it, and readers
take one listing of `paused/` (`read_pauses`) per pass — a worker's claim pass, a cron step —
never a look per job. A spool made before `paused/` existed has nothing paused. Entries that
are not a marker spool makes (a planted name, an editor's file) are ignored, not obeyed.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from spool.catalog import Catalog
from spool.config import Config
from spool.errors import InvalidInput
from spool.files import fsync_dir, make_dir, touch_marker
from spool.layout import validate_host
from spool.store import Store

ALL = "all"
KINDS = ("job", "host", "schedule")


@dataclass(frozen=True)
class Pauses:
    """What one listing of `paused/` says is paused."""

    markers: frozenset[str] = frozenset()

    @property
    def all(self) -> bool:
        return ALL in self.markers

    def names(self, kind: str) -> frozenset[str]:
        """The paused names of one kind (job types, hosts or schedules)."""
        prefix = f"{kind}."
        return frozenset(m[len(prefix):] for m in self.markers if m.startswith(prefix))

    def host(self, host: str) -> bool:
        """Whether nothing may be claimed on `host` (it, or everything, is paused)."""
        return self.all or f"host.{host}" in self.markers

    def job(self, job: str) -> bool:
        """Whether jobs of type `job` are not claimed anywhere."""
        return self.all or f"job.{job}" in self.markers

    def schedule(self, schedule: str) -> bool:
        """Whether `schedule` does not fire (a paused spool fires nothing either)."""
        return self.all or f"schedule.{schedule}" in self.markers


def is_marker(name: str) -> bool:
    """Whether `name` is a marker spool makes: `all`, or KIND.NAME with a valid name."""
    if name == ALL:
        return True
    kind, dot, rest = name.partition(".")
    return bool(dot) and kind in KINDS and bool(rest) and not rest.startswith(".")


def read_pauses(catalog: Catalog) -> Pauses:
    """One listing of `paused/` (nothing is paused when it is missing, or is a link: never
    followed). The last listing is reused while an lstat of `paused/` shows the same directory
    unchanged (inode, mtime and ctime: a marker made or removed since changes them), for at
    most `poll` seconds, and never on a filesystem whose mtimes look whole seconds (two
    changes within one tick would look alike): a worker's claim pass then costs one lstat
    instead of an open, two reads of the directory and a close. A directory changed in the
    last 0.1 s is listed again each time: timestamps come from a coarse clock (a few ms), so
    two changes that close together can leave the same mtime."""
    directory = catalog.layout.paused
    try:
        info = os.lstat(directory)
    except OSError:
        info = None
    key = (info.st_ino, info.st_mtime_ns, info.st_ctime_ns) if info is not None else None
    cached = _listings.get(str(directory))
    now = time.monotonic()
    if cached is not None and key is not None and cached[0] == key \
            and now - cached[1] < catalog.config.defaults.poll:
        return cached[2]
    try:
        fd = _open_paused(directory)
    except (FileNotFoundError, NotADirectoryError):
        return Pauses()
    try:
        pauses = Pauses(frozenset(n for n in os.listdir(fd) if is_marker(n)))
    finally:
        os.close(fd)
    if key is not None and info is not None and info.st_mtime_ns % 1_000_000_000 \
            and abs(time.time_ns() - info.st_mtime_ns) > 100_000_000:
        _listings[str(directory)] = (key, now, pauses)
    return pauses


_listings: dict[str, tuple[tuple[int, int, int], float, Pauses]] = {}  # read_pauses' last ones


def _open_paused(directory: Path) -> int:
    """A descriptor of `paused/`; NotADirectoryError for a link planted there (never followed,
    so `resume` never unlinks outside the spool)."""
    return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def markers_for(config: Config, jobs: tuple[str, ...] = (), hosts: tuple[str, ...] = (),
                schedules: tuple[str, ...] = (), every: bool = False) -> list[str]:
    """The marker names asked for, each name checked: job types and schedules must be
    declared in spool.toml, host names valid (InvalidInput naming the first bad one)."""
    markers = []
    for job in jobs:
        if config.job_type(job) is None:
            raise InvalidInput(f"job type {job!r} is not declared in spool.toml "
                               f"({_known(config.jobs)})")
        markers.append(f"job.{job}")
    for host in hosts:
        markers.append(f"host.{validate_host(host)}")
    for schedule in schedules:
        if schedule not in config.schedules:
            raise InvalidInput(f"schedule {schedule!r} is not declared in spool.toml "
                               f"({_known(config.schedules)})")
        markers.append(f"schedule.{schedule}")
    if every:
        markers.append(ALL)
    if not markers:
        raise InvalidInput("nothing named: give job types, --host, --schedule or --all")
    return list(dict.fromkeys(markers))


def _known(declared: Mapping[str, object]) -> str:
    return "declared: " + ", ".join(sorted(declared)) if declared else "none are declared"


def pause(store: Store, markers: list[str], now: datetime) -> dict[str, bool]:
    """Create each marker; marker -> True when this call paused it, False when it already was."""
    directory = store.layout.paused
    make_dir(directory, store.mode)  # a spool made before paused/ existed
    changed = {}
    for marker in markers:
        path = directory / marker
        changed[marker] = not os.path.lexists(path)
        touch_marker(path, store.mode)  # a link planted there is refused, never followed
        if changed[marker]:
            _record(store, now, "pause", marker)
    _sync(store, directory)
    return changed


def resume(store: Store, markers: list[str], now: datetime) -> dict[str, bool]:
    """Remove each marker; marker -> True when this call resumed it, False when it was not
    paused."""
    directory = store.layout.paused
    try:
        fd = _open_paused(directory)
    except FileNotFoundError:
        return dict.fromkeys(markers, False)
    except NotADirectoryError:
        raise OSError(errno.ENOTDIR, "exists and is not a directory (a link is never "
                      "followed)", str(directory)) from None
    changed = {}
    try:
        for marker in markers:
            changed[marker] = _unlink_in(fd, marker)  # unlink never follows a link
            if changed[marker]:
                _record(store, now, "resume", marker)
    finally:
        os.close(fd)
    if any(changed.values()):
        _sync(store, directory)
    return changed


def _unlink_in(fd: int, name: str) -> bool:
    try:
        os.unlink(name, dir_fd=fd)
        return True
    except FileNotFoundError:
        return False


def _record(store: Store, now: datetime, event: str, marker: str) -> None:
    """The journal line of a pause or resume: its subject is the marker; a job type's also
    carries `job`, so `spool events --job NAME` shows it."""
    kind, _, name = marker.partition(".")
    fields = {kind: name} if kind in ("job", "schedule") else {}  # `host` is who did it
    store.journal.record(now, event, marker, host=store.host, **fields)


def _sync(store: Store, directory: Path) -> None:
    if store.durable:
        fsync_dir(directory)
