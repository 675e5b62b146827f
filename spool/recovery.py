"""Completing or rolling back what a crash left half done (docs/protocol.md, Transitions rules 2, 5
and 6).

Leftovers are recognised by name alone (`layout.parse_tmp_name` for tmp/):
- an orphan processing file `processing/<host>/ID.N.json` (its worker died): if its outcome
  was staged (`tmp/finish-STATE,…,ID.N`, a complete body) the finish is completed; if the job
  already has another copy in a state directory this one is set aside, never run again;
  otherwise the attempt ended `lost` and the job is requeued with backoff or buried;
- a hold `tmp/VERB,HOST,PID,RAND,ID.N` of a dead process: if the job already stands in a state
  directory the hold is a leftover copy and goes; otherwise the move is finished (a `hold`
  into held/, a `release` into pending/ with its own due time);
- a staged outcome whose commit happened but whose fill did not is filled; one whose attempt
  is gone is dropped once its writer is gone.
A staged file that does not parse is treated as absent, never renamed over a body. Holds and
set-aside copies are job bodies and are never deleted as scratch.
"""

from __future__ import annotations

import logging
import os
import random
from datetime import datetime
from pathlib import Path
from typing import Any

from spool.allow import carry_owner
from spool.errors import InvalidInput
from spool.job import normalize
from spool.files import discard, list_names, read_state
from spool.layout import (TmpName, attempt_subject, is_valid_id, parse_processing_name,
                          parse_tmp_name)
from spool.ledger import pid_alive
from spool.limits import Limits
from spool.policy import decide
from spool.store import OwnershipLost, Store
from spool.timeutil import format_time

log = logging.getLogger("spool.recovery")
HOLD_VERBS = ("requeue", "retry", "adopt", "hold", "release")
KEPT_VERBS = (*HOLD_VERBS, "aside")  # job bodies: never removed as scratch
STALE_TMP_AGE = 3600.0


def recover_orphan(store: Store, path: Path, now: datetime, outcome: str = "lost",
                   inode: int | None = None, started_at: str | None = None,
                   lock_fd: int | None = None) -> str | None:
    """Finish or requeue one orphan processing file; returns where it went (None: lost race).
    `lock_fd`, the flock the caller took on it, is closed here before any rename replaces or
    unlinks the file (on NFS a file still open would be silly-renamed)."""
    try:
        return _recover_orphan(store, path, now, outcome, inode, started_at, lock_fd)
    finally:
        if lock_fd is not None:
            try:
                os.close(lock_fd)
            except OSError:
                pass


def _recover_orphan(store: Store, path: Path, now: datetime, outcome: str, inode: int | None,
                    started_at: str | None, lock_fd: int | None) -> str | None:
    parsed = parse_processing_name(path.name)
    if parsed is None:
        return None
    job_id, attempt = parsed
    staged = find_staged_outcome(store, job_id, attempt)
    if staged is not None:
        state, staged_path = staged
        if not store.complete_finish(path, staged_path, state, job_id, lock_fd):
            return None
        release_tokens(store, job_id, attempt)
        log.info("recovered %s: completed its staged finish into %s/", job_id, state)
        return state
    other = store.find_copy(job_id, exclude=path)
    if other is not None:
        store.set_aside(path, f"job {job_id} also stands in {other.state}/ "
                              f"({other.path.name}): this processing copy is stale", now, job_id)
        release_tokens(store, job_id, attempt)
        return "aside"
    try:
        body, info = store.read_with_stat(path)
    except FileNotFoundError:
        return None
    except (OSError, InvalidInput) as exc:
        store.reject(path, invalid_record(job_id, f"processing file is unreadable: {exc}", now),
                     now)
        release_tokens(store, job_id, attempt)
        return "dead"
    try:  # a file planted in processing/ without the fields a pending name needs
        body = normalize(body, store.config, now, job_id)
    except Exception as exc:  # hostile content is invalid, not a crash
        store.reject(path, invalid_record(job_id, f"processing file is no valid job: {exc}",
                                          now, body.get("job") if isinstance(
                                              body.get("job"), str) else None), now)
        return "dead"
    # requeued, the file becomes spool's: keep who owns the job (docs/protocol.md, Who may submit
    # what)
    body = carry_owner(store.config.job_type(body["job"]), info.st_uid, body)
    entry = {"attempt": attempt, "host": path.parent.name, "started_at": started_at,
             "ended_at": format_time(now)}
    where = settle(store, path, body, attempt, outcome, now, inode=inode, entry=entry,
                   error=f"worker of attempt {attempt} on {path.parent.name} is gone",
                   lock_fd=lock_fd)
    if where is not None:
        release_tokens(store, job_id, attempt, body)
    return where


def release_tokens(store: Store, job_id: str, attempt: int,
                   body: dict[str, Any] | None = None) -> None:
    """After moving an attempt out of processing/ for a worker that cannot: its limit tokens
    go (docs/protocol.md, Limit tokens); what a failure leaves, the reaper removes once older than
    the lease."""
    try:
        Limits(store).release_attempt(job_id, attempt, body)
    except OSError as exc:
        log.error("cannot release the limit tokens of job %s attempt %d: %s", job_id, attempt,
                  exc)


def find_staged_outcome(store: Store, job_id: str, attempt: int) -> tuple[str, Path] | None:
    """(state, path) of a complete staged outcome of attempt `attempt` of `job_id`, if any."""
    subject = attempt_subject(job_id, attempt)
    for name in list_names(store.layout.tmp):
        parts = parse_tmp_name(name)
        if parts and parts.subject == subject and parts.verb in ("finish-done", "finish-dead"):
            path = store.layout.tmp / name
            if _is_body_of(store, path, job_id):
                return parts.verb[len("finish-"):], path
    return None


def _is_body_of(store: Store, path: Path, job_id: str) -> bool:
    """Whether `path` holds a complete job body of `job_id` (a partial file never parses)."""
    try:
        return store.read(path).get("id") == job_id
    except (OSError, InvalidInput, RecursionError):
        return False


def settle(store: Store, path: Path, body: dict[str, Any], attempt: int, outcome: str,
           now: datetime, *,
           inode: int | None = None, error: str | None = None, exit_code: int | None = None,
           result: object = None, entry: dict[str, Any] | None = None,
           lock_fd: int | None = None) -> str | None:
    """Record the ended attempt in the body and move the job where the policy sends it.

    `lock_fd` (the caller's flock on `path`) is closed by the store at the right moment.
    """
    jtype = store.config.job_type(body.get("job", ""))
    backoff = jtype.backoff if jtype else store.config.defaults.backoff
    entry = dict(entry or {"attempt": attempt, "host": store.host, "ended_at": format_time(now)})
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
            store.requeue(path, body, now, inode=inode, lock_fd=lock_fd, attempt=attempt)
        else:
            body.update(outcome=outcome, exit_code=exit_code, result=result,
                        finished_at=format_time(now), error=error)
            store.finish(path, body, decision.state, now, inode=inode, lock_fd=lock_fd)
    except OwnershipLost as exc:
        log.warning("job %s attempt %d: not moving it: %s", body["id"], attempt, exc)
        return None
    return decision.state


def invalid_record(job_id: str, error: str, now: datetime,
                   job: str | None = None) -> dict[str, Any]:
    return {"id": job_id, "job": job, "outcome": "invalid", "error": error, "attempts": 0,
            "history": [], "finished_at": format_time(now)}


def recover_holds(store: Store, now: datetime) -> int:
    """Resolve holds left in tmp/ by dead processes of this host (or stale ones of others),
    finish fills that a crash interrupted, and clear stale scratch."""
    resolved = 0
    for name in list_names(store.layout.tmp):
        parts = parse_tmp_name(name)
        path = store.layout.tmp / name
        try:
            if parts is None:
                _clear_foreign(store, path, now)
            elif parts.verb in HOLD_VERBS and parts.subject:
                if _owner_gone(store, parts, path, now):
                    _resolve_hold(store, path, parts, now)
                    resolved += 1
            elif parts.verb.startswith("finish-") and parts.subject:
                _resolve_staged_outcome(store, path, parts, now)
            elif parts.verb == "reject" and parts.subject:
                _resolve_staged_rejection(store, path, parts, now)
            elif parts.verb not in KEPT_VERBS and _owner_gone(store, parts, path, now):
                _discard_if_old(path, now, 60.0 if parts.host == store.host else STALE_TMP_AGE)
        except OSError as exc:
            log.warning("cannot resolve %s: %s", path, exc)
        except Exception:  # one bad file must not stop the others' recovery
            log.exception("cannot resolve %s", path)
    return resolved


def _owner_gone(store: Store, parts: TmpName, path: Path, now: datetime) -> bool:
    """Whether the process that made a tmp/ file is gone: by pid on this host, else by age
    against the file server's clock (the file's ctime vs a fresh probe would do; the local
    clock with an hour's margin is enough for files that only wait to be cleared)."""
    if parts.host == store.host:
        return not pid_alive(parts.pid)
    try:
        return now.timestamp() - path.lstat().st_ctime > STALE_TMP_AGE
    except FileNotFoundError:
        return False


def _resolve_hold(store: Store, hold: Path, parts: TmpName, now: datetime) -> None:
    job_id = (parts.subject or "").rpartition(".")[0]
    if parts.verb == "adopt":
        if store.locate(job_id) is not None and _adopted_from(store, hold, job_id):
            discard(hold)  # the adoption had committed: the hold is a leftover copy
        else:  # adopted again (a duplicate id is then rejected, its bytes kept)
            store.return_drop(hold, job_id)
        return
    if store.locate(job_id) is not None:
        discard(hold)  # the move had committed: the hold is a leftover copy
        return
    original = store.layout.dead / f"{job_id}.orig"
    if parts.verb == "retry" and os.path.lexists(original):
        store.return_drop(original, job_id)  # `retry` of a rejected drop, cut halfway
        discard(hold)
        return
    try:
        body = normalize(store.read(hold), store.config, now, job_id)
    except InvalidInput as exc:
        store.reject(hold, invalid_record(job_id, f"held file is unreadable: {exc}", now), now)
        return
    if parts.verb == "hold":  # an operator's hold cut short: finish it, due time kept
        store.complete_hold(hold, body)
        return
    if parts.verb == "release":  # back to pending/ with its own priority and due time
        store.requeue_hold(hold, body, now, "release")
        return
    attempt = (parts.subject or "").rpartition(".")[2]
    if parts.verb == "requeue" and attempt.isdigit() and int(attempt) > 0:
        # a processing file whose requeue was cut short: its attempt counted at the claim
        entry = {"attempt": int(attempt), "host": parts.host, "ended_at": format_time(now)}
        if settle(store, hold, body, int(attempt), "lost", now, entry=entry, error=(
                f"attempt {attempt} on {parts.host} was interrupted while being requeued")):
            release_tokens(store, job_id, int(attempt), body)
        return
    if parts.verb == "retry":
        body.update(attempts=0)
        for key in ("outcome", "exit_code", "result", "finished_at", "error"):
            body.pop(key, None)
    body["run_at"] = format_time(now)
    store.requeue_hold(hold, body, now, "recover")


def _adopted_from(store: Store, hold: Path, job_id: str) -> bool:
    """Whether the job that stands under `job_id` is this held drop's own adoption: its id
    marker carries the token the adopter derived from the drop's inode, size and mtime."""
    try:
        info = os.lstat(hold)
        marker = read_state(store.markers.marker_path("id", job_id), 65536)
    except (OSError, InvalidInput):
        return False
    return marker.get("token") == f"drop:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}"


def _resolve_staged_outcome(store: Store, path: Path, parts: TmpName, now: datetime) -> None:
    """A staged outcome: fill its terminal file when the commit happened and the fill did
    not; drop it once its writer is gone and its attempt is no longer anywhere."""
    job_id, _, attempt = (parts.subject or "").rpartition(".")
    if not attempt.isdigit():
        return
    state = parts.verb[len("finish-"):]
    dest = store.layout.state_dir(state) / f"{job_id}.json"
    writer_gone = _owner_gone(store, parts, path, now)
    if any(store.processing_paths_of(job_id, int(attempt))):
        return  # not committed yet: its writer, or the orphan's recovery, will finish it
    if _unfilled(store, dest) and _is_body_of(store, path, job_id):
        store.complete_fill(path, dest)
        log.info("recovered %s: filled %s/%s.json from its staged outcome", job_id, state, job_id)
    elif writer_gone:
        _discard_if_old(path, now, 60.0)


def _resolve_staged_rejection(store: Store, path: Path, parts: TmpName, now: datetime) -> None:
    """A rejection cut short after the original reached dead/: its record follows it."""
    job_id = (parts.subject or "").rpartition(".")[0]
    dead = store.layout.dead
    if not _owner_gone(store, parts, path, now):
        return
    if os.path.lexists(dead / f"{job_id}.orig") and not os.path.lexists(dead / f"{job_id}.json") \
            and _is_body_of(store, path, job_id):
        store.complete_fill(path, dead / f"{job_id}.json")
    else:
        _discard_if_old(path, now, 60.0)


def _unfilled(store: Store, dest: Path) -> bool:
    """Whether a terminal file is a committed move whose outcome was not yet filled in."""
    try:
        return "outcome" not in store.read(dest)
    except (OSError, InvalidInput):
        return False


def _clear_foreign(store: Store, path: Path, now: datetime) -> None:
    """A name spool did not make (a hand copy, an older release's hold): once old, a job body
    whose job stands nowhere is requeued, never deleted; anything else old is cleared."""
    if path.name.startswith((".nfs", ".fuse_hidden")):
        return  # the NFS client removes these itself at the last close
    try:
        if now.timestamp() - path.lstat().st_mtime <= STALE_TMP_AGE:
            return
        body = store.read(path)
    except FileNotFoundError:
        return
    except (OSError, InvalidInput, RecursionError):
        discard(path)
        return
    job_id = body.get("id")
    if not isinstance(body.get("job"), str) or not is_valid_id(job_id):
        discard(path)
        return
    where = store.locate(job_id)
    if where is None:
        for key in ("outcome", "exit_code", "result", "finished_at", "error"):
            body.pop(key, None)
        body["run_at"] = format_time(now)
        try:
            body = normalize(body, store.config, now, job_id)
        except InvalidInput as exc:
            store.reject(path, invalid_record(job_id, f"{path.name}: {exc}", now), now)
            return
        store.requeue_hold(path, body, now, "recover")
        log.warning("recovered %s: requeued the job body left in %s", job_id, path)
    elif where.state != "processing":
        discard(path)  # a leftover copy of a job that stands elsewhere


def _discard_if_old(path: Path, now: datetime, age: float) -> None:
    try:
        if now.timestamp() - path.lstat().st_mtime > age:
            discard(path)
    except FileNotFoundError:
        pass
