"""An attempt's output: the child's stdout and stderr go through a pipe that the worker drains
into `logs/ID.log`, counting bytes, so that a job's log never grows past `max_log_bytes`
(docs/protocol.md, Links, FIFOs and group members); what comes after is dropped and a marker line
at the end of the attempt says how much.

Why a pipe rather than the log file itself as the child's stdout: a child writing straight to
the file cannot be cut off without killing it — a size check on each tick could only truncate
what the child keeps appending. With a pipe the worker decides what reaches the file, and the
log is opened by the worker alone, append-only, never through a link (`files.open_append`).
The costs, accepted: output is copied through the worker, a child blocks on a full pipe
(64 KiB) while its worker is busy for a bounded step or stopped, and a child whose worker died
gets EPIPE at its next write — ending an attempt that a restarted worker would stop anyway.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from spool.files import open_append

log = logging.getLogger("spool.worker")
CHUNK = 65536
DRAIN_LIMIT = 1 << 20  # bytes per drain call, so one chatty task cannot hold the loop


class Output:
    """The log of one attempt and the pipe its process writes to."""

    def __init__(self, path: Path, log_fd: int, budget: int, max_bytes: int) -> None:
        self.path = path
        self.log_fd = log_fd
        self.budget = budget
        self.max_bytes = max_bytes
        self.dropped = 0
        self.failed = 0
        self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self.read_fd, False)
        self.eof = False

    @classmethod
    def open(cls, path: Path, header: str, mode: int, max_bytes: int) -> Output:
        """The job's log opened for appending, after this attempt's header line."""
        fd = open_append(path, mode)
        try:
            _write_all(fd, header.encode())
            # O_APPEND left the offset at the end: the size, without the fstat that on NFS
            # would flush the header to the server first
            budget = max(0, max_bytes - os.lseek(fd, 0, os.SEEK_CUR))
            return cls(path, fd, budget, max_bytes)
        except BaseException:
            os.close(fd)
            raise

    def started(self) -> None:
        """The child holds the write end now; the worker's copy goes, so EOF can come."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def drain(self, limit: int = DRAIN_LIMIT) -> None:
        """Copy what the pipe holds into the log, within the log's budget; never blocks."""
        while limit > 0 and not self.eof:
            try:
                data = os.read(self.read_fd, CHUNK)
            except BlockingIOError:
                return
            if not data:
                self.eof = True
                return
            limit -= len(data)
            keep = data[:self.budget]
            self.budget -= len(keep)
            self.dropped += len(data) - len(keep)
            if keep:
                self._write(keep)

    def write(self, text: str) -> None:
        """A line of spool's own (not counted against the budget: it is bounded)."""
        self._write(text.encode())

    def close(self) -> None:
        """Drain what is left, note what was cut, and close both ends."""
        self.started()
        self.drain(1 << 62)
        if self.dropped:
            self.write(f"=== spool: output cut: {self.dropped} bytes dropped past "
                       f"max_log_bytes ({self.max_bytes}) ===\n")
        for fd in (self.read_fd, self.log_fd):
            try:
                os.close(fd)
            except OSError as exc:
                log.warning("closing the log %s: %s", self.path, exc)

    def _write(self, data: bytes) -> None:
        try:
            _write_all(self.log_fd, data)
        except OSError as exc:
            self.failed += len(data)
            if self.failed == len(data):  # once per attempt, not per chunk
                log.error("cannot write the log %s: %s", self.path, exc)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
