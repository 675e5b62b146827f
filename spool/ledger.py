"""Per-host slot accounting: `hosts/<host>.json`, guarded by `hosts/<host>.lock` (filelock).

`{host, capacity, workers: {pid: {boot_id, started_at}}, running: {id: {slots, attempt,
worker_pid, task_pid, task_start, task_boot, started_at}}, unfit: {id: slots}}`. Only processes
of this host write it, always under the lock and by write-then-rename; other hosts read it as a
hint. Whenever it is loaded, workers that are gone (pid not alive, or another boot) are dropped
and the tasks they left running are stopped. Slots are held by processes, not by files
(docs/protocol.md, Slots and Liveness): an entry stays while its task process lives (pid and start
time), even when the job's file was taken away, and otherwise only while its worker lives and the
file is still in `processing/<host>/` — so a host never runs more than its capacity, and a crash
never leaks slots for good.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import signal
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Iterator

from filelock import FileLock

from spool.files import file_mode, list_names, read_bounded, replace_file
from spool.layout import Layout, parse_processing_name

log = logging.getLogger("spool.ledger")


def boot_id() -> str:
    """This boot's id (Linux), so that pids from before a reboot count as gone."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _proc_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state first); [] when gone."""
    try:  # os calls, not Path.read_text: this runs for every task at every ledger pass
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, 4096)  # procfs gives the whole line in one read
        finally:
            os.close(fd)
        return data.decode("utf-8", "replace").rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def process_start(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot (Linux): with the pid, an
    identity that a reused pid cannot fake."""
    fields = _proc_stat(pid)
    return fields[19] if len(fields) > 19 else None


def task_alive(entry: dict[str, Any], boot: str) -> bool:
    """Whether the task process recorded in a running entry still runs (a zombie does not):
    the same pid with the same start time, in this boot."""
    pid, start = entry.get("task_pid"), entry.get("task_start")
    if not isinstance(pid, int) or not start or entry.get("task_boot", boot) != boot:
        return False
    fields = _proc_stat(pid)
    return len(fields) > 19 and fields[19] == start and fields[0] != "Z"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_orphaned_task(entry: dict[str, Any], boot: str, job_id: str, spool_dir: str) -> None:
    """Kill the process group of a task whose worker died (kill -9), so that the job's
    recovery does not run it twice at once. Only the very process recorded is signalled; a
    task started but not yet recorded (its worker died in between) is found by the
    environment every command task is started with."""
    if task_alive(entry, boot):
        pids = [entry["task_pid"]]
    elif entry.get("task_pid") is None:
        pids = unrecorded_tasks(job_id, entry.get("attempt"), spool_dir)
        if pids:  # recorded now, so its slots stay held until it is really gone
            entry.update(task_pid=pids[0], task_start=process_start(pids[0]), task_boot=boot)
    else:
        pids = []
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def unrecorded_tasks(job_id: str, attempt: object, spool_dir: str) -> list[int]:
    """Process-group leaders whose environment names this attempt of this job of this spool
    (`SPOOL_DIR`, `SPOOL_JOB_ID`, `SPOOL_ATTEMPT`, set at exec). Handler children, which
    are forked without exec, die with their worker instead (PR_SET_PDEATHSIG)."""
    needles = [f"\0SPOOL_{key}={value}\0".encode() for key, value in
               (("DIR", spool_dir), ("JOB_ID", job_id), ("ATTEMPT", attempt))]
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as env:
                data = b"\0" + env.read(1 << 20) + b"\0"
            if all(needle in data for needle in needles) and os.getpgid(int(name)) == int(name):
                found.append(int(name))
        except OSError:
            continue
    return found


@dataclass
class Ledger:
    """The decoded state file, edited under the host lock."""

    host: str
    capacity: int
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    running: dict[str, dict[str, Any]] = field(default_factory=dict)
    unfit: dict[str, int] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)  # job id -> its missing dependency
    # entries this load dropped (not saved)
    gone: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def used(self) -> int:
        return sum(slots if isinstance(slots := entry.get("slots"), int) and slots > 0 else 1
                   for entry in self.running.values())

    @property
    def free(self) -> int:
        return self.capacity - self.used

    def forget(self, ended: list[tuple[str, int]], worker_pid: int) -> None:
        """Drop the entries of these (id, attempt) of one worker; a later claim's stays."""
        for job_id, attempt in ended:
            entry = self.running.get(job_id)
            if entry and entry.get("worker_pid") == worker_pid and entry.get("attempt") == attempt:
                del self.running[job_id]

    def hold_task(self, job_id: str, attempt: int, slots: int, worker_pid: int, task_pid: int,
                  started_at: str, boot: str) -> None:
        """Record the task process of a running attempt (its entry made again if it was
        pruned when the job's file was taken away: the task still holds the slots)."""
        entry = self.running.get(job_id)
        if entry is None:
            entry = self.running[job_id] = {"slots": slots, "attempt": attempt,
                                            "worker_pid": worker_pid, "task_pid": None,
                                            "started_at": started_at}
        if entry.get("worker_pid") == worker_pid and entry.get("task_pid") is None:
            entry.update(task_pid=task_pid, task_start=process_start(task_pid), task_boot=boot)

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "capacity": self.capacity, "workers": self.workers,
                "running": self.running, "unfit": self.unfit, "blocked": self.blocked}


def _entries(value: object) -> dict[str, Any]:
    """A mapping of the ledger whose values are objects; anything else is dropped (a damaged
    or hand-edited file must not stop the host)."""
    if not isinstance(value, dict):
        return {}
    return {str(key): entry for key, entry in value.items() if isinstance(entry, dict)}


def _slots(value: object) -> dict[str, int]:
    """`unfit`: job id -> slots, dropping what is not."""
    if not isinstance(value, dict):
        return {}
    return {str(key): n for key, n in value.items() if isinstance(n, int)}


def _names(value: object) -> dict[str, str]:
    """`blocked`: job id -> dependency id, dropping what is not."""
    if not isinstance(value, dict):
        return {}
    return {str(key): dep for key, dep in value.items() if isinstance(dep, str)}


class HostLedger:
    """Lock, load, prune and save one host's ledger."""

    def __init__(self, layout: Layout, host: str, durable: bool) -> None:
        self.layout = layout
        self.host = host
        self.durable = durable
        self.path = layout.hosts / f"{host}.json"
        self.mode = file_mode(layout.root)
        self.lock = FileLock(str(layout.hosts / f"{host}.lock"), mode=self.mode)
        self.boot = boot_id()
        self.rewrite = False  # the file is missing or damaged: save even when unchanged

    @contextmanager
    def locked(self, capacity: int | None = None) -> Iterator[Ledger]:
        """The pruned ledger under the host lock; saved on a clean exit of the block."""
        # filelock polls a contended lock; the default 50 ms pause would throttle a host's
        # workers to a few claims a second each
        with self.lock.acquire(poll_interval=0.001):
            ledger = self._load(capacity)
            before = copy.deepcopy(ledger.to_dict())  # so that what pruning dropped is saved
            self._prune(ledger)
            yield ledger
            after = ledger.to_dict()
            if after != before or self.rewrite:
                replace_file(self.path, json.dumps(after, separators=(",", ":")).encode(),
                             self.layout.tmp, self.durable, host=self.host, mode=self.mode)

    def touch(self) -> None:
        """Refresh the ledger's mtime: the host heartbeat that `status` shows."""
        try:
            os.utime(self.path, follow_symlinks=False)
        except FileNotFoundError:
            pass

    def _load(self, capacity: int | None) -> Ledger:
        self.rewrite = False
        try:  # never through a link a group member planted
            data = json.loads(read_bounded(self.path, 64 << 20))
        except FileNotFoundError:
            data = {}
            self.rewrite = True
        except (OSError, ValueError, RecursionError) as exc:
            log.error("ledger %s is unreadable, starting it afresh: %s", self.path, exc)
            data = {}
        if not isinstance(data, dict):
            data = {}
        self.rewrite = self.rewrite or not data
        stored = data.get("capacity")
        if not isinstance(stored, int) or isinstance(stored, bool) or stored < 1:
            stored = None
        return Ledger(self.host, capacity or stored or os.cpu_count() or 1,
                      _entries(data.get("workers")), _entries(data.get("running")),
                      _slots(data.get("unfit")), _names(data.get("blocked")))

    def _prune(self, ledger: Ledger) -> None:
        ledger.workers = {pid: info for pid, info in ledger.workers.items()
                          if pid.isdigit() and info.get("boot_id") == self.boot
                          and pid_alive(int(pid))}
        for job_id, entry in ledger.running.items():
            if str(entry.get("worker_pid")) not in ledger.workers:
                stop_orphaned_task(entry, self.boot, job_id, str(self.layout.root))
        on_disk = {parsed for name in list_names(self.layout.host_processing(self.host))
                   if (parsed := parse_processing_name(name))}
        kept: dict[str, dict[str, Any]] = {}
        for job_id, entry in ledger.running.items():
            if task_alive(entry, self.boot) or (
                    str(entry.get("worker_pid")) in ledger.workers
                    and (job_id, entry.get("attempt")) in on_disk):
                kept[job_id] = entry
            else:
                ledger.gone[job_id] = entry
        ledger.running = kept
