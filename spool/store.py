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

import os
from datetime import datetime
from pathlib import Path

from spool.catalog import Catalog
from spool.config import Config
from spool.files import discard, fsync_dir, stage, stage_as
from spool.job import encode
from spool.journal import Journal
from spool.layout import pending_name, processing_name
from spool.markers import Markers
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


class OwnershipLost(Exception):
    """The processing file is no longer this worker's: another mover won the rename."""


class Store(Catalog):
    """Job-file transitions on one spool, as seen from one host."""

    def __init__(self, root: Path, config: Config, host: str) -> None:
        super().__init__(root, config, host)
        self.markers = Markers(self)
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

    # -- submit --------------------------------------------------------------------------

    def submit(self, body: dict, now: datetime, *, exclusive_id: bool = False) -> str:
        """Write a normalized body into pending/; the id and unique key guarded by link(2)."""
        return self.submit_many([body], now, exclusive_id=exclusive_id)[0]

    def submit_many(self, bodies: list[dict], now: datetime, *,
                    exclusive_id: bool = False) -> list[str]:
        """Write several bodies with one directory fsync at the end."""
        done: list[str] = []
        for body in bodies:
            markers = self.markers.take_all(body, now, exclusive_id)
            staged = self._stage(body)
            try:
                os.rename(staged, f"{self._pending_dir}/{self._pending_name(body)}")
            except BaseException:
                discard(staged)
                for marker in markers:
                    self.markers.release(marker, body["id"])
                raise
            done.append(body["id"])
        self._sync(self.layout.pending)
        self.journal.record_many(now, "submit", done, host=self.host)
        return done

    @staticmethod
    def _pending_name(body: dict) -> str:
        return pending_name(body["priority"], parse_time(body["run_at"]), body["id"])

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
        self.markers.release_unique(body)
        verb = "finish" if state == "done" else "bury"
        self.journal.record(now, verb, job_id, host=self.host, outcome=body.get("outcome"))
        return dest

    def complete_finish(self, source: Path, staged: Path, state: str, job_id: str) -> bool:
        """Recovery: an orphan whose outcome was staged moves, then is filled; False if taken."""
        dest = self.layout.state_dir(state) / f"{job_id}.json"
        try:
            os.rename(source, dest)
        except FileNotFoundError:
            return False
        return self.complete_fill(staged, dest)

    def return_drop(self, hold: Path, job_id: str) -> None:
        """Recovery: a held drop goes back to pending/ as `ID.json`, to be adopted again."""
        os.rename(hold, self.layout.pending / f"{job_id}.json")

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

    def adopt(self, hold: Path, body: dict, now: datetime, exclusive_id: bool,
              token: str) -> str:
        """A held drop, validated, enters pending/ under its canonical name."""
        self.markers.take_all(body, now, exclusive_id, token)
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


