"""The events journal: `events/<host>/<YYYY-MM-DD>.jsonl`, one JSON line per state change.

Each host appends only to its own directory (O_APPEND is safe within one host, never across
hosts on NFS). A journal failure is reported by the caller's logs but never blocks a transition.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from spool.timeutil import format_time

_ENCODER = json.JSONEncoder(separators=(",", ":"))


class Journal:
    """Appends event lines for one host, keeping the day's file open."""

    def __init__(self, events_dir: Path, host: str) -> None:
        self.directory = events_dir / host
        self._day = ""
        self._fd: int | None = None

    def record(self, now: datetime, event: str, job_id: str, **fields: object) -> None:
        """Append one event line; filesystem errors are swallowed (the journal is advisory)."""
        self.record_many(now, event, [job_id], **fields)

    def record_many(self, now: datetime, event: str, job_ids: list[str],
                    **fields: object) -> None:
        """Append one line per id with a single write."""
        # ids, hosts and verbs are validated plain text: only the extra fields need encoding
        head = f'{{"time":"{format_time(now)}","event":"{event}","id":"'
        tail = "".join(f',"{key}":{_ENCODER.encode(value)}' for key, value in fields.items())
        data = "".join(f'{head}{job_id}"{tail}}}\n' for job_id in job_ids).encode()
        try:
            os.write(self._file(f"{now.year:04d}-{now.month:02d}-{now.day:02d}"), data)
        except OSError:
            self.close()

    def _file(self, day: str) -> int:
        if self._fd is None or day != self._day:
            self.close()
            self.directory.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.directory / f"{day}.jsonl",
                               os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
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
