"""`spool worker`: claim due jobs within this host's free slots and run each attempt.

One worker process runs several attempts at once, each a child in its own process group
(`spool.attempts`). `step(now)` is one iteration — collect ended attempts and settle them,
enforce timeouts, cancel requests, ownership and heartbeats, adopt drops for a bounded time,
claim what fits — and `run()` loops it (`spool.runloop`). Its view of pending/ is kept current
by `spool.feed`. Liveness: the worker holds an flock on
each processing file it runs; this host's orphans (flock free) are recovered at start and on
every heartbeat. Nothing is claimed or recovered while `processing/<host>`, or a directory the
worker writes into, is not a real directory (a link a group member planted would send job files
out of the spool). A fault in one phase of a step (a full disk) is logged with its path and the
other phases go on, heartbeats first.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING
from collections.abc import Callable, Iterator

from spool.api import Spool
from spool.attempts import Attempts, Running
from spool.claim import Claimed, PendingView, claim_due
from spool.config import Config
from spool.errors import SpoolError
from spool.execpath import forget as forget_programs
from spool.feed import PendingFeed
from spool.ledger import HostLedger, Ledger, task_alive
from spool.notify import Notifier
from spool.orphans import host_dir_ok, make_host_dir, recover_orphans
from spool.pause import Pauses, read_pauses
from spool.parking import unpark_all
from spool.recovery import recover_holds
from spool.timeutil import format_time

if TYPE_CHECKING:
    from spool.runloop import Companion

log = logging.getLogger("spool.worker")
# How soon a started task's pid is written to the ledger when no other ledger pass does it
# first. A task that ends sooner (most do) is never written at all: the next claim pass drops
# its entry. Until then a worker's crash is covered by the environment search for unrecorded
# tasks (`spool.ledger.unrecorded_tasks`), as it was between the start and the record before.
RECORD_DELAY = 0.02


class Worker:
    """One worker process of one host."""

    def __init__(self, spool: Spool, capacity: int | None = None, burst: bool = False,
                 companions: list[Companion] | None = None) -> None:
        self.spool = spool
        self.store = spool.store
        self.config: Config = spool.config
        self.capacity = capacity
        self.burst = burst
        self.pid = os.getpid()
        self.ledger = HostLedger(self.store.layout, spool.host, self.config.defaults.durable)
        self.feed = PendingFeed(self.store)  # the view of pending/ and its inotify watcher
        self.feed.view.during_listing = self._beat_during_listing
        self.attempts = Attempts(self.store, self.pid, spool.clock)
        self.stopping = False
        self.stop_at: float | None = None
        self.signals = 0
        self.reload_requested = False
        self.notifier = Notifier()
        self.beat_at = 0.0
        self.companions = companions or []
        self.hints: dict[tuple[str, object], object] = {}  # started_at of pruned entries
        self.paused_seen = False  # the last claim pass found this host or job types paused
        self.record_at: float | None = None  # when started tasks' pids must be in the ledger
        self.forgotten = 0  # ended attempts dropped from the ledger being edited

    @property
    def running(self) -> dict[str, Running]:
        return self.attempts.running

    @property
    def view(self) -> PendingView:
        return self.feed.view

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, now: datetime) -> None:
        """Register in the ledger and recover this host's orphans."""
        make_host_dir(self.store)
        usable = self.host_dir_ok(report=True)
        with self._locked(self.capacity) as ledger:
            ledger.workers[str(self.pid)] = {"boot_id": self.ledger.boot,
                                             "started_at": format_time(now)}
            self.capacity = ledger.capacity
            if usable:
                self.recover_orphans(now, ledger)
        recover_holds(self.store, now)
        self.view.refresh(time.monotonic())
        log.info("worker %d on host %s: capacity %d slots", self.pid, self.spool.host,
                 self.capacity)

    def host_dir_ok(self, report: bool = False) -> bool:
        """Whether `processing/<host>` and the directories written into are real (lstat)."""
        return host_dir_ok(self.store, report)

    @contextmanager
    def _locked(self, capacity: int | None = None) -> Iterator[Ledger]:
        """The ledger under the host lock; notes when each pruned entry's attempt started."""
        self.forgotten = 0
        with self.ledger.locked(capacity or self.capacity) as ledger:
            for job_id, entry in ledger.gone.items():
                self.hints[(job_id, entry.get("attempt"))] = entry.get("started_at")
            yield ledger
        # saved: what `_forget` dropped is gone for good (after a failed save, the next pass
        # drops it again: a pool child, alive, would keep the entry and its slots held)
        del self.attempts.ended[:self.forgotten]

    def recover_orphans(self, now: datetime, ledger: Ledger) -> int:
        """Requeue or finish processing files of this host whose flock is free (under lock)."""
        busy = set(self.running) | set(self.attempts.unsettled)
        recovered = recover_orphans(self.store, ledger, busy, self.hints, now)
        self.hints.clear()
        return len(recovered)

    def request_stop(self) -> None:
        """First call: drain within `grace`; second: stop at once. Running jobs go back."""
        self.signals += 1
        self.stopping = True
        grace = 0.0 if self.signals > 1 else self.config.defaults.grace
        self.stop_at = time.monotonic() + grace
        self.notifier.send("STOPPING=1")
        running = len(self.running)
        if self.signals > 1:
            log.info("second stop request: stopping %d running job(s) now; they return to "
                     "pending/", running)
        else:
            log.info("stop requested: claiming nothing more; draining %d running job(s) within "
                     "grace %gs (past it they are stopped and return to pending/; a second "
                     "signal stops them at once)", running, grace)

    def _beat_during_listing(self) -> None:
        """A long listing of pending/ (a million names, NFS) must not let the running
        attempts' files age past their heartbeat (another host's reaper would take them):
        their heartbeats, timeouts and cancels are looked after as a step would."""
        self.attempts.supervise(time.monotonic(), False, self.signals > 1)

    def reload(self) -> None:
        """SIGHUP: re-read spool.toml; a broken file keeps the old config."""
        try:
            self.config = self.spool.reload_config()
        except SpoolError as exc:
            log.error("reload failed, keeping the old config: %s", exc)
            return
        self.attempts.handlers.clear()
        forget_programs()  # a job type's command is found along PATH again
        self.view.info.clear()  # slots and limit pools come from the job types too
        unpark_all(self.view)
        log.info("reloaded %s", self.store.layout.config_path)

    # -- one iteration -------------------------------------------------------------------

    def step(self, now: datetime) -> bool:
        """One iteration; False when the worker should exit."""
        mono = time.monotonic()
        self.attempts.drain()
        self.attempts.collect(now)
        stop_due = self.stopping and self.stop_at is not None and mono >= self.stop_at
        self.attempts.supervise(mono, stop_due, self.signals > 1)
        self.attempts.retry_unsettled(now, mono)
        if self.stopping:
            if self.attempts.ended or self.record_at is not None:
                self._guarded("ledger", self.sync_ledger)
            busy = bool(self.running) or (bool(self.attempts.unsettled) and not stop_due)
            if not busy:
                log.info("drain complete: no job running, stopping")
            return busy
        # a listing that fails (EACCES, EIO) must not stop heartbeats: the next step lists again
        self._guarded("adoption", lambda: self.feed.adopt(now))
        self._guarded("listing", lambda: self.feed.refresh_if_stale(mono))
        self._guarded("claim", lambda: self.claim_and_start(now))
        if self.record_at is not None and time.monotonic() >= self.record_at:
            self._guarded("ledger", self.sync_ledger)
        if mono - self.beat_at >= self.config.defaults.heartbeat:
            self._guarded("heartbeat", lambda: self.beat(now, mono))
        idle = not self.running and not self.attempts.unsettled
        return not (self.burst and idle and not self.feed.anything_due(now, self.ledger))

    def _guarded(self, what: str, action: Callable[[], object]) -> None:
        """One phase of a step: a filesystem fault is logged and the step goes on, so that a
        full disk never stops heartbeats or the other phases."""
        try:
            action()
        except OSError as exc:
            log.error("%s: filesystem error, retrying: %s", what, self.describe(exc))

    def describe(self, exc: BaseException) -> str:
        """An error with the path it concerns (a write on a full disk names none: the spool)."""
        if isinstance(exc, OSError) and exc.filename is None:
            return f"{self.store.layout.root}: {exc}"
        return str(exc)

    def claim_and_start(self, now: datetime) -> None:
        """Claim what fits under the host lock, then start each claimed attempt."""
        usable = not self.attempts.unsettled and self.host_dir_ok()
        pauses = read_pauses(self.store) if usable else Pauses()  # one listing per pass
        self.paused_seen = pauses.host(self.spool.host) or bool(pauses.names("job"))
        usable = usable and not pauses.host(self.spool.host)
        claimed: list[Claimed] = []
        try:
            with self._locked() as ledger:
                self._forget(ledger)
                self._record_tasks(ledger)
                # with nothing pending, a pass still runs to unblock what was blocked
                if usable and ledger.free > 0 and (
                        self.view.names or self.view.parked or ledger.blocked):
                    claimed = claim_due(self.store, self.view, ledger, now, self.pid,
                                        self.capacity or 1, pauses.names("job"))
        except OSError as exc:  # the ledger could not be saved (a full disk)
            if not claimed:
                raise
            refuse = f"cannot record the claim in {self.ledger.path}: {exc}"
            log.error("%s", refuse)
            for item in claimed:  # unaccounted, so never started: ended at once
                self.attempts.launch(item, now, refuse=refuse)
            return
        for item in claimed:
            self.attempts.launch(item, now)
        if claimed and self.running and self.record_at is None:
            self.record_at = time.monotonic() + RECORD_DELAY  # unless they end before

    def sync_ledger(self) -> None:
        """Under the lock: forget ended attempts and record running tasks."""
        with self._locked() as ledger:
            self._forget(ledger)
            self._record_tasks(ledger)

    def _forget(self, ledger: Ledger) -> None:
        """Drop this worker's entries of attempts that are over (not a later claim's)."""
        ledger.forget(self.attempts.ended, self.pid)
        self.forgotten = len(self.attempts.ended)

    def beat(self, now: datetime, mono: float) -> None:
        """Heartbeat: ledger mtime, orphan check, systemd status."""
        self.beat_at = mono
        usable = self.host_dir_ok(report=True)
        with self._locked() as ledger:
            self._forget(ledger)
            self._record_tasks(ledger)
            if usable:
                self.recover_orphans(now, ledger)
            used, capacity = ledger.used, ledger.capacity
        self.ledger.touch()
        self.notifier.send(f"STATUS=running {len(self.running)} jobs, {used}/{capacity} slots",
                           "WATCHDOG=1")

    def _record_tasks(self, ledger: Ledger) -> None:
        """Note each running task's pid and start time, so that a successor can stop it if
        this worker is killed, and so that its slots stay held while it lives."""
        self.record_at = None
        for job_id, run in self.running.items():
            ledger.hold_task(job_id, run.claimed.attempt, int(run.body.get("slots") or 1),
                             self.pid, run.attempt.pid, format_time(run.attempt.started_at),
                             self.ledger.boot)

    def next_wake(self, now: datetime) -> float:
        """Seconds until something needs this worker, if nothing wakes it before."""
        mono = time.monotonic()
        waits = [self.config.defaults.heartbeat - (mono - self.beat_at)]
        waits.extend(self.attempts.next_wake(mono))
        if self.stop_at is not None:
            waits.append(self.stop_at - mono)
        if self.record_at is not None:
            waits.append(self.record_at - mono)
        waits.extend(companion.due_at - mono for companion in self.companions)
        waits.extend(self.feed.waits(now, self.paused_seen, self.stopping))
        return max(0.0, min(waits))

    # -- the loop ------------------------------------------------------------------------

    def run(self, clock: Callable[[], datetime] | None = None) -> int:
        """Loop `step` until stopped (or, with burst, until nothing is due)."""
        from spool.runloop import run_worker

        return run_worker(self, clock or self.spool.clock)

    def on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            self.reload_requested = True
        elif signum in (signal.SIGTERM, signal.SIGINT):
            self.request_stop()

    def shutdown(self, now: datetime) -> None:
        """Anything still running is stopped and returned to pending/ as interrupted."""
        for run in self.running.values():
            run.attempt.stop_reason = "interrupted"
            run.attempt.signal_group(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while (self.running or self.attempts.unsettled) and time.monotonic() < deadline:
            self.attempts.collect(now)
            self.attempts.retry_unsettled(now, time.monotonic())
            time.sleep(0.01)
        for job_id in self.attempts.unsettled:
            log.error("job %s could not be settled before exit: recovery will requeue it",
                      job_id)
        self.attempts.close()
        try:
            with self.ledger.locked() as ledger:
                ledger.workers.pop(str(self.pid), None)
                for job_id in list(ledger.running):
                    entry = ledger.running[job_id]
                    if entry.get("worker_pid") == self.pid and \
                            not task_alive(entry, self.ledger.boot):
                        del ledger.running[job_id]
        except OSError as exc:
            log.error("cannot deregister from %s: %s", self.ledger.path, exc)
        log.info("worker %d stopped", self.pid)
