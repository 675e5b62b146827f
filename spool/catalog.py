"""The catalog: reading a spool without changing it — where a job is, its body, the listings.

Listings are hints (docs/protocol.md, Transitions: listings are hints on NFS): names may be missing
or stale for the attribute-cache time, and every reader tolerates a file that moved between listing
and reading.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from spool.config import Config
from spool.errors import InvalidInput, JobNotFound
from spool.files import list_names, read_bounded, read_open, read_state, read_with_stat
from spool.job import Job, decode
from spool.layout import Layout, parse_pending_name, parse_processing_name

HISTORY_MARGIN = 1 << 20  # bytes: attempt entries and errors on top of a full body


def read_limit(config: Config) -> int:
    """The size past which a job file is refused: spool's own files grow past max_job_bytes
    with a result (max_result_bytes) and history (twice the body, plus HISTORY_MARGIN)."""
    defaults = config.defaults
    return 2 * defaults.max_job_bytes + defaults.max_result_bytes + HISTORY_MARGIN


class Located(NamedTuple):
    """Where a job file stands."""

    state: str
    path: Path


class Catalog:
    """Read access to one spool, as seen from one host."""

    def __init__(self, root: Path, config: Config, host: str) -> None:
        self.layout = Layout(Path(root))
        self.config = config
        self.host = host

    def read(self, path: Path) -> dict[str, Any]:
        """The body of the job file at `path` (bounded, never through a symlink)."""
        return decode(read_bounded(path, read_limit(self.config)), str(path))

    def read_open(self, fd: int, info: os.stat_result, path: Path) -> dict[str, Any]:
        """The body of the job file open at `fd` (`info`: its fstat), as a holder reads it."""
        return decode(read_open(fd, info, read_limit(self.config), path), str(path))

    def read_with_stat(self, path: Path) -> tuple[dict[str, Any], os.stat_result]:
        """The body of the job file at `path` and its stat (from the descriptor read)."""
        data, info = read_with_stat(path, read_limit(self.config))
        return decode(data, str(path)), info

    def locate(self, job_id: str) -> Located | None:
        """The state and path of `job_id`, looking twice to cover a move during the scan."""
        for _ in range(2):
            if (found := self.find_copy(job_id)) is not None:
                return found
        return None

    def find_copy(self, job_id: str, exclude: Path | None = None,
                  pending_ids: set[str] | None = None) -> Located | None:
        """A copy of the job other than `exclude`, in any state directory (docs/protocol.md,
        Copies; ids are unique across every state, held/ included). `pending_ids`,
        when given, stands in for a listing of pending/ (a pass over many drops lists it once)."""
        for state in ("done", "dead", "held"):
            other = self.layout.state_dir(state) / f"{job_id}.json"
            if os.path.lexists(other):
                return Located(state, other)
        for other in self.processing_paths():
            parsed = parse_processing_name(other.name)
            if parsed and parsed[0] == job_id and other != exclude:
                return Located("processing", other)
        if pending_ids is not None:
            found = job_id in pending_ids
            return Located("pending", self.layout.pending) if found else None
        suffix = f"-{job_id}.json"
        for name in list_names(self.layout.pending):
            if name.endswith(suffix) and (parsed_p := parse_pending_name(name)) is not None \
                    and parsed_p.id == job_id:
                return Located("pending", self.layout.pending / name)
        return None

    def get(self, job_id: str) -> tuple[Job, dict[str, Any]]:
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
            try:
                entries = list_names(directory)
            except PermissionError:  # one host's unreadable directory must not blind the rest
                continue
            for entry in entries:
                if parse_processing_name(entry):
                    yield directory / entry

    def running_attempt(self, path: Path, now_ts: float) -> dict[str, Any] | None:
        """What is known of the attempt a processing file stands for: `attempt` (from its
        name), `host` (its directory), `heartbeat_age` (its mtime, touched by the worker),
        and `started_at` from the host ledger when it records this attempt. None when the
        name is not a processing name. A hint, like every listing."""
        parsed = parse_processing_name(path.name)
        if parsed is None:
            return None
        host = path.parent.name
        info: dict[str, Any] = {"attempt": parsed[1], "host": host, "started_at": None,
                      "heartbeat_age": None}
        try:
            info["heartbeat_age"] = max(0.0, now_ts - os.lstat(path).st_mtime)
        except OSError:
            pass
        try:
            entry = read_state(self.layout.hosts / f"{host}.json").get("running", {})
            entry = entry.get(parsed[0]) if isinstance(entry, dict) else None
        except (OSError, InvalidInput):
            entry = None
        if isinstance(entry, dict) and entry.get("attempt") == parsed[1] \
                and isinstance(entry.get("started_at"), str):
            info["started_at"] = entry["started_at"]
        return info

    def terminal_names(self, state: str) -> list[str]:
        """Sorted `ID.json` names in done/ or dead/."""
        return sorted(n for n in list_names(self.layout.state_dir(state))
                      if n.endswith(".json") and not n.startswith("."))

