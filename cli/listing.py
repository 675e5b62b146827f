"""`spool ls`: the columns, filters and order of README, Command line, kept apart from the commands.

A listing is a hint (docs/protocol.md, Transitions: listings are hints on NFS): every value here
comes from one read of each job file and, for running jobs, of their host's ledger; nothing is
written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from spool.api import Spool
from spool.dependencies import KINDS, judge, terminal_fate
from spool.job import Job
from spool.jsonvalues import printable
from spool.pause import Pauses
from spool.limitgates import full_pool
from spool.timeutil import parse_time

HEADER = ["ID", "STATE", "JOB", "ATTEMPT", "HOST", "AGE", "OUTCOME", "INFO"]
INFO_WIDTH = 60
FINISHED = ("done", "dead")


def ago(seconds: float | None) -> str:
    """A short age for people: `12s`, `5m`, `3h`, `2d`."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


@dataclass
class Line:
    """One job as `ls` sees it."""

    job: Job
    body: dict
    host: str | None
    attempt: int
    since: datetime | None  # what AGE counts from: submitted, started or finished

    def row(self, sp: Spool, now: datetime, pauses: Pauses) -> list[str]:
        job = self.job
        if job.extra.get("unreadable"):
            return [job.id, job.state, "?", "-", "-", "-", "unreadable", "-"]
        age = None if self.since is None else (now - self.since).total_seconds()
        return [job.id, job.state, printable(job.job), f"{self.attempt}/{job.max_attempts}",
                printable(self.host) if job.state == "processing" and self.host else "-",
                ago(age), printable(job.outcome or "-"), clip(info(sp, job, now, pauses))]


def clip(text: str, width: int = INFO_WIDTH) -> str:
    text = printable(" ".join(text.split()))
    return text if len(text) <= width else text[:width - 1] + "…"


def info(sp: Spool, job: Job, now: datetime, pauses: Pauses) -> str:
    """Why a pending job is not running, or the error of a finished one (`pauses`: read once
    per listing)."""
    if job.state == "held":
        return "held"
    if job.state == "pending":
        if job.run_at is not None and job.run_at > now:
            return f"due in {ago((job.run_at - now).total_seconds())}"
        for kind in KINDS:
            for dep in getattr(job, kind):
                fate = terminal_fate(sp.store, dep)
                verdict = judge(kind, fate) if fate else None
                if verdict and verdict.verdict == "never":
                    return f"{kind} {dep} (it ended {verdict.fate}: can never run)"
                if not fate and sp.store.locate(dep) is None:  # purged: blocked for good
                    return f"blocked: {kind} {dep} is missing"
                if not verdict or verdict.verdict != "met":
                    return f"{kind} {dep}"
        if pauses.job(job.job):
            return "paused"
        pool = full_pool(sp.store, {"job": job.job, "args": job.args,
                                    "limits": job.extra.get("limits")})
        return f"limit {pool}" if pool else "-"
    if job.state == "processing":
        return "-"
    return job.error or "-"


def line(sp: Spool, job: Job, body: dict) -> Line:
    """The columns' raw values of one job."""
    if job.state == "processing":
        running = sp.running(job) or {}
        started = running.get("started_at")
        since = parse_time(started) if started else job.created_at
        return Line(job, body, running.get("host"), running.get("attempt", job.attempts + 1),
                    since)
    if job.state not in FINISHED:
        return Line(job, body, None, job.attempts, job.created_at)
    last_host = job.history[-1].get("host") if job.history else None
    return Line(job, body, last_host if isinstance(last_host, str) else None, job.attempts,
                job.finished_at)


def select(sp: Spool, lines: list[Line], *, outcome: str | None, host: str | None,
           since: datetime | None, newest: bool, limit: int | None) -> list[Line]:
    """Filter, order and cut a listing.

    Order: pending in claim order, then running, then finished by id (oldest first), or with
    `newest` finished newest first. `limit` keeps what matters most: the next to run, the
    running, then the most recently finished (so `ls done --limit 20` shows the last 20).
    """
    kept = [ln for ln in lines
            if (outcome is None or ln.job.outcome == outcome)
            and (host is None or ln.host == host)
            and (since is None or (ln.since is not None and ln.since >= since))]
    live = [ln for ln in kept if ln.job.state not in FINISHED]
    finished = [ln for ln in kept if ln.job.state in FINISHED]
    if limit is not None:
        recent = sorted(finished, key=_finish_key, reverse=True)
        chosen = {id(ln) for ln in recent[:max(0, limit - len(live))]}
        live = live[:limit]
        finished = [ln for ln in finished if id(ln) in chosen]
    if newest:
        finished = sorted(finished, key=_finish_key, reverse=True)
    return live + finished


def _finish_key(ln: Line) -> tuple[str, str]:
    when = ln.job.finished_at
    return (when.isoformat() if when else "", ln.job.id)
