"""`spool worker`: claim due jobs within this host's free slots and run each attempt.

One worker process runs several attempts at once, each a child in its own process group.
`step(now)` is one iteration — collect ended attempts and settle them, enforce timeouts,
cancel requests and heartbeats, adopt drops, claim what fits — and `run()` loops it, sleeping
until a child exits, a name appears in pending/ (inotify) or the next deadline. Liveness: the
worker holds an flock on each processing file it runs; this host's orphans (flock free) are
recovered at start and on every heartbeat.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Callable

from spool.api import Spool
from spool.claim import (Claimed, PendingView, claim_due, dependencies_met,
                         try_lock_orphan)
from spool.config import Config, JobType
from spool.drops import adopt_drops
from spool.errors import InvalidInput, SpoolError
from spool.job import normalize
from spool.execution import Attempt, load_handler, open_log, read_result, start_attempt
from spool.inotify import Watcher
from spool.ledger import HostLedger, Ledger, process_start
from spool.notify import Notifier
from spool.recovery import invalid_record, recover_holds, recover_orphan, settle
from spool.timeutil import due_stamp, format_time, parse_due

if TYPE_CHECKING:
    from spool.runloop import Companion

log = logging.getLogger("spool.worker")


@dataclass
class Running:
    """An attempt this worker is running."""

    claimed: Claimed
    body: dict
    jtype: JobType
    attempt: Attempt
    log_fd: int
    deadline: float
    beat_at: float


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
        self.view = PendingView(self.store)
        self.running: dict[str, Running] = {}
        self.handlers: dict[str, object] = {}
        self.stopping = False
        self.stop_at: float | None = None
        self.signals = 0
        self.reload_requested = False
        self.notifier = Notifier()
        self.beat_at = 0.0
        self.companions = companions or []
        self.watcher: Watcher | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, now: datetime) -> None:
        """Register in the ledger and recover this host's orphans."""
        self.store.layout.host_processing(self.spool.host).mkdir(parents=True, exist_ok=True)
        with self.ledger.locked(self.capacity) as ledger:
            ledger.workers[str(self.pid)] = {"boot_id": self.ledger.boot,
                                             "started_at": format_time(now)}
            self.capacity = ledger.capacity
            self.recover_orphans(now)
        recover_holds(self.store, now)
        self.view.refresh(time.monotonic())
        log.info("worker %d on host %s: capacity %d slots", self.pid, self.spool.host,
                 self.capacity)

    def recover_orphans(self, now: datetime) -> int:
        """Requeue or finish processing files of this host whose flock is free (under lock)."""
        recovered = 0
        for path in list(self.store.processing_paths(self.spool.host)):
            if path.name.rsplit(".", 2)[0] in self.running:
                continue
            fd = try_lock_orphan(path)
            if fd is None:
                continue
            try:
                where = recover_orphan(self.store, path, now, inode=os.fstat(fd).st_ino)
                log.warning("recovered orphan %s -> %s", path.name, where)
                recovered += 1
            finally:
                os.close(fd)
        return recovered

    def request_stop(self) -> None:
        """First call: drain within `grace`; second: stop at once. Running jobs go back."""
        self.signals += 1
        self.stopping = True
        grace = 0.0 if self.signals > 1 else self.config.defaults.grace
        self.stop_at = time.monotonic() + grace
        self.notifier.send("STOPPING=1")

    def reload(self) -> None:
        """SIGHUP: re-read spool.toml; a broken file keeps the old config."""
        try:
            self.config = self.spool.reload_config()
        except SpoolError as exc:
            log.error("reload failed, keeping the old config: %s", exc)
            return
        self.handlers.clear()
        log.info("reloaded %s", self.store.layout.config_path)

    # -- one iteration -------------------------------------------------------------------

    def step(self, now: datetime) -> bool:
        """One iteration; False when the worker should exit."""
        mono = time.monotonic()
        ended = self.collect(now)
        self.supervise(now, mono)
        if self.stopping:
            if ended:
                with self.ledger.locked() as ledger:
                    for job_id in ended:
                        ledger.running.pop(job_id, None)
            return bool(self.running)
        if self.view.drops:
            adopt_drops(self.store, now)
            self.view.drops.clear()
            self.view.refresh(mono)
        if mono - self.view.refreshed_at > self.config.defaults.refresh or not self.view.names:
            if mono - self.view.refreshed_at > min(self.config.defaults.poll, 1.0):
                self.view.refresh(mono)
        self.claim_and_start(now, ended)
        if mono - self.beat_at >= self.config.defaults.heartbeat:
            self.beat(now, mono)
        if self.burst and not self.running and not self._anything_due(now):
            return False
        return True

    def _anything_due(self, now: datetime) -> bool:
        self.view.refresh(time.monotonic())
        if self.view.drops:
            adopt_drops(self.store, now)
            self.view.refresh(time.monotonic())
        with self.ledger.locked() as ledger:
            for name in self.view.due(now):
                info = self.view.job_info(name)
                if info and info.slots <= ledger.capacity and (
                        not info.after or dependencies_met(self.store, info.after)):
                    return True
        return False

    def claim_and_start(self, now: datetime, ended: list[str]) -> None:
        free_slots_possible = self.capacity or 1
        claimed: list[Claimed] = []
        with self.ledger.locked() as ledger:
            for job_id in ended:
                ledger.running.pop(job_id, None)
            self._record_tasks(ledger)
            if self.view.names and ledger.free > 0:
                claimed = claim_due(self.store, self.view, ledger, now, self.pid,
                                    free_slots_possible)
        for item in claimed:
            self.launch(item, now)

    def beat(self, now: datetime, mono: float) -> None:
        """Heartbeat: ledger mtime, orphan check, systemd status."""
        self.beat_at = mono
        with self.ledger.locked() as ledger:
            self._record_tasks(ledger)
            self.recover_orphans(now)
            used, capacity = ledger.used, ledger.capacity
        self.ledger.touch()
        self.notifier.send(f"STATUS=running {len(self.running)} jobs, {used}/{capacity} slots",
                           "WATCHDOG=1")

    def _record_tasks(self, ledger: Ledger) -> None:
        """Note each running task's pid and start time, so a successor can stop it if this
        worker is killed."""
        for job_id, run in self.running.items():
            entry = ledger.running.get(job_id)
            if entry is not None and entry.get("task_pid") is None:
                entry.update(task_pid=run.attempt.pid, task_start=process_start(run.attempt.pid))

    # -- attempts ------------------------------------------------------------------------

    def launch(self, item: Claimed, now: datetime) -> None:
        """Start the attempt of a claimed job, or bury it when it cannot run at all."""
        job_id = item.path.name.rsplit(".", 2)[0]
        body, problem, jtype = item.body, item.error, None
        if body is not None:
            try:  # a hand-made canonical file is validated here, at its first claim
                body = normalize(body, self.config, now, job_id)
                jtype = self.config.job_type(body["job"])
            except InvalidInput as exc:
                problem = str(exc)
        if problem is not None or body is None or jtype is None:
            self.store.reject(item.path, invalid_record(job_id, f"{item.path.name}: {problem}",
                                                        now, body and body.get("job")), now)
            os.close(item.fd)
            self._release(job_id)
            return
        layout = self.store.layout
        log_fd = open_log(layout.log_path(job_id), body, item.attempt, self.spool.host, now)
        try:
            attempt = start_attempt(layout.root, layout.tmp, body, jtype, item.attempt, log_fd,
                                    now, self._handler)
        except (OSError, InvalidInput) as exc:
            os.write(log_fd, f"spool: cannot start: {exc}\n".encode())
            os.close(log_fd)
            # bad args cannot get better by retrying; a missing program or module might
            outcome = "invalid" if isinstance(exc, InvalidInput) else "failed"
            self._settle(item, body, outcome, now, error=f"cannot start: {exc}")
            self._release(job_id)
            return
        mono = attempt.started
        timeout = float(body.get("timeout") or jtype.timeout)
        self.running[job_id] = Running(item, body, jtype, attempt, log_fd, mono + timeout, mono)
        log.info("claim %s (%s) attempt %d pid %d", job_id, body["job"], item.attempt,
                 attempt.pid)

    def _handler(self, jtype: JobType):
        if jtype.handler not in self.handlers:
            self.handlers[jtype.handler] = load_handler(jtype.handler)
        return self.handlers[jtype.handler]

    def _release(self, job_id: str) -> None:
        with self.ledger.locked() as ledger:
            ledger.running.pop(job_id, None)

    def collect(self, now: datetime) -> list[str]:
        """Settle every attempt whose process ended; returns their ids."""
        ended = []
        for job_id, run in list(self.running.items()):
            code = run.attempt.poll()
            if code is None:
                continue
            run.attempt.signal_group(signal.SIGKILL)  # leftovers of the group go with it
            del self.running[job_id]
            os.close(run.log_fd)
            reason = run.attempt.stop_reason
            outcome = reason or {0: "completed", 100: "cancelled"}.get(code, "failed")
            error = {"timeout": f"timed out after {run.deadline - run.attempt.started:g}s",
                     "failed": f"exit code {code}"}.get(outcome)
            result = read_result(run.attempt.result_path)
            self._settle(run.claimed, run.body, outcome, now, error=error, exit_code=code,
                         result=result, started_at=run.attempt.started_at)
            self.store.clear_cancel(job_id)
            ended.append(job_id)
        return ended

    def _settle(self, item: Claimed, body: dict, outcome: str, now: datetime, *,
                error: str | None = None, exit_code: int | None = None, result: object = None,
                started_at: datetime | None = None) -> None:
        entry = {"attempt": item.attempt, "host": self.spool.host, "worker": self.pid,
                 "started_at": format_time(started_at or now), "ended_at": format_time(now)}
        if os.path.exists(item.path) and os.stat(item.path).st_ino == item.inode:
            where = settle(self.store, item.path, body, item.attempt, outcome, now,
                           inode=item.inode, error=error, exit_code=exit_code, result=result,
                           entry=entry)
            log.info("%s %s attempt %d: %s -> %s", "finish" if where in ("done", "dead")
                     else "requeue", body["id"], item.attempt, outcome, where)
        else:
            log.warning("job %s attempt %d is no longer ours (reaped?): not finishing it",
                        body["id"], item.attempt)
        os.close(item.fd)

    def supervise(self, now: datetime, mono: float) -> None:
        """Timeouts, cancel requests, shutdown deadlines and per-job heartbeats."""
        for job_id, run in self.running.items():
            attempt = run.attempt
            if attempt.killed_at is None:
                reason = None
                if mono >= run.deadline:
                    reason = "timeout"
                elif os.path.exists(self.store.layout.cancel_path(job_id)):
                    reason = "cancelled"
                elif self.stopping and self.stop_at is not None and mono >= self.stop_at:
                    reason = "interrupted"
                if reason:
                    attempt.stop_reason = reason
                    attempt.killed_at = mono
                    attempt.signal_group(signal.SIGTERM if self.signals < 2 else signal.SIGKILL)
                    log.info("stop %s: %s", job_id, reason)
            elif mono - attempt.killed_at >= run.jtype.kill_grace or self.signals > 1:
                attempt.signal_group(signal.SIGKILL)
            if mono - run.beat_at >= self.config.defaults.heartbeat:
                run.beat_at = mono
                try:
                    os.utime(run.claimed.fd)
                except OSError as exc:
                    log.warning("heartbeat of %s failed: %s", run.claimed.path, exc)

    def next_wake(self, now: datetime) -> float:
        """Seconds until something needs this worker, if nothing wakes it before."""
        mono = time.monotonic()
        waits = [self.config.defaults.heartbeat - (mono - self.beat_at)]
        for run in self.running.values():
            waits.append(run.deadline - mono)
            waits.append(self.config.defaults.heartbeat - (mono - run.beat_at))
            if run.attempt.killed_at is not None:
                waits.append(0.05)
        if self.running:
            waits.append(0.5)  # cancel requests are checked this often
        if self.stop_at is not None:
            waits.append(self.stop_at - mono)
        waits.extend(companion.due_at - mono for companion in self.companions)
        due = self.view.next_due(now)
        if due:
            waits.append((parse_due(due) - now).total_seconds())
        if self.view.names and self.view.names[0][2:25] <= due_stamp(now):
            # due work but no free slot: another worker of this host holds them; look again
            waits.append(min(self.config.defaults.poll, 0.05))
        if self.watcher is None or not self.view.names:
            waits.append(self.config.defaults.poll)
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
        while self.running and time.monotonic() < deadline:
            self.collect(now)
            time.sleep(0.01)
        with self.ledger.locked() as ledger:
            ledger.workers.pop(str(self.pid), None)
            for job_id in list(ledger.running):
                if ledger.running[job_id].get("worker_pid") == self.pid:
                    del ledger.running[job_id]
        log.info("worker %d stopped", self.pid)
