"""Reading a job's log as `spool logs` shows it: from where it left off, in whole lines,
optionally only one attempt's section (each starts at the worker's header line
`=== spool: attempt N of job ID (...) on HOST at TIME ===`)."""

from __future__ import annotations

import re
from pathlib import Path


class LogReader:
    """Reads a job's log from where it left off, in whole lines, keeping only the section of
    one attempt when asked (sections start at the worker's header lines)."""

    HEADER = re.compile(rb"^=== spool: attempt (\d+) of job ")

    def __init__(self, path: Path, attempt: int | None) -> None:
        self.path = path
        self.attempt = attempt
        self.offset = 0
        self.partial = b""
        self.current: int | None = None
        self.seen = False

    def read(self) -> list[bytes]:
        try:
            with open(self.path, "rb") as log:
                log.seek(self.offset)
                data = log.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self.partial + data
        cut = data.rfind(b"\n") + 1
        self.partial = data[cut:]
        return [ln for ln in data[:cut].splitlines(keepends=True) if self._keep(ln)]

    def _keep(self, line: bytes) -> bool:
        if (match := self.HEADER.match(line)) is not None:
            self.current = int(match.group(1))
            self.seen = self.seen or self.current == self.attempt
        return self.attempt is None or self.current == self.attempt
