"""Settling an ended attempt: record its outcome in the job and move the job where the policy
sends it — and when that fails (a full disk), keep the attempt and try again later.

While an attempt is unsettled its worker keeps the processing file held (flock, taken again if
the store had to let it go) and heart-beaten, so no reaper takes it; each try first checks that
the file is still the one claimed — or, should a requeue have stopped after holding the file,
finds this worker's own hold in tmp/ — and never moves what is no longer ours.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from spool.claim import Claimed, relock
from spool.files import list_names
from spool.layout import attempt_subject, parse_tmp_name
from spool.limits import Limits
from spool.recovery import invalid_record, settle
from spool.store import Store

log = logging.getLogger("spool.worker")


@dataclass
class Unsettled:
    """An ended attempt whose job is still to be moved; retried with a capped backoff."""

    claimed: Claimed
    body: dict[str, Any] | None  # None: the file is rejected to dead/ (it cannot be read as a job)
    outcome: str
    fields: dict[str, Any] = field(default_factory=dict)
    retry_at: float = 0.0
    delay: float = 0.0
    beat_at: float = 0.0
    tries: int = 0


def settle_once(store: Store, pid: int, pending: Unsettled, now: datetime) -> bool:
    """One try; True when the attempt is over for this worker (moved, or no longer ours), its
    descriptor closed."""
    item = pending.claimed
    try:
        source = _source(store, pid, pending)
        if source is None:
            log.warning("job %s attempt %d is no longer ours (reaped?): not finishing it",
                        item.job_id, item.attempt)
            _close(item)
            return True
        pending.tries += 1
        if pending.body is None:
            record = invalid_record(item.job_id, pending.fields["error"], now,
                                    pending.fields.get("job"))
            store.reject(source, record, now)
            _close(item)
            release_tokens(store, item)
            log.info("bury %s attempt %d: invalid: %s", item.job_id, item.attempt,
                     pending.fields["error"])
            return True
        lock_fd, item.fd = item.fd, None  # the store closes it at the right moment
        where = settle(store, source, pending.body, item.attempt, pending.outcome, now,
                       inode=item.inode, error=pending.fields["error"],
                       exit_code=pending.fields["exit_code"], result=pending.fields["result"],
                       entry=pending.fields["entry"], lock_fd=lock_fd)
    except Exception as exc:  # a full disk above all: kept, tried again
        if not isinstance(exc, OSError):
            log.exception("settling job %s attempt %d failed", item.job_id, item.attempt)
        _defer(store, pending, exc)
        return False
    if where is not None:  # None: another mover won, and the store said so
        release_tokens(store, item)
        log.info("%s %s attempt %d: %s -> %s", "finish" if where in ("done", "dead")
                 else "requeue", item.job_id, item.attempt, pending.outcome, where)
    return True


def release_tokens(store: Store, item: Claimed) -> None:
    """After the move out of processing/: the attempt's limit tokens go (docs/protocol.md, Limit
    tokens). A failure is logged; the reaper removes what is left once it is older than the
    lease."""
    try:
        Limits(store).give_back(item.tokens)
    except OSError as exc:
        log.error("cannot release the limit tokens of job %s attempt %d: %s", item.job_id,
                  item.attempt, exc)
    item.tokens = []


def _source(store: Store, pid: int, pending: Unsettled) -> Path | None:
    """Where the job file of an ended attempt stands now: its processing file while it is
    still ours, else the hold of our own requeue that a failure interrupted, else None."""
    item = pending.claimed
    owned = item.still_ours()
    if owned is None:
        raise OSError(f"cannot tell whether {item.path} is still ours")
    if owned:
        return item.path
    if pending.tries == 0:
        return None
    subject = attempt_subject(item.job_id, item.attempt)
    for name in list_names(store.layout.tmp):
        parts = parse_tmp_name(name)
        if parts and parts.verb == "requeue" and parts.host == store.host \
                and parts.pid == pid and parts.subject == subject:
            hold = store.layout.tmp / name
            if os.lstat(hold).st_ino == item.inode:
                return hold
    return None


def _defer(store: Store, pending: Unsettled, exc: Exception) -> None:
    """After a failed try: hold the processing file again and plan the next try."""
    item = pending.claimed
    if item.fd is None and pending.body is not None and item.still_ours():
        item.fd = relock(item)
    cap = max(1.0, store.config.defaults.heartbeat)
    pending.delay = min(cap, max(0.25, pending.delay * 2))
    pending.retry_at = time.monotonic() + pending.delay
    log.error("cannot settle job %s attempt %d (%s) at %s: %s; retrying in %gs", item.job_id,
              item.attempt, pending.outcome, item.path, exc, pending.delay)


def _close(item: Claimed) -> None:
    if item.fd is not None:
        os.close(item.fd)
        item.fd = None
