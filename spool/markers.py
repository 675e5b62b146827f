"""Exclusive markers in `unique/`: caller-chosen ids and unique keys.

A marker is created by link(2) of a fully written file — exclusive on NFS too, where O_EXCL
alone is not — and holds `{"id", "id"|"key", "token"}`. A marker is stale when its job is gone
(ids, unique keys) or finished (unique keys); releasing moves it aside first and puts back a
marker that someone re-created meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any, TYPE_CHECKING

from spool.errors import Conflict, InvalidInput
from spool.files import discard, read_state

if TYPE_CHECKING:
    from spool.store import Store

STALE_MARKER_AGE = 300.0


class Markers:
    """The markers of one spool."""

    def __init__(self, catalog: Store) -> None:
        self.catalog = catalog

    def marker_path(self, kind: str, value: str) -> Path:
        digest = hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()[:40]
        return self.catalog.layout.unique / digest

    def take_all(self, body: dict[str, Any], now: datetime, exclusive_id: bool,
                 token: str | None = None, pending_ids: set[str] | None = None) -> list[Path]:
        """The id marker (a caller-chosen id) and the unique-key marker of `body`; Conflict
        when either is held, or when a job with that id already stands in any state (a
        generated id has no marker, so the states themselves are looked at)."""
        taken: list[Path] = []
        try:
            if exclusive_id:
                taken.append(self.take("id", body["id"], body["id"], now, token))
                if self.catalog.find_copy(body["id"], pending_ids=pending_ids) is not None:
                    raise Conflict(f"job id {body['id']!r} already exists")
            if body.get("unique"):
                taken.append(self.take("key", body["unique"], body["id"], now, token))
        except BaseException:
            for marker in taken:
                self.release(marker, body["id"])
            raise
        return taken

    def take(self, kind: str, value: str, job_id: str, now: datetime,
                     token: str | None = None) -> Path:
        """Create the marker by link(2) of a written file: exclusive on NFS too.

        `token` names the taker (a drop's inode): a taker that crashed and comes back finds
        its own marker and keeps it.
        """
        path = self.marker_path(kind, value)
        data = json.dumps({"id": job_id, kind: value, "token": token}).encode()
        staged = self.catalog.stage_data(data, "marker")
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
                    if not self.is_stale(kind, path, holder, now):
                        raise self._conflict(kind, value, holder) from None
                    self.release(path, holder)
            raise Conflict(f"{kind} {value!r} is contended; try again")
        finally:
            discard(staged)

    def _conflict(self, kind: str, value: str, holder: str | None) -> Conflict:
        where = self.catalog.locate(holder) if holder else None
        state = where.state if where else "being submitted"
        if kind == "id":
            return Conflict(f"job id {value!r} already exists ({state})")
        return Conflict(f"unique key {value!r} is held by job {holder!r} ({state})")

    def _marker_holder(self, path: Path) -> str | None:
        return self._marker_field(path, "id")

    @staticmethod
    def _marker_field(path: Path, key: str) -> str | None:
        try:
            return read_state(path, 65536).get(key)
        except (OSError, InvalidInput):
            return None

    def is_stale(self, kind: str, path: Path, holder: str | None, now: datetime) -> bool:
        where = self.catalog.locate(holder) if holder else None
        if where is not None:
            return kind == "key" and where.state in ("done", "dead")
        try:
            age = now.timestamp() - path.stat().st_mtime
        except FileNotFoundError:
            return True
        return age > STALE_MARKER_AGE  # a submit between link and rename is not stale

    def release(self, path: Path, job_id: str | None) -> None:
        """Remove the marker if it still names `job_id`: move it aside first, so that a
        marker re-created by someone else meanwhile is put back, not deleted."""
        aside = self.catalog.scratch_path("marker-release", path.name)
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

    def release_unique(self, body: dict[str, Any]) -> None:
        """Free the job's unique key (it is finished, cancelled or dead)."""
        if body.get("unique"):
            self.release(self.marker_path("key", body["unique"]), body["id"])

