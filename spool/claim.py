"""Choosing and claiming work: a sorted in-memory view of pending/ and the claim under the
host lock (DESIGN §4).

The view holds names only (plus the slots/after/attempts of names it has looked at), so a
claim costs the same with 100 or 100,000 jobs waiting. It is refreshed from a listing when it
runs dry or every `refresh` seconds, and fed names from inotify in between.
"""

from __future__ import annotations

import bisect
import fcntl
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator, NamedTuple

from spool.errors import InvalidInput
from spool.files import list_names
from spool.layout import is_temporary_name, parse_pending_name
from spool.ledger import Ledger
from spool.store import Store
from spool.timeutil import due_stamp


class JobInfo(NamedTuple):
    """What claiming needs from a pending body (None fields: the body did not parse)."""

    slots: int
    after: tuple[str, ...]
    attempts: int
    valid: bool


@dataclass
class Claimed:
    """A job this worker now owns: its processing file, held open under flock."""

    path: Path
    fd: int
    inode: int
    body: dict | None
    attempt: int
    error: str | None = None


class PendingView:
    """Sorted canonical pending names, and the drops seen at the last refresh."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.names: list[str] = []
        self.drops: list[str] = []
        self.info: dict[str, JobInfo] = {}
        self.refreshed_at = float("-inf")

    def refresh(self, monotonic_now: float) -> None:
        names, drops = [], []
        for name in list_names(self.store.layout.pending):
            if parse_pending_name(name):
                names.append(name)
            elif not is_temporary_name(name):
                drops.append(name)
        names.sort()
        self.names, self.drops, self.refreshed_at = names, drops, monotonic_now
        if self.info:
            present = set(names)
            self.info = {n: i for n, i in self.info.items() if n in present}

    def add(self, name: str) -> None:
        """A name reported by inotify."""
        if parse_pending_name(name):
            index = bisect.bisect_left(self.names, name)
            if index == len(self.names) or self.names[index] != name:
                self.names.insert(index, name)
        elif not is_temporary_name(name) and name not in self.drops:
            self.drops.append(name)

    def remove(self, name: str) -> None:
        index = bisect.bisect_left(self.names, name)
        if index < len(self.names) and self.names[index] == name:
            del self.names[index]
        self.info.pop(name, None)

    def due(self, now: datetime) -> Iterator[str]:
        """Names due at `now`, in claim order; within each priority, due ones come first."""
        stamp = due_stamp(now)
        index = 0
        while index < len(self.names):
            name = self.names[index]
            if name[2:25] <= stamp:
                yield name
                # the caller may have removed `name`: step past it either way
                if index < len(self.names) and self.names[index] == name:
                    index += 1
            elif name[0] == "9":
                return
            else:  # the rest of this priority is in the future: skip to the next one
                index = bisect.bisect_left(self.names, f"{int(name[0]) + 1}-")

    def next_due(self, now: datetime) -> str | None:
        """The earliest DUE stamp still in the future (for how long to sleep)."""
        stamp = due_stamp(now)
        future = [n[2:25] for n in self.names if n[2:25] > stamp]
        return min(future) if future else None

    def job_info(self, name: str) -> JobInfo | None:
        """Slots, after and attempts of a pending job; None when the file is gone."""
        if name in self.info:
            return self.info[name]
        try:
            body = self.store.read(self.store.layout.pending / name)
            info = JobInfo(_int(body.get("slots"), 1), tuple(body.get("after") or ()),
                           _int(body.get("attempts"), 0), True)
        except FileNotFoundError:
            return None
        except (OSError, InvalidInput):
            info = JobInfo(1, (), 0, False)
        self.info[name] = info
        return info


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def dependencies_met(store: Store, after: tuple[str, ...]) -> bool:
    """Whether every job in `after` is in done/ with outcome completed."""
    for dep in after:
        try:
            if store.read(store.layout.done / f"{dep}.json").get("outcome") != "completed":
                return False
        except (OSError, InvalidInput):
            return False
    return True


def claim_due(store: Store, view: PendingView, ledger: Ledger, now: datetime,
              worker_pid: int, limit: int) -> list[Claimed]:
    """Claim due jobs that fit the free slots, in order; call under the host lock."""
    claimed: list[Claimed] = []
    host_dir = store.layout.host_processing(store.host)
    free = ledger.free
    for name in view.due(now):
        if free <= 0 or len(claimed) >= limit:
            break
        info = view.job_info(name)
        if info is None:
            view.remove(name)
            continue
        job_id = parse_pending_name(name).id  # type: ignore[union-attr]
        if info.slots > ledger.capacity:
            ledger.unfit[job_id] = info.slots
            continue
        if info.slots > free or (info.after and not dependencies_met(store, info.after)):
            continue
        attempt = info.attempts + 1
        path = store.claim(name, job_id, attempt, host_dir, now)
        view.remove(name)
        if path is None:
            continue
        ledger.unfit.pop(job_id, None)
        held = hold_processing_file(store, path, attempt, info.valid)
        ledger.running[job_id] = {"slots": info.slots if held.body else 1, "attempt": attempt,
                                  "worker_pid": worker_pid, "task_pid": None,
                                  "started_at": now.isoformat()}
        free -= ledger.running[job_id]["slots"]
        claimed.append(held)
    return claimed


def hold_processing_file(store: Store, path: Path, attempt: int, valid: bool = True) -> Claimed:
    """Open and flock a just-claimed processing file, and read its body."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    inode = os.fstat(fd).st_ino
    body, error = None, None
    try:
        body = store.read(path)
    except (OSError, InvalidInput) as exc:
        error = str(exc)
    return Claimed(path, fd, inode, body, attempt, error)


def try_lock_orphan(path: Path) -> int | None:
    """An fd holding the flock of a processing file whose owner is gone; None if it is held."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd
