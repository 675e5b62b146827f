"""`spool cron`: enqueue each due fire of each schedule exactly once, across daemons and hosts.

A fire's job id is `SCHEDULE@YYYYMMDDTHHMMSSZ`, submitted with the id guarded by link(2), and
the fire is then recorded by a marker `cron/SCHEDULE@STAMP` (also link(2)) that outlives any
purge of the job, so a late daemon can never enqueue a fire that already ran. Each daemon keeps
its own "checked up to" time per schedule in `cron/state.<host>.json`; a schedule seen for the
first time starts from now (no backfill before it was known, or before `start_at`).
A paused schedule (`paused/schedule.NAME` or `paused/all`, docs/protocol.md, Markers) fires
nothing: each fire that falls due meanwhile is logged and recorded as skipped by its marker, so no
daemon catches it up after `resume`. A manual fire (`spool fire`, `spool.flow`) is
`SCHEDULE@manual.STAMP`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from spool.api import Spool
from spool.config import Schedule
from spool.errors import Conflict, InvalidInput, SpoolError
from spool.files import discard, list_names, read_state, replace_file
from spool.pause import Pauses, read_pauses
from spool.schedules import due_fires, next_fire
from spool.store import Store
from spool.timeutil import format_time, parse_time

log = logging.getLogger("spool.cron")


def fire_id(schedule: str, fire: datetime) -> str:
    return f"{schedule}@{fire.strftime('%Y%m%dT%H%M%SZ')}"


def after_id(schedule: str, upstream: str) -> str:
    """`SCHEDULE@after.UPSTREAM`; an upstream id too long for that (a caller's own id that
    starts like a fire of the upstream schedule) is replaced by a digest of it."""
    job_id = f"{schedule}@after.{upstream}"
    if len(job_id) > 128:
        job_id = f"{schedule}@after.{hashlib.sha256(upstream.encode()).hexdigest()[:24]}"
    return job_id


def active_fire(store: Store, schedule: str) -> str | None:
    """The id of a pending or running job of `schedule` (what `overlap = "skip"` waits on)."""
    prefix = f"{schedule}@"
    for name in list_names(store.layout.pending):
        if name[26:].startswith(prefix):
            return name[26:-5]
    for path in store.processing_paths():
        if path.name.startswith(prefix):
            return path.name.rsplit(".", 2)[0]
    return None


def last_completed(store: Store, schedule: str) -> str | None:
    """`finished_at` of the latest completed job of `schedule` among its newest 50 in done/."""
    prefix = f"{schedule}@"
    names = sorted((n for n in store.terminal_names("done") if n.startswith(prefix)),
                   reverse=True)
    best: datetime | None = None
    for name in names[:50]:
        try:
            body = store.read(store.layout.done / name)
            if body.get("outcome") != "completed":
                continue
            # a hand-made or planted record may lack the time or hold anything there
            finished = parse_time(body.get("finished_at"))
        except (OSError, SpoolError):
            continue
        if best is None or finished > best:
            best = finished
    return None if best is None else format_time(best)


class Cron:
    """The tick daemon's state and one `step(now)`."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.store = spool.store
        self.state_path = self.store.layout.cron / f"state.{spool.host}.json"
        self.checked: dict[str, str] = self._load()
        self.seen_upstream: set[str] = set()
        self.pauses = Pauses()

    def _load(self) -> dict[str, str]:
        try:
            return read_state(self.state_path)
        except (OSError, InvalidInput):
            return {}

    def step(self, now: datetime) -> list[str]:
        """Enqueue every due fire; returns the ids enqueued by this daemon."""
        enqueued: list[str] = []
        self.pauses = read_pauses(self.store)  # one listing of paused/ per step
        for name, sched in self.spool.config.schedules.items():
            try:
                if sched.after:
                    enqueued += self._after_step(sched, now)
                else:
                    last = self._last(sched, now)
                    for fire in due_fires(sched, last, now):
                        if self.enqueue(sched, fire, now, None):
                            enqueued.append(fire_id(name, fire))
                    self.checked[name] = format_time(now)
            except (OSError, SpoolError) as exc:
                log.error("schedule %s: %s (will retry)", name, exc)
        replace_file(self.state_path, json.dumps(self.checked).encode(),
                     self.store.layout.tmp, self.spool.config.defaults.durable,
                     host=self.spool.host, mode=self.store.mode)
        return enqueued

    def _last(self, sched: Schedule, now: datetime) -> datetime:
        text = self.checked.get(sched.name)
        last = parse_time(text) if text else now
        if sched.start_at and sched.start_at - timedelta(microseconds=1) > last:
            last = sched.start_at - timedelta(microseconds=1)
        return last

    def enqueue(self, sched: Schedule, fire: datetime, now: datetime,
                upstream: str | None) -> bool:
        """Enqueue one fire unless it already was (by anyone) or overlap says skip."""
        job_id = after_id(sched.name, upstream) if upstream else fire_id(sched.name, fire)
        marker = self.store.layout.cron / job_id
        if os.path.lexists(marker):
            return False
        if self.pauses.schedule(sched.name):
            log.info("skip %s (fire time %s): schedule %s is paused", job_id,
                     format_time(fire), sched.name)
            self._mark(marker, {"id": job_id, "skipped": "schedule paused"})
            return False
        if sched.overlap == "skip" and (active := active_fire(self.store, sched.name)):
            log.info("skip %s: previous fire %s is still active", job_id, active)
            self._mark(marker, {"id": job_id, "skipped": f"{active} still active"})
            return False
        meta = {"schedule": sched.name, "fire_time": format_time(fire),
                "last_completed_at": last_completed(self.store, sched.name)}
        if upstream:
            meta["upstream"] = upstream
        try:
            self.spool.submit(sched.job, sched.args, id=job_id, priority=sched.priority,
                              meta=meta, schedule=sched.name)
        except Conflict:
            self._mark(marker, {"id": job_id})  # another daemon enqueued it first
            return False
        self._mark(marker, {"id": job_id})
        log.info("fire %s: enqueued %s", sched.name, job_id)
        return True

    def _mark(self, marker: Path, content: dict[str, Any]) -> None:
        staged = self.store.stage_data(json.dumps(content).encode(), "fire")
        try:
            os.link(staged, marker)
        except FileExistsError:
            pass
        finally:
            discard(staged)

    def _after_step(self, sched: Schedule, now: datetime) -> list[str]:
        first_seen = self.checked.setdefault(sched.name, format_time(now))
        enqueued = []
        prefix = f"{sched.after}@"
        for name in self.store.terminal_names("done"):
            upstream = name[:-5]
            if not name.startswith(prefix) or upstream in self.seen_upstream:
                continue
            try:
                body = self.store.read(self.store.layout.done / name)
            except (OSError, SpoolError):
                continue
            self.seen_upstream.add(upstream)
            finished = body.get("finished_at") or ""
            if body.get("outcome") == "completed" and finished >= first_seen \
                    and self.enqueue(sched, parse_time(finished), now, upstream):
                enqueued.append(after_id(sched.name, upstream))
        return enqueued

    def next_wake(self, now: datetime, poll: float) -> float:
        """Seconds to sleep: until the next fire, or `poll` when an `after` schedule waits."""
        waits = [60.0]
        for sched in self.spool.config.schedules.values():
            fire = next_fire(sched, now)
            waits.append(poll if fire is None else (fire - now).total_seconds())
        return max(0.0, min(waits))
