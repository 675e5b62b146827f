"""Completing or rolling back what a crash left half done (DESIGN §3 rule 2).

Two kinds of leftovers, both recognised by name alone:
- an orphan processing file `processing/<host>/ID.N.json` (its worker died): if its outcome was
  staged (`tmp/ID.N.finish-STATE`) the finish is completed, otherwise the attempt ended `lost`
  and the job is requeued with backoff or, with no attempts left, buried;
- a hold `tmp/ID.N.VERB.HOST.PID` of a dead process: if the job already stands in a state
  directory the hold is a leftover copy and goes; otherwise the move is finished.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime
from pathlib import Path

from spool.errors import InvalidInput
from spool.files import discard, list_names
from spool.layout import parse_processing_name
from spool.ledger import pid_alive
from spool.policy import decide
from spool.store import OwnershipLost, Store
from spool.timeutil import format_time

log = logging.getLogger("spool.recovery")
HOLD_VERBS = ("requeue", "retry", "adopt")
STALE_TMP_AGE = 3600.0


def recover_orphan(store: Store, path: Path, now: datetime, outcome: str = "lost",
                   inode: int | None = None) -> str | None:
    """Finish or requeue one orphan processing file; returns where it went (None: lost race)."""
    parsed = parse_processing_name(path.name)
    if parsed is None:
        return None
    job_id, attempt = parsed
    for state in ("done", "dead"):
        staged = store.layout.tmp / f"{job_id}.{attempt}.finish-{state}"
        if staged.exists():
            if not store.complete_finish(path, staged, state, job_id):
                return None
            log.info("recovered %s: completed its staged finish into %s/", job_id, state)
            return state
    try:
        body = store.read(path)
    except FileNotFoundError:
        return None
    except (OSError, InvalidInput) as exc:
        store.reject(path, invalid_record(job_id, f"processing file is unreadable: {exc}", now),
                     now)
        return "dead"
    return settle(store, path, body, attempt, outcome, now, inode=inode,
                  error=f"worker of attempt {attempt} is gone")


def settle(store: Store, path: Path, body: dict, attempt: int, outcome: str, now: datetime, *,
           inode: int | None = None, error: str | None = None, exit_code: int | None = None,
           result: object = None, entry: dict | None = None) -> str | None:
    """Record the ended attempt in the body and move the job where the policy sends it."""
    jtype = store.config.job_type(body.get("job", ""))
    backoff = jtype.backoff if jtype else store.config.defaults.backoff
    entry = entry or {"attempt": attempt, "host": store.host, "ended_at": format_time(now)}
    entry.update(outcome=outcome, exit_code=exit_code, error=error)
    body = {**body, "history": [*(body.get("history") or []), entry],
            "attempts": attempt - 1 if outcome == "interrupted" else attempt}
    decision = decide(outcome, attempt, body.get("max_attempts", 1), backoff, now,
                      random.uniform(-1, 1))
    try:
        if decision.state == "pending":
            for key in ("outcome", "exit_code", "result", "finished_at", "error"):
                body.pop(key, None)
            body["run_at"] = format_time(decision.due or now)
            store.requeue(path, body, now, inode=inode)
        else:
            body.update(outcome=outcome, exit_code=exit_code, result=result,
                        finished_at=format_time(now), error=error)
            store.finish(path, body, decision.state, now, inode=inode)
    except OwnershipLost:
        log.warning("job %s attempt %d was taken over by another process; leaving it", body["id"],
                    attempt)
        return None
    return decision.state


def invalid_record(job_id: str, error: str, now: datetime, job: str | None = None) -> dict:
    return {"id": job_id, "job": job, "outcome": "invalid", "error": error, "attempts": 0,
            "history": [], "finished_at": format_time(now)}


def recover_holds(store: Store, now: datetime) -> int:
    """Resolve holds left in tmp/ by dead processes of this host (or stale ones of others)."""
    resolved = 0
    for name in list_names(store.layout.tmp):
        parts = name.split(".")
        if len(parts) < 5 or parts[-3] not in HOLD_VERBS:
            _clear_scratch(store, name, now)
            continue
        host, pid = parts[-2], parts[-1]
        if not _owner_gone(store, host, pid, store.layout.tmp / name, now):
            continue
        job_id = ".".join(parts[:-4])
        try:
            _resolve_hold(store, store.layout.tmp / name, job_id, parts[-3], now)
            resolved += 1
        except OSError as exc:
            log.warning("cannot resolve %s: %s", store.layout.tmp / name, exc)
    return resolved


def _owner_gone(store: Store, host: str, pid: str, path: Path, now: datetime) -> bool:
    if host == store.host and pid.isdigit():
        return not pid_alive(int(pid))
    try:
        return now.timestamp() - path.stat().st_ctime > STALE_TMP_AGE
    except FileNotFoundError:
        return False


def _resolve_hold(store: Store, hold: Path, job_id: str, verb: str, now: datetime) -> None:
    if store.locate(job_id) is not None:
        discard(hold)  # the move had committed: the hold is a leftover copy
        return
    if verb == "adopt":
        store.return_drop(hold, job_id)  # adopted again, to the same id
        return
    body = store.read(hold)
    if verb == "retry":
        body.update(attempts=0, run_at=format_time(now))
        for key in ("outcome", "exit_code", "result", "finished_at", "error"):
            body.pop(key, None)
    else:
        body["run_at"] = format_time(now)
    store.requeue_hold(hold, body, now, "recover")


def _clear_scratch(store: Store, name: str, now: datetime) -> None:
    """Stale staging files of crashed writers; staged outcomes wait for their orphan."""
    path = store.layout.tmp / name
    if ".finish-" in name:
        job_id, attempt = name.split(".finish-")[0].rsplit(".", 1)
        state = name.rsplit("-", 1)[1]
        dest = store.layout.state_dir(state) / f"{job_id}.json"
        if dest.exists() and not any(store.layout.processing.glob(f"*/{job_id}.{attempt}.json")):
            store.complete_fill(path, dest)
            return
    try:
        if now.timestamp() - path.stat().st_mtime > STALE_TMP_AGE:
            discard(path)
    except FileNotFoundError:
        pass
