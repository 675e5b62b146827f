"""Choosing and claiming work: a sorted in-memory view of pending/ and the claim under the
host lock (docs/protocol.md, Slots and Liveness).

The view holds names only (plus the slots/after/attempts of names it has looked at), so a
claim costs the same with 100 or 100,000 jobs waiting. It is refreshed from a listing when it
runs dry or every `refresh` seconds, and fed names from inotify in between. The view of one
worker can be stale: a job another worker of this host recorded in the ledger is theirs, even
when our claiming rename reports ENOENT with the destination in place.

The names are packed (`spool.packednames`, 27 bytes each): 1,000,000 fit a worker's memory.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple
from collections.abc import Callable, Container, Iterator

from spool.allow import carry_owner
from spool.dependencies import DependencyPass, dependencies
from spool.errors import InvalidInput
from spool.files import iter_names
from spool.job import normalize
from spool.layout import is_temporary_name, parse_pending_name
from spool.ledger import Ledger
from spool.limits import Limits, Token
from spool.limitspec import PoolRef, pools_of
from spool.packednames import SortedNames
from spool.parking import Parking, reopen_parked
from spool.recovery import settle
from spool.store import Store
from spool.timeutil import due_stamp, format_time

log = logging.getLogger("spool.claim")
GONE_ERRNOS = (errno.ENOENT, errno.ESTALE)  # the file was moved away: not ours
LISTING_TICK = 4096  # names of a listing between two calls of PendingView.during_listing


class JobInfo(NamedTuple):
    """What claiming needs from a pending body (None fields: the body did not parse)."""

    slots: int
    after: tuple[tuple[str, str], ...]  # (kind, id) of every dependency (spool.dependencies)
    attempts: int
    valid: bool
    inode: int | None = None  # of the pending file read, and its mtime: tells our claim
    mtime_ns: int | None = None  # from another claimer's, which made the mtime fresh
    job: str = ""  # the job type, for pauses
    # limit pools it needs a token of (docs/protocol.md, Limit tokens)
    pools: tuple[PoolRef, ...] = ()


@dataclass
class Claimed:
    """A job this worker now owns: its processing file, held open under flock (fd None: the
    file could not be held — a link, a FIFO, unreadable — and `error` says why)."""

    path: Path
    fd: int | None
    inode: int
    body: dict[str, Any] | None
    attempt: int
    error: str | None = None
    dev: int | None = None
    owner: int | None = None  # uid owning the file held (fstat): who submitted it (allow)
    tokens: list[Token] = field(default_factory=list)  # limit tokens, released after the move

    @property
    def job_id(self) -> str:
        return self.path.name.rsplit(".", 2)[0]

    def still_ours(self) -> bool | None:
        """Whether the processing file is still the one claimed (same inode at the same path);
        None when that cannot be told now (an I/O error: look again later)."""
        try:
            info = os.lstat(self.path)
        except OSError as exc:
            return False if exc.errno in GONE_ERRNOS else None
        return info.st_ino == self.inode and (self.dev is None or info.st_dev == self.dev)


class PendingView:
    """Sorted canonical pending names, and the drops seen at the last refresh."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.names = SortedNames()
        self.drops: dict[str, None] = {}  # an ordered set: a burst of thousands stays cheap
        self.info: dict[str, JobInfo] = {}
        self.refreshed_at = float("-inf")
        self.parked = Parking()  # names waiting for a full limit pool, out of the walk
        # called every LISTING_TICK names of a listing: a worker's heartbeats go on during a
        # listing of 1,000,000 names, which takes seconds, more on NFS
        self.during_listing: Callable[[], None] | None = None

    @property
    def ids(self) -> Container[str]:
        """The ids of `names` and of the parked names: is a dependency pending?
        (spool.dependencies)"""
        return _PendingIds(self.names.ids, self.parked.ids)

    def refresh(self, monotonic_now: float) -> None:
        drops: list[str] = []

        def keep(name: str) -> bool:  # a name that does not pack: canonical, or a drop
            if parse_pending_name(name):
                return True
            if not is_temporary_name(name):
                drops.append(name)
            return False

        # the old names go first (27 MB at 1,000,000 pending): a listing that fails leaves
        # the view empty and never listed, so that whoever asks next (a step, a burst
        # worker's last look) lists again rather than trust it
        self.names, self.refreshed_at = SortedNames(), float("-inf")
        names = SortedNames(self._listing(), keep)
        self.names, self.drops, self.refreshed_at = names, dict.fromkeys(drops), monotonic_now
        if self.info:
            self.info = {n: i for n, i in self.info.items() if n in names}
        self.parked.unparked(self.names)

    def _listing(self) -> Iterator[str]:
        for count, name in enumerate(iter_names(self.store.layout.pending), 1):
            if count % LISTING_TICK == 0 and self.during_listing is not None:
                self.during_listing()
            yield name

    def add(self, name: str) -> None:
        """A name reported by inotify."""
        if parse_pending_name(name):
            self.names.add(name)
        elif not is_temporary_name(name):
            self.drops[name] = None

    def park(self, name: str, pool: PoolRef) -> None:
        """Set aside a name whose pool is full, keeping what was read of it."""
        self.names.discard(name)
        self.parked.add(pool, name)

    def remove(self, name: str) -> None:
        self.names.discard(name)
        self.info.pop(name, None)

    def due(self, now: datetime) -> Iterator[str]:
        """Names due at `now`, in claim order; within each priority, due ones come first."""
        stamp = due_stamp(now)
        name = self.names.first()
        while name is not None:
            if name[2:25] <= stamp:
                yield name
                # the caller may have removed `name`: the walk goes on after it either way
                name = self.names.following(name)
            elif name[0] == "9":
                return
            else:  # the rest of this priority is in the future: skip to the next one
                name = self.names.first_of_priority(int(name[0]) + 1)

    def next_due(self, now: datetime) -> str | None:
        """The earliest DUE stamp still in the future (for how long to sleep)."""
        stamp, names = due_stamp(now), self.names
        future, priority = [], 0
        while priority <= 9:  # each priority's first future name, by bisection
            name = names.first_due_after(priority, stamp)
            if name is None:
                break
            if int(name[0]) == priority:
                future.append(name[2:25])
                priority += 1
            else:  # no name of the priorities between: skip them
                priority = int(name[0])
        return min(future) if future else None

    def job_info(self, name: str) -> JobInfo | None:
        """Slots, after and attempts of a pending job; None when the file is gone."""
        if name in self.info:
            return self.info[name]
        try:
            body, found = self.store.read_with_stat(self.store.layout.pending / name)
            # a hand-made canonical file may leave slots to its job type, as a drop may
            jtype = self.store.config.job_type(body.get("job") or "")
            default = jtype.slots if jtype else self.store.config.defaults.slots
            info = JobInfo(_int(body.get("slots"), default), dependencies(body),
                           _int(body.get("attempts"), 0), True, found.st_ino, found.st_mtime_ns,
                           job=str(body.get("job") or ""), pools=_pools(self.store, body))
        except FileNotFoundError:
            return None
        except (OSError, InvalidInput):
            info = JobInfo(1, (), 0, False)
        self.info[name] = info
        return info


class _PendingIds:
    def __init__(self, *parts: Container[str]) -> None:
        self.parts = parts

    def __contains__(self, job_id: object) -> bool:
        return any(job_id in part for part in self.parts)


def _pools(store: Store, body: dict[str, Any]) -> tuple[PoolRef, ...]:
    """The pools a pending job needs; none when its limits are invalid (its claim rejects it)."""
    try:
        return pools_of(store.config, body)
    except (InvalidInput, TypeError, AttributeError):
        return ()


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def end_unrunnable(store: Store, name: str, reason: str, now: datetime) -> bool:
    """End a pending job that can never run in done/ as cancelled, its error `reason`;
    False when it moved meanwhile (claimed, cancelled) or cannot be read."""
    try:
        body = store.read(store.layout.pending / name)
    except (OSError, InvalidInput):
        return False
    body = {**body, "outcome": "cancelled", "error": reason, "finished_at": format_time(now)}
    if not store.cancel_pending(name, body, now):
        return False
    log.info("cancelled %s: %s", body.get("id"), reason)
    store.journal.record(now, "cancel", str(body.get("id")), host=store.host, error=reason)
    return True


def claim_due(store: Store, view: PendingView, ledger: Ledger, now: datetime,
              worker_pid: int, limit: int,
              paused: frozenset[str] = frozenset()) -> list[Claimed]:
    """Claim due jobs that fit the free slots, in order; call under the host lock. Jobs of
    the `paused` types stay pending (the caller read the pauses once for this pass)."""
    claimed: list[Claimed] = []
    host_dir = store.layout.host_processing(store.host)
    free = ledger.free
    deps = DependencyPass(store, view.ids, ledger.blocked.values())
    complete = True  # every due job looked at: a blocked one not seen has left pending/
    limits, full = Limits(store), set[PoolRef]()  # pools found full in this pass
    reopen_parked(store, view)
    for name in view.due(now):
        if free <= 0 or len(claimed) >= limit:
            complete = False
            break
        job_id = parse_pending_name(name).id  # type: ignore[union-attr]
        if job_id in ledger.running:
            # another worker of this host claimed it (our view is stale), or a task of an
            # earlier attempt still runs: either way the job is not ours to claim now
            view.remove(name)
            continue
        info = view.job_info(name)
        if info is None:
            view.remove(name)
            continue
        if info.slots > ledger.capacity:
            ledger.unfit[job_id] = info.slots
            continue
        if info.job in paused:
            continue
        if info.after:
            verdict, reason = deps.check(job_id, info.after, store.layout.pending / name)
            ended = reason is not None and end_unrunnable(store, name, reason, now)
            if ended or verdict == "gone":
                view.remove(name)
            if verdict != "met":
                continue
        if info.slots > free:
            continue
        attempt = info.attempts + 1
        tokens, blocked = limits.take(info.pools, job_id, attempt, now, full) \
            if info.pools else ([], None)
        if blocked is not None:
            view.park(name, blocked)
            continue
        try:
            path = store.claim(name, job_id, attempt, host_dir, now, info.inode, info.mtime_ns)
        except BaseException:
            limits.give_back(tokens)
            raise
        view.remove(name)
        held = hold_processing_file(store, path, attempt, info.valid) if path else None
        if held is None:
            limits.give_back(tokens)
            continue
        held.tokens = tokens
        if held.body is not None and limits.lost(tokens) and give_back_claim(store, held, now):
            continue
        ledger.unfit.pop(job_id, None)
        ledger.running[job_id] = {"slots": info.slots if held.body else 1, "attempt": attempt,
                                  "worker_pid": worker_pid, "task_pid": None,
                                  "started_at": format_time(now)}
        free -= ledger.running[job_id]["slots"]
        claimed.append(held)
    deps.finish(ledger, now, complete)
    return claimed


def give_back_claim(store: Store, held: Claimed, now: datetime) -> bool:
    """A claim whose limit token the reaper freed while it stalled before its rename (a pool
    never holds more than `max`): the job goes back to pending/, its attempt not counted (if that
    fails, the unheld processing file is this host's orphan, for recovery to requeue). False
    for a body that is no valid job: its claim goes on, to be buried, never run."""
    try:
        body = normalize(held.body or {}, store.config, now, held.job_id)
    except Exception:  # hostile content is invalid, not a crash
        return False
    if held.owner is not None:  # requeued, the file becomes spool's: keep who owns the job
        body = carry_owner(store.config.job_type(body["job"]), held.owner, body)
    log.warning("job %s attempt %d: a limit token was freed while its claim stalled; "
                "returning it to pending/", held.job_id, held.attempt)
    lock_fd, held.fd = held.fd, None
    try:
        settle(store, held.path, body, held.attempt, "interrupted", now,
               inode=held.inode, lock_fd=lock_fd,
               error="a limit token was freed while the claim stalled before its rename")
    except OSError as exc:
        log.error("cannot return job %s to pending/: %s", held.job_id, exc)
    Limits(store).give_back(held.tokens)
    held.tokens = []
    return True


_OPEN = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


def hold_processing_file(store: Store, path: Path, attempt: int,
                         valid: bool = True) -> Claimed | None:
    """Open and flock a just-claimed processing file, and read its body; None when it is not
    ours after all (gone, or another process holds its flock). A link, a special file or an
    unreadable file comes back without a descriptor and with the error, to be rejected."""
    try:
        fd = os.open(path, _OPEN)  # O_NONBLOCK: a FIFO under a job's name never blocks us
    except OSError as exc:
        if exc.errno in GONE_ERRNOS:
            return None
        what = "is a symbolic link (never followed)" if exc.errno == errno.ELOOP \
            else f"cannot be opened: {exc.strerror or exc}"
        return Claimed(path, None, _lstat_ino(path), None, attempt, f"{path} {what}")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            os.close(fd)
            return None  # another worker's claim (its rename reply reached us as ENOENT)
        # no locks here at all (ENOLCK): nobody else on this host can lock it either
        log.warning("cannot flock %s: %s", path, exc)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return Claimed(path, None, info.st_ino, None, attempt,
                       f"{path} is not a regular file (mode {stat.filemode(info.st_mode)})")
    body, error = None, None
    try:  # from the descriptor held: what is locked is what is read
        body = store.read_open(fd, info, path)
    except (OSError, InvalidInput, RecursionError) as exc:
        error = str(exc)
    return Claimed(path, fd, info.st_ino, body, attempt, error, info.st_dev, owner=info.st_uid)


def _lstat_ino(path: Path) -> int:
    try:
        return os.lstat(path).st_ino
    except OSError:
        return 0


def relock(item: Claimed) -> int | None:
    """Hold a claimed processing file again after the store closed our descriptor (a settle
    that failed); None when it is no longer the file we claimed, or someone else holds it."""
    try:
        fd = os.open(item.path, _OPEN)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino != item.inode:
            raise OSError(errno.ESTALE, "replaced", str(item.path))
    except OSError:
        os.close(fd)
        return None
    return fd


def try_lock_orphan(path: Path) -> int | None:
    """An fd holding the flock of a processing file whose owner is gone; None if it is held
    (or is no regular file: what cannot be locked is not judged by a lock)."""
    try:
        fd = os.open(path, _OPEN)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
    except OSError:
        os.close(fd)
        return None
    return fd
