"""Operator verbs that move jobs outside the worker: cancel, retry, purge."""

from __future__ import annotations

import os
from datetime import datetime

from spool.errors import Conflict, InvalidInput
from spool.store import OwnershipLost, Store
from spool.timeutil import format_time


def cancel(store: Store, job_id: str, now: datetime) -> str:
    """"cancelled" for a pending job moved to done/, "requested" for a running one."""
    for _ in range(5):
        job, body = store.get(job_id)
        if job.finished:
            raise Conflict(f"job {job_id!r} is already finished ({job.state}, {job.outcome})")
        if job.state == "processing":
            store.request_cancel(job_id)
            return "requested"
        body = {**body, "outcome": "cancelled", "finished_at": format_time(now)}
        if (job.state == "held" and store.cancel_held(body, now)) or \
                (job.state == "pending" and store.cancel_pending(job.path.name, body, now)):
            store.journal.record(now, "cancel", job_id, host=store.host)
            return "cancelled"
    raise Conflict(f"job {job_id!r} kept moving while being cancelled; try again")


def retry(store: Store, job_id: str, now: datetime) -> None:
    """Move a dead job back to pending/, attempts reset, due now; its history is kept."""
    job, body = store.get(job_id)
    if job.state != "dead":
        raise Conflict(f"job {job_id!r} is {job.state}, not dead: only dead jobs can be retried")
    original = job.path.with_suffix(".orig")
    if body.get("outcome") == "invalid" and os.path.lexists(original):
        store.retry_invalid(job.path, original, job_id, now)
        return
    fresh = {k: v for k, v in body.items()
             if k not in ("outcome", "exit_code", "result", "finished_at", "error")}
    fresh.update(attempts=0, run_at=format_time(now))
    taken = store.markers.take_all(fresh, now, exclusive_id=False)  # its unique key again
    try:
        store.requeue(job.path, fresh, now, verb="retry")
    except OwnershipLost:
        for marker in taken:
            store.markers.release(marker, job_id)
        raise Conflict(f"job {job_id!r} was moved by another process meanwhile") from None


def purge(store: Store, state: str, older_than: float | None, now: datetime, *,
          dry_run: bool = False) -> list[str]:
    """Delete finished jobs in `state` (done, dead, all) whose file is older than `older_than`."""
    if state not in ("done", "dead", "all"):
        raise InvalidInput(f"state {state!r}: only done, dead or all can be purged")
    purged = []
    for each in ("done", "dead") if state == "all" else (state,):
        directory = store.layout.state_dir(each)
        for name in store.terminal_names(each):
            path = directory / name
            if older_than is not None:
                try:
                    if now.timestamp() - path.stat().st_mtime < older_than:
                        continue
                except FileNotFoundError:
                    continue
            if dry_run or store.purge(path, now):
                purged.append(name[:-5])
    return purged
