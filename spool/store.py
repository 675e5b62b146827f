"""The store: the only module that renames, links or unlinks job files.

Protocol (DESIGN §3): new content is staged in `tmp/` and renamed into place. Terminal moves
are *move, then fill*: the outcome is staged as `tmp/ID.N.finish-STATE`, the processing (or
pending) file is renamed to `STATE/ID.json` — the commit — and the staged body is renamed over
it. Requeues are *stage, then move*, preceded by a rename of the source into a hold
`tmp/ID.N.requeue.HOST.PID` so that of several racing movers exactly one proceeds. Every
rename that fails with ENOENT is checked against its destination (NFS may report ENOENT for a
retransmitted rename that succeeded). `spool.recovery` completes or rolls back whatever a
crash leaves half done, from these names alone.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Iterator, NamedTuple

from spool.config import Config
from spool.errors import Conflict, JobNotFound
from spool.files import discard, fsync_dir, list_names, read_bounded, stage, stage_as
from spool.job import Job, decode, encode
from spool.journal import Journal
from spool.layout import (Layout, parse_pending_name, parse_processing_name, pending_name,
                          processing_name)
from spool.timeutil import parse_time

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
    "retry": ("dead", "pending"),
    "purge": ("done", None),
}
STALE_MARKER_AGE = 300.0


class OwnershipLost(Exception):
    """The processing file is no longer this worker's: another mover won the rename."""


class Located(NamedTuple):
    """Where a job file stands."""

    state: str
    path: Path


class Store:
    """Job-file transitions on one spool, as seen from one host."""

    def __init__(self, root: Path, config: Config, host: str) -> None:
        self.layout = Layout(Path(root))
        self.config = config
        self.host = host
        self.journal = Journal(self.layout.events, host)
        self._pending_dir = str(self.layout.pending)  # hot path: plain strings, no pathlib
        self._tmp_dir = str(self.layout.tmp)

    @property
    def durable(self) -> bool:
        return self.config.defaults.durable

    def _sync(self, directory: Path) -> None:
        if self.durable:
            fsync_dir(directory)

    def _stage(self, body: dict, tag: str = "stage") -> str:
        return stage(self._tmp_dir, encode(body), self.durable, tag)

    # -- reading -------------------------------------------------------------------------

    def read(self, path: Path) -> dict:
        """The body of the job file at `path` (bounded, never through a symlink)."""
        limit = self.config.defaults.max_job_bytes * 4  # spool's own files grow with history
        return decode(read_bounded(path, limit), str(path))

    def locate(self, job_id: str) -> Located | None:
        """The state and path of `job_id`, looking twice to cover a move during the scan."""
        for _ in range(2):
            for state in ("done", "dead"):
                path = self.layout.state_dir(state) / f"{job_id}.json"
                if os.path.lexists(path):
                    return Located(state, path)
            for path in self.processing_paths():
                parsed = parse_processing_name(path.name)
                if parsed and parsed[0] == job_id:
                    return Located("processing", path)
            suffix = f"-{job_id}.json"
            for name in list_names(self.layout.pending):
                if name.endswith(suffix) and (parsed := parse_pending_name(name)):
                    if parsed.id == job_id:
                        return Located("pending", self.layout.pending / name)
        return None

    def get(self, job_id: str) -> tuple[Job, dict]:
        """The Job and its stored body; JobNotFound when it is in no state."""
        for _ in range(3):
            where = self.locate(job_id)
            if where is None:
                break
            try:
                body = self.read(where.path)
            except FileNotFoundError:
                continue  # moved between locate and read: look again
            return Job.from_body(body, where.state, where.path), body
        raise JobNotFound(f"no job with id {job_id!r} in {self.layout.root}")

    def pending_names(self) -> list[str]:
        """Canonical pending names in claim order (priority, due, id)."""
        return sorted(name for name in list_names(self.layout.pending)
                      if parse_pending_name(name) is not None)

    def drop_names(self) -> list[str]:
        """Names in pending/ that a person or script dropped and spool has not adopted."""
        return [name for name in list_names(self.layout.pending)
                if not name.startswith(".") and name.endswith(".json")
                and parse_pending_name(name) is None]

    def processing_paths(self, host: str | None = None) -> Iterator[Path]:
        """Processing files of one host, or of every host."""
        hosts = [host] if host else list_names(self.layout.processing)
        for name in hosts:
            directory = self.layout.host_processing(name)
            for entry in list_names(directory):
                if parse_processing_name(entry):
                    yield directory / entry

    def terminal_names(self, state: str) -> list[str]:
        """Sorted `ID.json` names in done/ or dead/."""
        return sorted(n for n in list_names(self.layout.state_dir(state))
                      if n.endswith(".json") and not n.startswith("."))

    # -- submit --------------------------------------------------------------------------

    def submit(self, body: dict, now: datetime, *, exclusive_id: bool = False) -> str:
        """Write a normalized body into pending/; the id and unique key guarded by link(2)."""
        return self.submit_many([body], now, exclusive_id=exclusive_id)[0]

    def submit_many(self, bodies: list[dict], now: datetime, *,
                    exclusive_id: bool = False) -> list[str]:
        """Write several bodies with one directory fsync at the end."""
        done: list[str] = []
        for body in bodies:
            markers = self._take_markers(body, now, exclusive_id)
            staged = self._stage(body)
            try:
                os.rename(staged, f"{self._pending_dir}/{self._pending_name(body)}")
            except BaseException:
                discard(staged)
                for marker in markers:
                    self.release_marker(marker, body["id"])
                raise
            done.append(body["id"])
        self._sync(self.layout.pending)
        self.journal.record_many(now, "submit", done, host=self.host)
        return done

    @staticmethod
    def _pending_name(body: dict) -> str:
        return pending_name(body["priority"], parse_time(body["run_at"]), body["id"])

    # -- markers: caller-chosen ids and unique keys ---------------------------------------

    def marker_path(self, kind: str, value: str) -> Path:
        digest = hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()[:40]
        return self.layout.unique / digest

    def _take_markers(self, body: dict, now: datetime, exclusive_id: bool,
                      token: str | None = None) -> list[Path]:
        taken: list[Path] = []
        try:
            if exclusive_id:
                taken.append(self._take_marker("id", body["id"], body["id"], now, token))
            if body.get("unique"):
                taken.append(self._take_marker("key", body["unique"], body["id"], now, token))
        except BaseException:
            for marker in taken:
                self.release_marker(marker, body["id"])
            raise
        return taken

    def _take_marker(self, kind: str, value: str, job_id: str, now: datetime,
                     token: str | None = None) -> Path:
        """Create the marker by link(2) of a written file: exclusive on NFS too.

        `token` names the taker (a drop's inode): a taker that crashed and comes back finds
        its own marker and keeps it.
        """
        path = self.marker_path(kind, value)
        data = json.dumps({"id": job_id, kind: value, "token": token}).encode()
        staged = stage(self.layout.tmp, data, self.durable, "marker")
        try:
            for _ in range(3):
                try:
                    os.link(staged, path)
                    return path
                except FileExistsError:
                    if os.stat(staged).st_nlink > 1:
                        return path  # NFS: the link succeeded, its reply was lost
                    if token is not None and self._marker_field(path, "token") == token:
                        return path
                    holder = self._marker_holder(path)
                    if not self.is_stale_marker(kind, path, holder, now):
                        raise self._conflict(kind, value, holder) from None
                    self.release_marker(path, holder)
            raise Conflict(f"{kind} {value!r} is contended; try again")
        finally:
            discard(staged)

    def _conflict(self, kind: str, value: str, holder: str | None) -> Conflict:
        where = self.locate(holder) if holder else None
        state = where.state if where else "being submitted"
        if kind == "id":
            return Conflict(f"job id {value!r} already exists ({state})")
        return Conflict(f"unique key {value!r} is held by job {holder!r} ({state})")

    def _marker_holder(self, path: Path) -> str | None:
        return self._marker_field(path, "id")

    @staticmethod
    def _marker_field(path: Path, key: str) -> str | None:
        try:
            return json.loads(path.read_bytes()).get(key)
        except (OSError, ValueError, AttributeError):
            return None

    def is_stale_marker(self, kind: str, path: Path, holder: str | None, now: datetime) -> bool:
        where = self.locate(holder) if holder else None
        if where is not None:
            return kind == "key" and where.state in ("done", "dead")
        try:
            age = now.timestamp() - path.stat().st_mtime
        except FileNotFoundError:
            return True
        return age > STALE_MARKER_AGE  # a submit between link and rename is not stale

    def release_marker(self, path: Path, job_id: str | None) -> None:
        """Remove the marker if it still names `job_id`: move it aside first, so that a
        marker re-created by someone else meanwhile is put back, not deleted."""
        aside = self.layout.tmp / f"marker-release.{os.getpid()}.{path.name}"
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        if self._marker_holder(aside) in (job_id, None):
            discard(aside)
            return
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
        discard(aside)

    def release_unique(self, body: dict) -> None:
        """Free the job's unique key (it is finished, cancelled or dead)."""
        if body.get("unique"):
            self.release_marker(self.marker_path("key", body["unique"]), body["id"])

    # -- claiming, finishing, requeueing -------------------------------------------------

    def claim(self, name: str, job_id: str, attempt: int, host_dir: Path,
              now: datetime) -> Path | None:
        """Rename a pending file into `host_dir` as `ID.N.json`; None when another won."""
        dest = host_dir / processing_name(job_id, attempt)
        try:
            os.rename(f"{self._pending_dir}/{name}", dest)
        except FileNotFoundError:
            if not os.path.exists(dest):  # NFS: ENOENT for a rename that did happen
                return None
        self.journal.record(now, "claim", job_id, host=self.host, attempt=attempt)
        return dest

    def finish(self, source: Path, body: dict, state: str, now: datetime,
               inode: int | None = None) -> Path:
        """Move then fill: `source` (processing or pending) becomes `STATE/ID.json` with `body`.

        OwnershipLost when another mover took `source` first.
        """
        job_id = body["id"]
        staged = self.layout.tmp / f"{job_id}.{body['attempts']}.finish-{state}"
        stage_as(staged, encode(body), self.durable)
        dest = self.layout.state_dir(state) / f"{job_id}.json"
        try:
            os.rename(source, dest)
        except FileNotFoundError:
            if inode is None or _inode(dest) != inode:
                discard(staged)
                raise OwnershipLost(f"{source} was taken by another process") from None
        os.rename(staged, dest)
        self._sync(dest.parent)
        self.release_unique(body)
        verb = "finish" if state == "done" else "bury"
        self.journal.record(now, verb, job_id, host=self.host, outcome=body.get("outcome"))
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
        hold = self.layout.tmp / f"{job_id}.{attempt}.{tag}.{self.host}.{os.getpid()}"
        try:
            os.rename(source, hold)
        except FileNotFoundError:
            if inode is None or _inode(hold) != inode:
                raise OwnershipLost(f"{source} was taken by another process") from None
        return hold

    def requeue(self, source: Path, body: dict, now: datetime, verb: str = "requeue",
                inode: int | None = None) -> Path:
        """Stage then move: `source` (a processing or dead file) returns to pending/ as `body`."""
        hold = self.hold(source, verb, body["id"], body.get("attempts", 0), inode)
        return self.requeue_hold(hold, body, now, verb)

    def requeue_hold(self, hold: Path, body: dict, now: datetime, verb: str) -> Path:
        """Second half of a requeue: the new body into pending/, then drop the hold."""
        staged = self._stage(body)
        dest = self.layout.pending / self._pending_name(body)
        os.rename(staged, dest)
        self._sync(dest.parent)
        discard(hold)
        self.journal.record(now, verb, body["id"], host=self.host, due=body["run_at"],
                            outcome=(body.get("history") or [{}])[-1].get("outcome"))
        return dest

    # -- operator verbs ------------------------------------------------------------------

    def cancel_pending(self, name: str, body: dict, now: datetime) -> bool:
        """Move a pending job to done/ as cancelled; False when a worker claimed it first."""
        try:
            self.finish(self.layout.pending / name, body, "done", now)
        except OwnershipLost:
            return False
        return True

    def request_cancel(self, job_id: str) -> None:
        """Leave `cancel/ID` for the worker running the job."""
        fd = os.open(self.layout.cancel_path(job_id), os.O_WRONLY | os.O_CREAT, 0o644)
        os.close(fd)

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
        discard(self.marker_path("id", job_id))
        self.journal.record(now, "purge", job_id, host=self.host)
        return True

    # -- dropped files -------------------------------------------------------------------

    def take_drop(self, name: str, job_id: str) -> Path | None:
        """Hold a dropped file for adoption; None when another adopter took it."""
        try:
            return self.hold(self.layout.pending / name, "adopt", job_id, 0)
        except OwnershipLost:
            return None

    def adopt(self, hold: Path, body: dict, now: datetime, exclusive_id: bool,
              token: str) -> str:
        """A held drop, validated, enters pending/ under its canonical name."""
        self._take_markers(body, now, exclusive_id, token)
        self.requeue_hold(hold, body, now, "adopt")
        return body["id"]

    def reject(self, hold: Path, record: dict, now: datetime) -> Path:
        """Move then fill: the original becomes `dead/ID.orig`, then `dead/ID.json` explains."""
        job_id = record["id"]
        original = self.layout.dead / f"{job_id}.orig"
        os.rename(hold, original)
        staged = self._stage(record)
        dest = self.layout.dead / f"{job_id}.json"
        os.rename(staged, dest)
        self._sync(self.layout.dead)
        self.journal.record(now, "reject", job_id, host=self.host, error=record.get("error"))
        return dest


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def is_missing(exc: OSError) -> bool:
    """ENOENT or ESTALE: what a scan meets when someone moved the file it listed."""
    return exc.errno in (errno.ENOENT, errno.ESTALE)

