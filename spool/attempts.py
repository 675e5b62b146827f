"""The attempts one worker runs: start each claimed job, supervise it, settle it when its
process ends.

Invariants (docs/protocol.md, Slots and Liveness; README, Writing jobs):
- A claimed job is running, or settled, or waits in `unsettled` because settling it failed (a
  full disk) and is retried with a capped backoff; it never sits in processing/ without one of
  them. Any error between the claim and the start of its process ends the attempt at once, with
  the error recorded: `invalid` for what can never run, else `failed` ("cannot start: ...").
- While this worker holds a processing file (running or unsettled) it touches it every
  `heartbeat` seconds, after checking it is still its own (same inode at the same path). A file
  taken away — reaped while the worker stalled, moved by hand — stops the attempt's process
  group at once (SIGKILL) and nothing is finished; the ledger entry stays while the task lives.
- Jobs whose attempt is over are listed in `ended` as (id, attempt) for the worker to drop from
  the ledger under its next lock.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from collections.abc import Callable

from spool.allow import refusal
from spool.claim import Claimed
from spool.config import JobType
from spool.errors import InvalidInput
from spool.execution import Attempt, Raised, load_handler, read_result, start_attempt
from spool.job import normalize
from spool.layout import attempt_subject
from spool.output import Output
from spool.pool import HandlerPool
from spool.settling import Unsettled, settle_once
from spool.store import Store
from spool.timeutil import format_time

log = logging.getLogger("spool.worker")


@dataclass
class Running:
    """An attempt whose process runs."""

    claimed: Claimed
    body: dict[str, Any]
    jtype: JobType
    attempt: Attempt
    output: Output
    deadline: float
    beat_at: float


class Attempts:
    """The running and unsettled attempts of one worker process."""

    def __init__(self, store: Store, pid: int,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.store = store
        self.pid = pid
        self.clock = clock  # read at each launch: a pass's `now` is the same for all its jobs
        self.running: dict[str, Running] = {}
        self.unsettled: dict[str, Unsettled] = {}
        self.ended: list[tuple[str, int]] = []
        self.handlers: dict[str, Callable[..., Any]] = {}
        self.pool = HandlerPool(self.handlers, self._pool_limits)

    @property
    def heartbeat(self) -> float:
        return self.store.config.defaults.heartbeat

    # -- starting ------------------------------------------------------------------------

    def launch(self, item: Claimed, now: datetime, refuse: str | None = None) -> None:
        """Start the attempt of a claimed job; whatever fails ends the attempt at once
        (`refuse`: end it without starting, for that reason)."""
        body, jtype, problem = self._validate(item, now)
        if body is None or jtype is None:
            self.end(item, None, "invalid", now, error=f"{item.path.name}: {problem}",
                     job=_job_name(item.body))
            return
        if refuse is not None:
            self.end(item, body, "failed", now, error=f"cannot start: {refuse}")
            return
        if item.still_ours() is False:
            # stalled between the claim and here past the lease, and reaped: starting now
            # would run the job twice and beyond the host's slots, which no longer count it
            log.warning("job %s attempt %d was taken before it started: not starting it",
                        item.job_id, item.attempt)
            self._let_go(item)
            return
        if self.clock is not None:
            now = max(now, self.clock())  # the moment this attempt starts, not the pass's
        try:
            self._start(item, body, jtype, now)
        except Exception as exc:  # one bad job must not stop the worker
            log.exception("cannot start %s attempt %d", item.job_id, item.attempt)
            if item.job_id not in self.running and item.job_id not in self.unsettled:
                self.end(item, body, "failed", now, error=f"cannot start: {exc}")

    def _validate(self, item: Claimed,
                  now: datetime) -> tuple[dict[str, Any] | None, JobType | None, str | None]:
        """(body, job type, problem): a hand-made canonical file is validated at its first
        claim, like a submitted one."""
        if item.error is not None or item.body is None:
            return None, None, item.error or "unreadable"
        try:
            body = normalize(item.body, self.store.config, now, item.job_id)
        except InvalidInput as exc:
            return None, None, str(exc)
        except Exception as exc:  # hostile content is invalid, not a crash
            return None, None, f"cannot be validated: {type(exc).__name__}: {exc}"
        jtype = self.store.config.job_type(body["job"])
        if (refused := refusal(jtype, item.owner, body)) is not None:
            return None, None, refused
        return body, jtype, None if jtype else f"unknown job type {body['job']!r}"

    def _start(self, item: Claimed, body: dict[str, Any], jtype: JobType, now: datetime) -> None:
        defaults = self.store.config.defaults
        path = self.store.layout.log_path(item.job_id)
        header = (f"=== spool: attempt {item.attempt} of job {item.job_id} ({body['job']}) on "
                  f"{self.store.host} at {format_time(now)} ===\n")
        try:
            output = Output.open(path, header, self.store.mode, defaults.max_log_bytes)
        except OSError as exc:
            self.end(item, body, "failed", now,
                     error=f"cannot start: cannot open the log {path}: {exc.strerror or exc}")
            return
        try:
            result_path = self.store.scratch_path("result", attempt_subject(item.job_id,
                                                                            item.attempt))
            attempt = start_attempt(self.store.layout.root, result_path, body, jtype,
                                    item.attempt, output.write_fd, now, self._handler,
                                    defaults.max_result_bytes, self.pool)
        except Exception as exc:  # bad argv, a handler that fails to import, ...
            output.write(f"spool: cannot start: {exc}\n")
            output.close()
            # bad args cannot get better by retrying; a missing program or module might
            outcome = "invalid" if isinstance(exc, InvalidInput) else "failed"
            self.end(item, body, outcome, now, error=f"cannot start: {exc}")
            return
        output.started()
        timeout = float(body.get("timeout") or jtype.timeout)
        self.running[item.job_id] = Running(item, body, jtype, attempt, output,
                                            attempt.started + timeout, attempt.started)
        log.info("claim %s (%s) attempt %d pid %d", item.job_id, body["job"], item.attempt,
                 attempt.pid)

    def _pool_limits(self) -> tuple[int, int]:
        defaults = self.store.config.defaults
        return defaults.max_jobs_per_child, defaults.max_child_rss_bytes

    def _handler(self, jtype: JobType) -> Callable[..., Any]:
        assert jtype.handler is not None
        if jtype.handler not in self.handlers:
            self.handlers[jtype.handler] = load_handler(jtype.handler)
        return self.handlers[jtype.handler]

    # -- ending --------------------------------------------------------------------------

    def collect(self, now: datetime) -> list[str]:
        """Settle every attempt whose process ended; returns their ids."""
        ended = []
        for job_id, run in list(self.running.items()):
            code = run.attempt.poll()
            if code is None:
                continue
            run.attempt.finish()  # leftovers of the group go with it
            del self.running[job_id]
            run.output.close()
            result, problem = read_result(run.attempt.result_path,
                                          self.store.config.defaults.max_result_bytes)
            ended.append(job_id)
            reason = run.attempt.stop_reason
            if reason == "taken":
                self._let_go(run.claimed)
                continue
            outcome = reason or {0: "completed", 100: "cancelled"}.get(code, "failed")
            raised = result if isinstance(result, Raised) else None
            result = None if raised is not None else result
            error = {"timeout": f"timed out after {run.deadline - run.attempt.started:g}s",
                     "failed": str(raised) if raised else f"exit code {code}"}.get(outcome)
            if outcome == "completed" and problem:
                outcome, error, result = "failed", problem, None
            self.end(run.claimed, run.body, outcome, now, error=error, exit_code=code,
                     result=result, started_at=run.attempt.started_at)
            try:
                self.store.clear_cancel(job_id)
            except OSError as exc:
                log.warning("cannot clear the cancel request of %s: %s", job_id, exc)
        return ended

    def end(self, item: Claimed, body: dict[str, Any] | None, outcome: str, now: datetime, *,
            error: str | None = None, exit_code: int | None = None, result: object = None,
            started_at: datetime | None = None, job: str | None = None) -> None:
        """Record the attempt's outcome and move the job; keep it for a retry if that fails."""
        entry = {"attempt": item.attempt, "host": self.store.host, "worker": self.pid,
                 "started_at": format_time(started_at or now), "ended_at": format_time(now)}
        fields = {"error": error, "exit_code": exit_code, "result": result, "entry": entry,
                  "job": job}
        pending = Unsettled(item, body, outcome, fields, beat_at=time.monotonic())
        if settle_once(self.store, self.pid, pending, now):
            self._let_go(item)
        else:
            self.unsettled[item.job_id] = pending

    def retry_unsettled(self, now: datetime, mono: float) -> None:
        """Try again to move the jobs whose settling failed, each on its own backoff."""
        for job_id, pending in list(self.unsettled.items()):
            if mono >= pending.retry_at and settle_once(self.store, self.pid, pending, now):
                del self.unsettled[job_id]
                self._let_go(pending.claimed)

    def _let_go(self, item: Claimed) -> None:
        if item.fd is not None:
            os.close(item.fd)
            item.fd = None
        self.ended.append((item.job_id, item.attempt))

    # -- supervising ---------------------------------------------------------------------

    def supervise(self, mono: float, stop_due: bool, hard: bool) -> None:
        """Timeouts, cancel requests, shutdown deadlines, ownership and heartbeats."""
        for job_id, run in self.running.items():
            attempt = run.attempt
            if attempt.killed_at is None:
                reason = None
                if mono >= run.deadline:
                    reason = "timeout"
                elif os.path.lexists(self.store.layout.cancel_path(job_id)):
                    reason = "cancelled"
                elif stop_due:
                    reason = "interrupted"
                if reason:
                    attempt.stop_reason = reason
                    attempt.killed_at = mono
                    attempt.signal_group(signal.SIGTERM if not hard else signal.SIGKILL)
                    log.info("stop %s: %s", job_id, reason)
            elif mono - attempt.killed_at >= run.jtype.kill_grace or hard:
                attempt.signal_group(signal.SIGKILL)
            if mono - run.beat_at >= self.heartbeat:
                run.beat_at = mono
                if not self._beat(run.claimed):
                    self._taken(run, mono)
        for pending in self.unsettled.values():
            if mono - pending.beat_at >= self.heartbeat:
                pending.beat_at = mono
                self._beat(pending.claimed)

    def _beat(self, item: Claimed) -> bool:
        """Touch a processing file of ours; False when it was taken away."""
        owned = item.still_ours()
        if owned is False:
            return False
        if owned:
            try:
                if item.fd is not None:
                    os.utime(item.fd)
                else:
                    os.utime(item.path, follow_symlinks=False)
            except OSError as exc:
                log.warning("heartbeat of %s failed: %s", item.path, exc)
        return True

    def _taken(self, run: Running, mono: float) -> None:
        """The processing file is gone or replaced: stop the group now, finish nothing."""
        log.warning("job %s attempt %d: %s is gone or replaced (reaped while this worker "
                    "stalled?): stopping its process group", run.claimed.job_id,
                    run.claimed.attempt, run.claimed.path)
        run.attempt.stop_reason = "taken"
        run.attempt.killed_at = mono
        run.attempt.signal_group(signal.SIGKILL)

    def next_wake(self, mono: float) -> list[float]:
        """Seconds until each deadline of the attempts."""
        waits = []
        for run in self.running.values():
            waits.append(run.deadline - mono)
            waits.append(self.heartbeat - (mono - run.beat_at))
            if run.attempt.killed_at is not None:
                waits.append(0.05)
        for pending in self.unsettled.values():
            waits.append(pending.retry_at - mono)
            waits.append(self.heartbeat - (mono - pending.beat_at))
        if self.running:
            waits.append(0.5)  # cancel requests are checked this often
        return waits

    def drain(self, fd: int | None = None) -> None:
        """Copy what running attempts (the one reading from `fd`) wrote so far into the log."""
        for run in self.running.values():
            if fd is None or run.output.read_fd == fd:
                run.output.drain()

    def close(self) -> None:
        """The worker stops: its idle pool children go (running attempts are over by now)."""
        self.pool.close()

    def output_fds(self) -> dict[int, Output]:
        """The pipes of running attempts, for the loop to wait on."""
        return {run.output.read_fd: run.output for run in self.running.values()
                if not run.output.eof}


def _job_name(body: object) -> str | None:
    job = body.get("job") if isinstance(body, dict) else None
    return job if isinstance(job, str) else None
