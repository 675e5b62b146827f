"""Per-host slot accounting: `hosts/<host>.json`, guarded by `hosts/<host>.lock` (filelock).

`{host, capacity, workers: {pid: {boot_id, started_at}}, running: {id: {slots, attempt,
worker_pid, task_pid, started_at}}, unfit: {id: slots}}`. Only processes of this host write it,
always under the lock and by write-then-rename; other hosts read it as a hint. Entries of
processes that are gone (pid not alive, or another boot) are dropped whenever it is loaded, and
`running` is checked against `processing/<host>/`, so a crash never leaks slots for good.
"""

from __future__ import annotations

import copy
import json
import os
import signal
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from filelock import FileLock

from spool.files import list_names, replace_file
from spool.layout import Layout, parse_processing_name


def boot_id() -> str:
    """This boot's id (Linux), so that pids from before a reboot count as gone."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot (Linux): with the pid, an
    identity that a reused pid cannot fake."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_orphaned_task(entry: dict) -> None:
    """Kill the process group of a task whose worker died (kill -9), so that the job's
    recovery does not run it twice at once. Only the very process recorded is signalled."""
    pid, start = entry.get("task_pid"), entry.get("task_start")
    if isinstance(pid, int) and start and process_start(pid) == start:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@dataclass
class Ledger:
    """The decoded state file, edited under the host lock."""

    host: str
    capacity: int
    workers: dict[str, dict] = field(default_factory=dict)
    running: dict[str, dict] = field(default_factory=dict)
    unfit: dict[str, int] = field(default_factory=dict)

    @property
    def used(self) -> int:
        return sum(entry["slots"] for entry in self.running.values())

    @property
    def free(self) -> int:
        return self.capacity - self.used

    def to_dict(self) -> dict:
        return {"host": self.host, "capacity": self.capacity, "workers": self.workers,
                "running": self.running, "unfit": self.unfit}


class HostLedger:
    """Lock, load, prune and save one host's ledger."""

    def __init__(self, layout: Layout, host: str, durable: bool) -> None:
        self.layout = layout
        self.host = host
        self.durable = durable
        self.path = layout.hosts / f"{host}.json"
        self.lock = FileLock(str(layout.hosts / f"{host}.lock"))
        self.boot = boot_id()

    @contextmanager
    def locked(self, capacity: int | None = None) -> Iterator[Ledger]:
        """The pruned ledger under the host lock; saved on a clean exit of the block."""
        # filelock polls a contended lock; the default 50 ms pause would throttle a host's
        # workers to a few claims a second each
        with self.lock.acquire(poll_interval=0.001):
            ledger = self._load(capacity)
            self._prune(ledger)
            before = copy.deepcopy(ledger.to_dict())
            yield ledger
            after = ledger.to_dict()
            if after != before or not self.path.exists():
                replace_file(self.path, json.dumps(after, separators=(",", ":")).encode(),
                             self.layout.tmp, self.durable, host=self.host)

    def touch(self) -> None:
        """Refresh the ledger's mtime: the host heartbeat that `status` shows."""
        try:
            os.utime(self.path)
        except FileNotFoundError:
            pass

    def _load(self, capacity: int | None) -> Ledger:
        try:
            data = json.loads(self.path.read_bytes())
        except (FileNotFoundError, ValueError):
            data = {}
        return Ledger(self.host, capacity or data.get("capacity") or os.cpu_count() or 1,
                      data.get("workers", {}), data.get("running", {}), data.get("unfit", {}))

    def _prune(self, ledger: Ledger) -> None:
        ledger.workers = {pid: info for pid, info in ledger.workers.items()
                          if info.get("boot_id") == self.boot and pid_alive(int(pid))}
        for entry in ledger.running.values():
            if str(entry.get("worker_pid")) not in ledger.workers:
                stop_orphaned_task(entry)
        on_disk = {parsed for name in list_names(self.layout.host_processing(self.host))
                   if (parsed := parse_processing_name(name))}
        ledger.running = {job_id: entry for job_id, entry in ledger.running.items()
                          if str(entry.get("worker_pid")) in ledger.workers
                          and (job_id, entry.get("attempt")) in on_disk}
