"""fsck of what guards jobs without being one: `unique/` markers, `cancel/` requests and
`limits/` tokens (docs/protocol.md, Limit tokens).

Invariant: a marker or token is removed only when what it guards is over — its job stands in
no state (ids, unique keys), is finished (unique keys, cancel requests), or its attempt is not
in processing/ (tokens) — and only once it is older than the window in which its creator may
still be between steps. A token fsck cannot read is reported, never removed.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from spool.files import read_bounded
from spool.fsck_base import Finding, Fix, Run, shown
from spool.layout import TERMINAL_STATES, is_valid_id
from spool.markers import STALE_MARKER_AGE

MARKER_BYTES = 65536
FINISHED = set(TERMINAL_STATES)


def check_markers(run: Run) -> list[Finding]:
    """`unique/<digest>`: stale when its job is gone (ids, keys) or finished (keys)."""
    index = run.job_index(holds=True)
    findings = []
    for name in run.names(run.layout.unique):
        try:
            finding = check_marker(run, run.layout.unique / name, index)
        except FileNotFoundError:
            continue
        if finding is not None:
            findings.append(finding)
    return findings


def check_marker(run: Run, path: Path, index: dict[str, set[str]]) -> Finding | None:
    old = run.age(path) > STALE_MARKER_AGE  # younger: a submit may be between its steps
    marker = read_json(path)
    if not isinstance(marker, dict):
        if not old and stat.S_ISREG(os.lstat(path).st_mode):
            return None
        return Finding(path, "bad-marker", "is not a marker (a JSON object in a regular file)",
                       "remove it", run.remove_fix(path))
    holder, kind = marker.get("id"), "key" if "key" in marker else "id"
    value = marker.get(kind)
    if not isinstance(value, str) or run.store.markers.marker_path(kind, value).name != path.name:
        if not old:
            return None
        return Finding(path, "bad-marker", "its name is not the digest of what it guards",
                       "remove it", run.remove_fix(path))
    states = index.get(holder, set()) if isinstance(holder, str) else set()
    if not states and old:
        detail = f"{kind} marker {shown(value)!r} of job {shown(holder)}, which stands in no state"
    elif kind == "key" and states and states <= FINISHED:
        detail = f"unique key {shown(value)!r} of job {holder}, which is finished"
    else:
        return None
    return Finding(path, "stale-marker", detail, "remove it", _release_fix(run, path, holder))


def _release_fix(run: Run, path: Path, holder: object) -> Fix:
    def fix() -> str:
        run.store.markers.release(path, holder if isinstance(holder, str) else None)
        return "removed"
    return fix


def check_cancels(run: Run) -> list[Finding]:
    """`cancel/ID`: stale when the job is finished or gone. A pending or held job keeps its
    request: a job requeued after its worker died is still to be cancelled when it runs."""
    index = run.job_index(holds=True)
    findings = []
    for name in run.names(run.layout.cancel):
        states = index.get(name, set())
        if not is_valid_id(name):
            detail = "names no valid job id"
        elif not states:
            detail = f"cancel request for job {name}, which stands in no state"
        elif states <= FINISHED:
            detail = f"cancel request for job {name}, which is finished"
        else:
            continue
        path = run.layout.cancel / name
        findings.append(Finding(path, "stale-cancel", shown(detail), "remove it",
                                run.remove_fix(path)))
    return findings


def check_tokens(run: Run) -> list[Finding]:
    """`limits/<name>/<key>/<i>`: a token older than the lease whose attempt is not in
    processing/ is stale (its claimer died between token and rename, or before releasing)."""
    root = run.layout.root / "limits"
    findings = []
    for pool in (root / name / key for name in run.names(root) for key in run.names(root / name)):
        for token in run.names(pool):
            try:
                finding = check_token(run, pool / token)
            except FileNotFoundError:
                continue
            if finding is not None:
                findings.append(finding)
    return findings


def check_token(run: Run, path: Path) -> Finding | None:
    if run.age(path) <= run.store.config.defaults.lease:
        return None
    token = read_json(path)
    fields = [token.get(key) for key in ("id", "attempt", "host")] \
        if isinstance(token, dict) else [None, None, None]
    job_id, attempt, host = fields
    if not (is_valid_id(job_id) and isinstance(attempt, int) and isinstance(host, str)
            and host and "/" not in host and not host.startswith(".")):
        return Finding(path, "bad-token", "does not name an attempt as JSON {id, attempt, host}",
                       "left alone: a token fsck cannot read is never removed")
    if os.path.lexists(run.layout.processing / host / f"{job_id}.{attempt}.json"):
        return None
    detail = f"token of attempt {attempt} of job {job_id} on {shown(host)}, which is not in " \
             "processing/"
    return Finding(path, "stale-token", detail, "remove it", run.remove_fix(path))


def read_json(path: Path) -> object:
    """A small JSON file (a marker, a token), or None when it is not one."""
    try:
        return json.loads(read_bounded(path, MARKER_BYTES))
    except (OSError, ValueError, RecursionError):
        return None
