"""Adoption of dropped files: any `pending/*.json` not in canonical form.

A drop is parsed and validated where it lies, held (renamed into tmp/, so one adopter wins),
then either renamed into pending/ under its canonical name or rejected to `dead/ID.json`
(outcome `invalid`, with the error) beside the untouched original `dead/ID.orig`.
An unparsable file younger than DROP_SETTLE seconds is left alone: its writer may be busy.
Ids of drops without a usable one derive from the file itself, so that re-adopting after a
crash reaches the same id. Hostile drops are rejected like any other bad one: a name that is
not valid UTF-8 (the record shows it with replacement characters), JSON nested too deep, a
lone surrogate in a string.
"""

from __future__ import annotations

import json
import logging
import math
import os
import stat
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from spool.allow import refusal
from spool.errors import Conflict, InvalidInput
from spool.files import list_names, read_with_stat
from spool.job import normalize
from spool.jsonvalues import MAX_DEPTH, printable, within_depth
from spool.layout import derived_id, is_valid_id, parse_pending_name
from spool.store import OwnershipLost, Store
from spool.timeutil import format_time, from_timestamp

log = logging.getLogger("spool.drops")
DROP_SETTLE = 5.0


def adopt_drops(store: Store, now: datetime) -> list[str]:
    """Adopt or reject every drop in pending/; returns the ids that entered a state."""
    return adopt_pass(store, now, store.drop_names())[0]


def adopt_pass(store: Store, now: datetime, names: list[str],
               until: float = math.inf) -> tuple[list[str], list[str]]:
    """Adopt or reject the drops `names` until the monotonic time `until`: (ids that entered
    a state, names not looked at). A worker bounds each pass so that a burst of thousands of
    drops never delays its heartbeats (docs/protocol.md, Slots and Liveness); pending/ is listed
    once per pass."""
    ids: list[str] = []
    pending_ids = {parsed.id for name in list_names(store.layout.pending)
                   if (parsed := parse_pending_name(name))}
    for index, name in enumerate(names):
        if index and time.monotonic() >= until:
            return ids, names[index:]
        job_id = adopt_drop(store, name, now, pending_ids)
        if job_id:
            ids.append(job_id)
            pending_ids.add(job_id)
    return ids, []


def adopt_drop(store: Store, name: str, now: datetime,
               pending_ids: set[str] | None = None) -> str | None:
    """Adopt or reject one drop; None when it is still young, or another process took it."""
    path = store.layout.pending / name
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    body, problem, unparsable, owner = _inspect(store, path, info)
    if unparsable and now.timestamp() - info.st_mtime < DROP_SETTLE:
        return None
    job_id, id_problem, chosen = _drop_id(name, body, info)
    problem = problem or id_problem
    normal = None
    if problem is None:
        try:
            normal = normalize(body, store.config, now, job_id)
            # the owner of the bytes read (fstat): the adopted file will be spool's (allow)
            problem = refusal(store.config.job_type(normal["job"]), owner, normal)
        except InvalidInput as exc:
            problem = str(exc)
        normal = normal if problem is None else None
    hold = store.take_drop(name, job_id)
    if hold is None:
        return None
    if normal is not None:
        try:
            token = f"drop:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}"
            store.adopt(hold, normal, now, exclusive_id=chosen, token=token,
                        pending_ids=pending_ids)
            return job_id
        except OwnershipLost:
            return None  # we stalled and another host's recovery adopted it meanwhile
        except Conflict as exc:
            problem = str(exc)
    return _reject(store, hold, job_id, name, body, problem or "unreadable", info, now)


def _inspect(store: Store, path: Path,
             info: os.stat_result) -> tuple[dict[str, Any] | None, str | None, bool, int]:
    """(body, problem, unparsable, owner): the parsed body, or what is wrong with the file,
    and the uid owning the file read."""
    limit = store.config.defaults.max_job_bytes
    if stat.S_ISLNK(info.st_mode):
        return None, "is a symlink (never followed)", False, info.st_uid
    if stat.S_ISDIR(info.st_mode):
        return None, "is a directory, not a job file", False, info.st_uid
    if not stat.S_ISREG(info.st_mode):
        return None, "is not a regular file", False, info.st_uid
    if info.st_size > limit:
        return (None, f"is {info.st_size} bytes, larger than max_job_bytes ({limit})", False,
                info.st_uid)
    try:
        data, opened = read_with_stat(path, limit)
    except OSError as exc:
        return None, f"cannot be read: {exc.strerror or exc}", False, info.st_uid
    owner = opened.st_uid
    try:
        body = json.loads(data)
    except RecursionError:
        return None, f"is nested deeper than {MAX_DEPTH} levels", False, owner
    except ValueError as exc:  # UnicodeDecodeError included
        return None, f"is not valid JSON: {exc}", True, owner
    if not within_depth(body):
        return None, f"is nested deeper than {MAX_DEPTH} levels", False, owner
    if not isinstance(body, dict):
        return None, f"is not a JSON object but a {type(body).__name__}", False, owner
    return body, None, False, owner


def _drop_id(name: str, body: dict[str, Any] | None,
             info: os.stat_result) -> tuple[str, str | None, bool]:
    """(id, problem, caller-chosen): the body's `id`, else a valid stem, else a derived id."""
    derived = derived_id(from_timestamp(info.st_mtime),
                         f"{name}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}")
    if body is not None and "id" in body:
        if is_valid_id(body["id"]):
            return body["id"], None, True
        return derived, (f"field 'id' {body['id']!r} is invalid: use 1-128 characters of "
                         "A-Z a-z 0-9 . _ @ + -, not starting with '.' or '-'"), False
    stem = name[:-5]
    if is_valid_id(stem):
        return stem, None, True
    return derived, None, False


def _reject(store: Store, hold: Path, job_id: str, name: str, body: dict[str, Any] | None,
            problem: str, info: os.stat_result, now: datetime) -> str:
    dead = store.layout.dead
    if store.locate(job_id) is not None or os.path.lexists(dead / f"{job_id}.orig"):
        job_id = derived_id(now, f"{name}:{info.st_ino}:{now.timestamp()}:rejected")
    shown = printable(name)
    job = body.get("job") if body and isinstance(body.get("job"), str) else None
    record: dict[str, Any] = {
        "id": job_id,
        "job": None if job is None else printable(job),
        "outcome": "invalid",
        "error": printable(f"dropped file {shown!r} {problem}" if problem.startswith("is ")
                           else f"dropped file {shown!r}: {problem}"),
        "dropped_as": shown,
        "attempts": 0,
        "history": [],
        "finished_at": format_time(now),
    }
    store.reject(hold, record, now)
    log.warning("rejected drop pending/%s as dead/%s.json (invalid): %s", shown, job_id,
                record["error"])
    return job_id
