"""The store: the only module that renames, links or unlinks job files.

Protocol (docs/protocol.md, Transitions): new content is written to a private file in `tmp/` (its
name carries host, pid and a random part, see `layout.tmp_name`) and renamed into place only once
complete. Terminal moves are *move, then fill*: the outcome is staged as
`tmp/finish-STATE,HOST,PID,RAND, ID.N`, the processing (or pending) file is renamed to
`STATE/ID.json` — the commit — and the staged body is renamed over it. Requeues are *stage, then
move*, preceded by a rename of the source into a hold `tmp/VERB,HOST,PID,RAND,ID.N` so that of
several racing movers exactly one proceeds. The worker's flock descriptor is closed after the
commit rename and before any rename replaces or unlinks the file it holds (on NFS that would
silly-rename it). Every rename that fails with ENOENT is checked against its destination (NFS may
report ENOENT for a retransmitted rename that succeeded). `spool.recovery` completes or rolls back
whatever a crash leaves half done, from these names alone.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

from spool.catalog import Catalog
from spool.config import Config
from spool.files import (discard, file_mode, fsync_dir, list_names, make_dir, stage,
                         touch_marker)
from spool.job import encode
from spool.journal import Journal
from spool.layout import (attempt_subject, pending_name, processing_name, tmp_name)
from spool.markers import Markers
from spool.timeutil import parse_time

log = logging.getLogger("spool.store")

# verb -> (from state, to state): every legal move of a job file. The CLI's verbs map onto it.
MOVES: dict[str, tuple[str, str | None]] = {
    "submit": ("tmp", "pending"),
    "adopt": ("pending", "pending"),
    "reject": ("pending", "dead"),
    "claim": ("pending", "processing"),
    "finish": ("processing", "done"),
    "bury": ("processing", "dead"),
    "requeue": ("processing", "pending"),
    "cancel": ("pending", "done"),
    "hold": ("pending", "held"),
    "release": ("held", "pending"),
    "retry": ("dead", "pending"),
    "purge": ("done", None),
}


class OwnershipLost(Exception):
    """The processing file is no longer this worker's: another mover won the rename."""


class Store(Catalog):
    """Job-file transitions on one spool, as seen from one host."""

    def __init__(self, root: Path, config: Config, host: str) -> None:
        super().__init__(root, config, host)
        self.mode = file_mode(self.layout.root)
        self.markers = Markers(self)
        self.journal = Journal(self.layout.events, host, self.mode)
        self._pending_dir = str(self.layout.pending)  # hot path: plain strings, no pathlib
        self._tmp_dir = str(self.layout.tmp)

    @property
    def durable(self) -> bool:
        return self.config.defaults.durable

    def _sync(self, directory: Path | str) -> None:
        if self.durable:
            fsync_dir(directory)

    def _stage(self, body: dict[str, Any], tag: str = "stage", subject: str | None = None) -> str:
        return stage(self._tmp_dir, encode(body), self.durable, tag, host=self.host,
                     subject=subject, mode=self.mode)

    def stage_data(self, data: bytes, tag: str, subject: str | None = None) -> str:
        """A private staged file of this host (markers, cron fires) for a link or rename."""
        return stage(self._tmp_dir, data, self.durable, tag, host=self.host, subject=subject,
                     mode=self.mode)

    def scratch_path(self, tag: str, subject: str | None = None) -> Path:
        """A fresh private name in tmp/ (results, probes)."""
        return self.layout.tmp / tmp_name(tag, self.host, os.getpid(), subject)

    # -- submit --------------------------------------------------------------------------

    def submit(self, body: dict[str, Any], now: datetime, *, exclusive_id: bool = False) -> str:
        """Write a normalized body into pending/; the id and unique key guarded by link(2)."""
        return self.submit_many([body], now, exclusive_id=exclusive_id)[0]

    def submit_many(self, bodies: list[dict[str, Any]], now: datetime, *,
                    exclusive_id: bool = False) -> list[str]:
        """Write several bodies with one directory fsync at the end."""
        done: list[str] = []
        for body in bodies:
            markers = self.markers.take_all(body, now, exclusive_id)
            try:
                staged = self._stage(body)
                try:
                    os.rename(staged, f"{self._pending_dir}/{self._pending_name(body)}")
                except BaseException:
                    discard(staged)
                    raise
            except BaseException:
                for marker in markers:
                    self.markers.release(marker, body["id"])
                raise
            done.append(body["id"])
        self._sync(self._pending_dir)
        self.journal.record_many(now, "submit", done, host=self.host)
        return done

    @staticmethod
    def _pending_name(body: dict[str, Any]) -> str:
        return pending_name(body["priority"], parse_time(body["run_at"]), body["id"])

    def processing_paths_of(self, job_id: str, attempt: int) -> list[Path]:
        """`processing/*/ID.N.json` files of one attempt (normally none or one)."""
        name = processing_name(job_id, attempt)
        return [self.layout.host_processing(host) / name
                for host in list_names(self.layout.processing)
                if os.path.lexists(self.layout.host_processing(host) / name)]

    # -- claiming, finishing, requeueing -------------------------------------------------

    def claim(self, name: str, job_id: str, attempt: int, host_dir: Path,
              now: datetime, inode: int | None = None, mtime_ns: int | None = None
              ) -> Path | None:
        """Rename a pending file into `host_dir` as `ID.N.json` and make its mtime fresh
        (docs/protocol.md, Liveness); None when another claimer won. After an ENOENT, an
        existing destination is this claim that NFS misreported only when it is still the
        file this claimer read, untouched (`inode`, `mtime_ns`): the caller, under the host lock,
        skips jobs that live workers of the host hold, and a dead worker's claim of the same
        file had made its mtime fresh — that orphan is left to recovery."""
        dest = host_dir / processing_name(job_id, attempt)
        try:
            os.rename(f"{self._pending_dir}/{name}", dest)
        except FileNotFoundError:
            try:
                found = os.lstat(dest)
            except FileNotFoundError:
                return None
            if (inode is not None and found.st_ino != inode) or \
                    (mtime_ns is not None and found.st_mtime_ns != mtime_ns):
                return None
        try:
            os.utime(dest, follow_symlinks=False)
        except FileNotFoundError:
            return None  # reaped within microseconds: not ours any more
        self.journal.record(now, "claim", job_id, host=self.host, attempt=attempt)
        return dest

    def finish(self, source: Path, body: dict[str, Any], state: str, now: datetime,
               inode: int | None = None, lock_fd: int | None = None) -> Path:
        """Move then fill: `source` (processing or pending) becomes `STATE/ID.json` with `body`.

        `lock_fd` (the worker's flock on `source`) is closed in every case, after the commit
        and before the fill. OwnershipLost when another mover took `source` first.
        """
        job_id = body["id"]
        dest = self.layout.state_dir(state) / f"{job_id}.json"
        try:
            staged = self._stage(body, f"finish-{state}",
                                 attempt_subject(job_id, body.get("attempts", 0)))
        except BaseException:
            _close(lock_fd)
            raise
        try:
            if os.path.lexists(dest):  # a stale copy of a finished job: never overwrite it
                raise OwnershipLost(f"{dest} already exists; {source} is a stale copy")
            try:
                os.rename(source, dest)
            except FileNotFoundError:
                if inode is None or _inode(dest) != inode:
                    raise OwnershipLost(f"{source} was taken by another process") from None
        except OwnershipLost:
            discard(staged)
            raise
        finally:
            _close(lock_fd)
        try:
            os.rename(staged, dest)
        except FileNotFoundError:
            pass  # this host's recovery completed the fill from our staged outcome
        self._sync(dest.parent)
        self.markers.release_unique(body)
        verb = "finish" if state == "done" else "bury"
        self.journal.record(now, verb, job_id, host=self.host, outcome=body.get("outcome"))
        return dest

    def complete_finish(self, source: Path, staged: Path, state: str, job_id: str,
                        lock_fd: int | None = None) -> bool:
        """Recovery: an orphan whose outcome was staged moves, then is filled; False if taken.
        `lock_fd` (the recoverer's flock on `source`) is closed after the move, before the
        fill."""
        dest = self.layout.state_dir(state) / f"{job_id}.json"
        try:
            if os.path.lexists(dest):
                return False
            try:
                os.rename(source, dest)
            except FileNotFoundError:
                return False
        finally:
            _close(lock_fd)
        return self.complete_fill(staged, dest)

    def return_drop(self, source: Path, job_id: str) -> Path:
        """Recovery: a held drop (or a rejected drop's original) goes back to pending/ as
        `ID.json` — or under a fresh name beside it, never over another drop — to be adopted
        again."""
        dest = self.layout.pending / f"{job_id}.json"
        if os.path.lexists(dest):
            dest = self.layout.pending / f"{job_id}.{secrets.token_hex(4)}.json"
        os.rename(source, dest)
        return dest

    def complete_fill(self, staged: Path, dest: Path) -> bool:
        """Recovery: rename a staged outcome over the terminal file it belongs to."""
        try:
            os.rename(staged, dest)
        except FileNotFoundError:
            return False
        self._sync(dest.parent)
        return True

    def hold(self, source: Path, tag: str, job_id: str, attempt: int,
             inode: int | None = None) -> Path:
        """Take `source` out of its state directory into a hold in tmp/ (the arbiter)."""
        hold = self.layout.tmp / tmp_name(tag, self.host, os.getpid(),
                                          attempt_subject(job_id, attempt))
        try:
            os.rename(source, hold)
        except FileNotFoundError:
            if inode is None or _inode(hold) != inode:
                raise OwnershipLost(f"{source} was taken by another process") from None
        return hold

    def requeue(self, source: Path, body: dict[str, Any], now: datetime, verb: str = "requeue",
                inode: int | None = None, lock_fd: int | None = None,
                attempt: int | None = None) -> Path:
        """Stage then move: `source` (a processing or dead file) returns to pending/ as `body`.
        The body is staged before `source` is held, so that a full disk leaves `source` where
        it stands (its worker keeps it and retries). `lock_fd` is closed in every case, once
        the file is held (before the hold is unlinked) or when nothing moved."""
        try:
            staged = self._stage(body)
        except BaseException:
            _close(lock_fd)
            raise
        try:
            hold = self.hold(source, verb, body["id"],
                             attempt if attempt is not None else body.get("attempts", 0), inode)
        except BaseException:
            discard(staged)
            raise
        finally:
            _close(lock_fd)
        return self.requeue_hold(hold, body, now, verb, staged)

    def requeue_hold(self, hold: Path, body: dict[str, Any], now: datetime, verb: str,
                     staged: str | None = None) -> Path:
        """Second half of a requeue: the new body (staged here unless given) into pending/,
        then drop the hold."""
        staged = staged or self._stage(body)
        dest = self.layout.pending / self._pending_name(body)
        self._move_staged(hold, staged, dest)
        self.journal.record(now, verb, body["id"], host=self.host, due=body["run_at"],
                            outcome=(body.get("history") or [{}])[-1].get("outcome"))
        return dest

    def set_aside(self, path: Path, reason: str, now: datetime,
                  job_id: str | None = None) -> Path | None:
        """Take a redundant copy of a job out of its state directory without deleting it
        (docs/protocol.md, Copies): `tmp/aside,HOST,PID,RAND,NAME`, kept until `fsck`
        or an operator deals with it. None when the file was gone already."""
        aside = self.set_aside_as(path, path.name, reason, now, job_id)
        if aside is not None:
            log.warning("set aside %s as %s: %s", path, aside.name, reason)
        return aside

    # -- operator verbs ------------------------------------------------------------------

    def cancel_pending(self, name: str, body: dict[str, Any], now: datetime) -> bool:
        """Move a pending job to done/ as cancelled; False when a worker claimed it first."""
        try:
            self.finish(self.layout.pending / name, body, "done", now)
        except OwnershipLost:
            return False
        return True

    def cancel_held(self, body: dict[str, Any], now: datetime) -> bool:
        """Move a held job to done/ as cancelled; False when it moved meanwhile (released)."""
        try:
            self.finish(self.layout.held / f"{body['id']}.json", body, "done", now)
        except OwnershipLost:
            return False
        return True

    def hold_pending(self, name: str, body: dict[str, Any], now: datetime) -> Path:
        """Stage then move: a pending job goes to `held/ID.json` (docs/protocol.md, Transitions),
        keeping its unique key. OwnershipLost when a worker claimed it (or another mover took it)
        first."""
        job_id = body["id"]
        make_dir(self.layout.held, self.mode)  # a spool made before held/ existed
        staged = self._stage(body)
        try:
            hold = self.hold(self.layout.pending / name, "hold", job_id, 0)
        except BaseException:
            discard(staged)
            raise
        dest = self.complete_hold(hold, body, staged)
        self.journal.record(now, "hold", job_id, host=self.host, due=body.get("run_at"),
                            priority=body.get("priority"))
        return dest

    def complete_hold(self, hold: Path, body: dict[str, Any], staged: str | None = None) -> Path:
        """Second half of a hold (also recovery's): the body into held/, then drop the hold.
        A copy already in held/ is never replaced: the hold goes back to pending/."""
        staged = staged or self._stage(body)
        dest = self.layout.held / f"{body['id']}.json"
        if os.path.lexists(dest):
            discard(staged)
            os.rename(hold, self.layout.pending / self._pending_name(body))
            raise OwnershipLost(f"{dest} already exists: the job stays pending")
        self._move_staged(hold, staged, dest)
        return dest

    def _move_staged(self, hold: Path, staged: str, dest: Path) -> None:
        """The move of *stage, then move*: the staged body becomes `dest` while the hold is
        still ours, then the hold goes."""
        try:
            if not os.path.lexists(hold):  # another host's recovery took it while we stalled
                raise OwnershipLost(f"{hold} was taken by another process")
            os.rename(staged, dest)
        except BaseException:
            discard(staged)
            raise
        self._sync(dest.parent)
        discard(hold)

    def release_held(self, body: dict[str, Any], now: datetime) -> Path:
        """Stage then move: a held job returns to pending/ under its canonical name, with its
        priority and due time. OwnershipLost when another mover took it first."""
        source = self.layout.held / f"{body['id']}.json"
        return self.requeue(source, body, now, verb="release", attempt=0)

    def request_cancel(self, job_id: str) -> None:
        """Leave `cancel/ID` for the worker running the job (a planted link is refused)."""
        touch_marker(self.layout.cancel_path(job_id), self.mode)

    def clear_cancel(self, job_id: str) -> None:
        discard(self.layout.cancel_path(job_id))

    def retry_invalid(self, record: Path, original: Path, job_id: str, now: datetime) -> None:
        """Put a rejected drop back into pending/ as it was dropped, to be adopted again."""
        hold = self.hold(record, "retry", job_id, 0)
        try:
            os.rename(original, self.layout.pending / f"{job_id}.json")
        except FileNotFoundError:
            os.rename(hold, record)
            raise
        discard(hold)
        self.journal.record(now, "retry", job_id, host=self.host)

    def purge(self, path: Path, now: datetime) -> bool:
        """Delete a finished job file with its original, log and id marker."""
        job_id = path.name[:-5]
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        discard(path.with_suffix(".orig"))
        discard(self.layout.log_path(job_id))
        discard(self.markers.marker_path("id", job_id))
        self.journal.record(now, "purge", job_id, host=self.host)
        return True

    # -- dropped files -------------------------------------------------------------------

    def take_drop(self, name: str, job_id: str) -> Path | None:
        """Hold a dropped file for adoption; None when another adopter took it."""
        try:
            return self.hold(self.layout.pending / name, "adopt", job_id, 0)
        except OwnershipLost:
            return None

    def adopt(self, hold: Path, body: dict[str, Any], now: datetime, exclusive_id: bool,
              token: str, pending_ids: set[str] | None = None) -> str:
        """A held drop, validated, enters pending/ under its canonical name. A filesystem
        fault (a full disk) hands the drop back to pending/ as `ID.json`, adopted again later
        to the same id, rather than leaving it in tmp/ while its adopter lives on."""
        markers = self.markers.take_all(body, now, exclusive_id, token, pending_ids)
        try:
            self.requeue_hold(hold, body, now, "adopt")
        except OSError:
            for marker in markers:
                self.markers.release(marker, body["id"])
            self.return_drop(hold, body["id"])
            raise
        return str(body["id"])

    def reject(self, hold: Path, record: dict[str, Any], now: datetime) -> Path:
        """Move then fill: the original becomes `dead/ID.orig`, then `dead/ID.json` explains."""
        job_id = record["id"]
        original = self.layout.dead / f"{job_id}.orig"
        staged = self._stage(record, "reject", attempt_subject(job_id, 0))
        try:
            os.rename(hold, original)
        except BaseException:
            discard(staged)
            raise
        dest = self.layout.dead / f"{job_id}.json"
        os.rename(staged, dest)
        self._sync(self.layout.dead)
        self.journal.record(now, "reject", job_id, host=self.host, error=record.get("error"))
        return dest

    # -- fsck ----------------------------------------------------------------------------
    # The repairs of `spool fsck` (spool/fsck*.py). None of them replaces an existing file:
    # a destination that is taken is FileExistsError, and fsck sets the file aside instead.

    def relocate(self, path: Path, dest: Path, now: datetime, job_id: str,
                 reason: str) -> Path:
        """Rename a job file to `dest` (its canonical name, the terminal directory its
        outcome names, or today's tmp/ name of a legacy hold); FileExistsError when taken."""
        if os.path.lexists(dest):
            raise FileExistsError(errno.EEXIST, "already exists", str(dest))
        os.rename(path, dest)
        for directory in {path.parent, dest.parent}:
            self._sync(directory)
        self.journal.record(now, "fsck", job_id, host=self.host, path=str(path),
                            to=str(dest), error=reason)
        return dest

    def set_aside_as(self, path: Path, label: str, reason: str, now: datetime,
                     job_id: str | None = None) -> Path | None:
        """Set a file aside as `tmp/aside,HOST,PID,RAND,LABEL` (commas and slashes of LABEL
        become `~`, so the name still parses). None when the file was gone already."""
        label = label.replace(",", "~").replace("/", "~")
        aside = self.layout.tmp / tmp_name("aside", self.host, os.getpid(), label)
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return None
        for directory in {path.parent, self.layout.tmp}:
            self._sync(directory)
        self.journal.record(now, "aside", job_id or "", host=self.host, path=str(path),
                            to=aside.name, error=reason)
        return aside

    def bury_unreadable(self, path: Path, record: dict[str, Any], now: datetime) -> Path:
        """Move then fill, never replacing: `path` becomes `dead/ID.orig` (unless it is that
        file already, a rejection cut short) and `dead/ID.json` is created as `record` by
        link(2); FileExistsError when either name is taken by another file."""
        job_id = record["id"]
        original = self.layout.dead / f"{job_id}.orig"
        dest = self.layout.dead / f"{job_id}.json"
        if path != original:
            if os.path.lexists(original) or (path != dest and os.path.lexists(dest)):
                raise FileExistsError(errno.EEXIST, "already exists", str(dest))
            os.rename(path, original)
        staged = self._stage(record, "reject")
        try:
            os.link(staged, dest)
        except FileExistsError:
            if os.stat(staged).st_nlink < 2:  # NFS: the link happened, its reply was lost
                raise
        finally:
            discard(staged)
        for directory in {path.parent, self.layout.dead}:
            self._sync(directory)
        self.journal.record(now, "reject", job_id, host=self.host, error=record.get("error"))
        return dest


def _close(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def _inode(path: Path) -> int | None:
    try:
        return os.lstat(path).st_ino
    except OSError:
        return None
