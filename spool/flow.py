"""Operator flow control on single jobs and schedules (docs/protocol.md, Directories are states):
hold, release and fire.

`hold` takes a pending job out of the claim order into `held/ID.json` (stage, then move; its
body carries the priority and due time its pending name had, so `release` puts it back under
the same `P-DUE-ID.json`); it keeps its unique key, since a held job is still a live job.
`fire` enqueues one fire of a schedule now as `SCHEDULE@manual.YYYYMMDDTHHMMSSZ`, under the
schedule's `overlap` and pause unless forced. The moves themselves are the store's.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spool.allow import carry_owner
from spool.errors import Conflict, ScheduleNotFound
from spool.job import Job
from spool.layout import parse_pending_name
from spool.pause import read_pauses
from spool.store import OwnershipLost, Store
from spool.timeutil import format_time, parse_due

if TYPE_CHECKING:
    from spool.api import Spool

MOVE_TRIES = 5


def where(job: Job) -> str:
    """Where a job stands, for messages: `running on host a`, `finished (done, completed)`."""
    if job.state == "processing":
        return f"running on host {job.path.parent.name} ({job.path.parent.name}/{job.path.name})"
    if job.finished:
        return f"finished ({job.state}, {job.outcome or 'being filled'})"
    return job.state


def owned_body(store: Store, path: Path) -> dict[str, Any]:
    """The body of a job file about to be rewritten by this user, with its owner recorded
    (`allow`, docs/protocol.md, Who may submit what): body and owner come from one descriptor, so
    they belong together."""
    body, info = store.read_with_stat(path)
    return carry_owner(store.config.job_type(str(body.get("job"))), info.st_uid, body)


def hold(store: Store, job_id: str, now: datetime) -> None:
    """Move a pending job to held/; Conflict (naming where it is) for any other state."""
    for _ in range(MOVE_TRIES):
        job, body = store.get(job_id)
        if job.state != "pending":
            raise Conflict(f"job {job_id!r} is {where(job)}, not pending: only pending jobs "
                           "can be held" + (" (it is held already)" if job.state == "held" else ""))
        parsed = parse_pending_name(job.path.name)
        if parsed is None:
            continue  # a name that is not canonical any more: look again
        try:
            body = owned_body(store, job.path)
        except FileNotFoundError:
            continue
        body = {**body, "priority": parsed.priority,
                "run_at": format_time(parse_due(parsed.due))}
        try:
            store.hold_pending(job.path.name, body, now)
            return
        except (OwnershipLost, FileNotFoundError):
            continue  # claimed or moved meanwhile: the next look says where it went
    raise Conflict(f"job {job_id!r} kept moving while being held; try again")


def release(store: Store, job_id: str, now: datetime) -> None:
    """Move a held job back to pending/ with its priority and due time; Conflict otherwise."""
    job, body = store.get(job_id)
    if job.state != "held":
        raise Conflict(f"job {job_id!r} is {where(job)}, not held: only held jobs can be "
                       "released")
    try:
        body = owned_body(store, job.path)
    except FileNotFoundError:
        raise Conflict(f"job {job_id!r} was moved by another process meanwhile") from None
    body = {**body, "priority": job.priority, "run_at": format_time(job.run_at or now)}
    try:
        store.release_held(body, now)
    except (OwnershipLost, FileNotFoundError):
        raise Conflict(f"job {job_id!r} was moved by another process meanwhile") from None


def manual_id(schedule: str, now: datetime) -> str:
    return f"{schedule}@manual.{now.strftime('%Y%m%dT%H%M%SZ')}"


def fire(spool: Spool, schedule: str, force: bool = False) -> str:
    """Enqueue one fire of `schedule` now; its id. ScheduleNotFound for an undeclared
    schedule; Conflict when the schedule is paused or (overlap "skip") a fire of it is still
    pending or running, unless `force`."""
    from spool.cron import active_fire, last_completed

    sched = spool.config.schedules.get(schedule)
    if sched is None:
        declared = ", ".join(sorted(spool.config.schedules)) or "none"
        raise ScheduleNotFound(f"no schedule {schedule!r} in spool.toml (declared: {declared})")
    store = spool.store
    if not force and read_pauses(store).schedule(schedule):
        raise Conflict(f"schedule {schedule!r} is paused: 'spool resume --schedule "
                       f"{schedule}' first, or fire it anyway with --force")
    if not force and sched.overlap == "skip" and (active := active_fire(store, schedule)):
        raise Conflict(f"schedule {schedule!r} has a fire still active: job {active!r} "
                       "(overlap = \"skip\"); fire it anyway with --force")
    now = spool.clock()
    meta = {"schedule": schedule, "fire_time": format_time(now),
            "last_completed_at": last_completed(store, schedule), "manual": True}
    job_id = spool.submit(sched.job, sched.args, id=manual_id(schedule, now),
                          priority=sched.priority, meta=meta, schedule=schedule)
    store.journal.record(now, "fire", job_id, host=store.host, schedule=schedule,
                         job=sched.job, forced=force)
    return job_id
