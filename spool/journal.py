"""The events journal: `events/<host>/<YYYY-MM-DD>.jsonl`, one JSON line per state change.

Every line carries the `uid` of the process that wrote it (who did it, docs/protocol.md, Who may
submit what). Each host appends only to its own directory (O_APPEND is safe within one host, never
across hosts on NFS). A journal failure is logged with the path but never blocks a transition; a
link planted where the directory or the day's file belongs is refused, never followed.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from pathlib import Path

from spool.files import make_dir, open_append
from spool.timeutil import format_time

log = logging.getLogger("spool.journal")

_ENCODER = json.JSONEncoder(separators=(",", ":"))


class Journal:
    """Appends event lines for one host, keeping the day's file open."""

    def __init__(self, events_dir: Path, host: str, mode: int = 0o644) -> None:
        self.directory = events_dir / host
        self.mode = mode
        self._day = ""
        self._fd: int | None = None

    def record(self, now: datetime, event: str, job_id: str, **fields: object) -> None:
        """Append one event line; a filesystem error is logged, never raised."""
        self.record_many(now, event, [job_id], **fields)

    def record_many(self, now: datetime, event: str, job_ids: list[str],
                    **fields: object) -> None:
        """Append one line per id with a single write."""
        # ids, hosts and verbs are validated plain text: only the extra fields need encoding
        head = f'{{"time":"{format_time(now)}","event":"{event}","id":"'
        # who made the change (docs/protocol.md, Who may submit what): the effective uid, which
        # also owns what it wrote
        tail = f',"uid":{os.geteuid()}' + "".join(
            f',"{key}":{_ENCODER.encode(value)}' for key, value in fields.items())
        data = "".join(f'{head}{job_id}"{tail}}}\n' for job_id in job_ids).encode()
        day = f"{now.year:04d}-{now.month:02d}-{now.day:02d}"
        try:
            os.write(self._file(day), data)
        except OSError as exc:
            log.warning("journal write to %s/%s.jsonl failed: %s", self.directory, day, exc)
            self.close()

    def _file(self, day: str) -> int:
        if self._fd is None or day != self._day:
            self.close()
            make_dir(self.directory, self.mode)
            self._fd = open_append(self.directory / f"{day}.jsonl", self.mode)
            self._day = day
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def __del__(self) -> None:
        self.close()
