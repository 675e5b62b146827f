"""fsck of the state directories: every job file readable, in one state only, its name agreeing
with its body and its directory with its outcome; plus the layout and the drops in pending/.

Invariant: of several copies of a job the one that records more stays (docs/protocol.md,
Copies: the terminal one, else the later attempt) and the others are set aside; a file
spool cannot place goes to dead/ as `invalid`, kept as `dead/ID.orig`, unless the job has another
copy.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any, NamedTuple
from collections.abc import Iterator

from spool.drops import DROP_SETTLE, adopt_drop
from spool.errors import InvalidInput
from spool.files import list_names
from spool.fsck_base import SETTLE, Finding, Fix, Run, shown
from spool.layout import (TERMINAL_STATES, derived_id, is_valid_id, parse_pending_name,
                          parse_processing_name, parse_tmp_name, pending_name)
from spool.timeutil import parse_time

DONE_OUTCOMES = ("completed", "cancelled")
RANK = ("held", "pending", "processing", "dead", "done")  # equal records: the later one wins
LEGACY_STAGED_SUFFIXES = (".finish-done", ".finish-dead")


class Entry(NamedTuple):
    """A file in a state directory: the id and attempt its name gives, its body or why not."""

    path: Path
    state: str
    name_id: str | None
    attempt: int | None
    body: dict[str, Any] | None
    error: str | None

    @property
    def id(self) -> str | None:
        body_id = self.body.get("id") if self.body is not None else None
        return body_id if is_valid_id(body_id) else self.name_id


Copies = dict[str, list[Entry]]


def check_layout(run: Run) -> list[Finding]:
    """The directories every job file lives in exist (a missing one is created)."""
    findings = []
    for sub in ("tmp", "pending", "processing", "done", "dead"):
        path = run.layout.root / sub
        if path.is_symlink() or (os.path.lexists(path) and not path.is_dir()):
            findings.append(Finding(path, "layout", "is not a directory",
                                    "left alone: replace it by a directory by hand"))
        elif not path.exists():
            findings.append(Finding(path, "layout", "state directory is missing", "create it",
                                    _mkdir_fix(run, path)))
    return findings


def _mkdir_fix(run: Run, path: Path) -> Fix:
    def fix() -> str:
        path.mkdir(mode=0o775 if run.store.mode & 0o020 else 0o755)
        return "created"
    return fix


def check_states(run: Run) -> list[Finding]:
    """Every file of pending/ (canonical names), processing/, done/, dead/ and held/."""
    entries = list(scan(run))
    run.report.checked += len(entries)
    copies: Copies = defaultdict(list)
    for entry in entries:
        if entry.id is not None:
            copies[entry.id].append(entry)
    findings, losers = duplicates(run, copies)
    staged = staged_ids(run)
    for entry in entries:
        try:
            finding = None if entry.path in losers else check_entry(run, entry, copies, staged)
        except FileNotFoundError:
            continue  # moved since the listing
        if finding is not None:
            findings.append(finding)
    return findings + orphan_originals(run)


def scan(run: Run) -> Iterator[Entry]:
    for name in run.names(run.layout.pending):
        if parsed := parse_pending_name(name):
            yield from _entry(run, run.layout.pending / name, "pending", parsed.id, None)
    for host in run.names(run.layout.processing):
        directory = run.layout.processing / host
        if directory.is_symlink() or not directory.is_dir():
            yield from _entry(run, directory, "processing", None, None)
            continue
        for name in run.names(directory):
            parsed_p = parse_processing_name(name)
            yield from _entry(run, directory / name, "processing", *(parsed_p or (None, None)))
    for state in ("done", "dead", "held"):
        directory = run.layout.root / state
        for name in run.names(directory):
            if name.endswith(".json"):
                stem = name[:-5]
                yield from _entry(run, directory / name, state,
                                  stem if is_valid_id(stem) else None, None)
            elif not (state == "dead" and name.endswith(".orig")):
                run.info(directory / name, "not a job file (no .json name): ignored")


def _entry(run: Run, path: Path, state: str, name_id: str | None,
           attempt: int | None) -> Iterator[Entry]:
    try:
        body, error = run.read(path)
    except FileNotFoundError:
        return  # moved since the listing: a listing is a hint
    yield Entry(path, state, name_id, attempt, body, error)


def staged_ids(run: Run) -> set[str]:
    """Ids with a staged outcome in tmp/: their unfilled terminal file is tmp/'s business."""
    ids = set()
    for name in list_names(run.layout.tmp):
        parts = parse_tmp_name(name)
        if parts and parts.verb.startswith("finish-") and parts.subject:
            ids.add(parts.subject.rpartition(".")[0])
        elif name.endswith(LEGACY_STAGED_SUFFIXES):  # ID.N.finish-STATE
            ids.add(name.rsplit(".", 2)[0])
    return ids


def duplicates(run: Run, copies: Copies) -> tuple[list[Finding], set[Path]]:
    """docs/protocol.md, Copies: of several readable copies of a job keep the one that
    records more and set the others aside."""
    findings, losers = [], set()
    for job_id, group in sorted(copies.items()):
        # looked at again: a job that moved during the scan (a claim, a finish) was seen twice
        readable = [entry for entry in group
                    if entry.body is not None and os.path.lexists(entry.path)]
        if len(readable) < 2:
            continue
        keep = max(readable, key=rank)
        for entry in readable:
            if entry is not keep:
                losers.add(entry.path)
                reason = f"job {job_id} also stands as {run.rel(keep.path)}, which records more"
                findings.append(Finding(entry.path, "duplicate", reason, "set it aside",
                                        run.aside_fix(entry.path, job_id, reason)))
    return findings, losers


def rank(entry: Entry) -> tuple[Any, ...]:
    """What a copy records: terminal first, then attempts (a processing name's N counts),
    history, a name that agrees with the body, and the later state."""
    body = entry.body or {}
    attempts = entry.attempt if entry.state == "processing" else body.get("attempts")
    history = body.get("history")
    return (entry.state in TERMINAL_STATES,
            attempts if isinstance(attempts, int) and not isinstance(attempts, bool) else 0,
            len(history) if isinstance(history, list) else 0,
            entry.name_id == body.get("id"), RANK.index(entry.state))


def check_entry(run: Run, entry: Entry, copies: Copies, staged: set[str]) -> Finding | None:
    if entry.error is not None:
        return unplaceable(run, entry, "unreadable", entry.error, copies)
    body = entry.body or {}
    if not is_valid_id(body.get("id")):
        return unplaceable(run, entry, "bad-id", "has a missing or invalid id "
                           f"{shown(body.get('id'))!r} in its body", copies)
    if entry.state == "processing" and entry.name_id is None:
        return unplaceable(run, entry, "misplaced", "is not named ID.N.json inside "
                           "processing/<host>/, so no worker or reaper sees it", copies)
    if entry.state == "pending":
        return check_pending(run, entry, copies)
    if entry.state == "processing":
        return check_processing(entry)
    return check_finished(run, entry, copies, staged)


def unplaceable(run: Run, entry: Entry, kind: str, detail: str, copies: Copies) -> Finding:
    """A job file spool cannot use: to dead/ as invalid, or aside when the job has another
    copy (burying this one would make a second)."""
    body = entry.body or {}
    job_id = entry.name_id or entry.id or derived_id(run.now, run.rel(entry.path))
    others = [other for other in copies.get(job_id, []) if other.path != entry.path]
    if others:
        reason = f"{detail}; job {job_id} also stands as {run.rel(others[0].path)}"
        return Finding(entry.path, kind, reason, "set it aside",
                       run.aside_fix(entry.path, job_id, reason))
    job = shown(body["job"]) if isinstance(body.get("job"), str) else None
    return Finding(entry.path, kind, detail,
                   f"move it to dead/{job_id}.json as invalid, kept as dead/{job_id}.orig",
                   run.bury_fix(entry.path, job_id, f"{run.rel(entry.path)} {detail}", job))


def check_pending(run: Run, entry: Entry, copies: Copies) -> Finding | None:
    """`P-DUE-ID.json` agrees with the body's priority, run_at and id (the body wins: a
    rename is safe against a racing claimer, a rewrite is not)."""
    body = entry.body or {}
    priority = body.get("priority")
    try:
        if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 9:
            raise InvalidInput(f"priority {shown(priority)!r}")
        expected = pending_name(priority, parse_time(body.get("run_at")), body["id"])
    except InvalidInput as exc:
        return unplaceable(run, entry, "bad-field", f"cannot be named: invalid {exc}", copies)
    if expected == entry.path.name:
        return None
    detail = f"name and body disagree (id, priority or run_at): the body says {expected}"
    return Finding(entry.path, "name-mismatch", detail, f"rename it to pending/{expected}",
                   run.relocate_fix(entry.path, run.layout.pending / expected, body["id"],
                                    detail))


def check_processing(entry: Entry) -> Finding | None:
    """`ID.N.json` agrees with the body's id, and with its attempts (N - 1: the body is not
    rewritten at the claim that counted attempt N)."""
    body = entry.body or {}
    wrong = []
    if body["id"] != entry.name_id:
        wrong.append(f"its name says job {entry.name_id} but its body is job {body['id']}")
    attempts = body.get("attempts")
    if entry.attempt is not None and attempts != entry.attempt - 1:
        wrong.append(f"its name says attempt {entry.attempt} but its body has attempts="
                     f"{shown(attempts)} (expected {entry.attempt - 1})")
    if not wrong:
        return None
    return Finding(entry.path, "name-mismatch", "; ".join(wrong),
                   "left alone: a processing file belongs to its worker and is never "
                   "rewritten; the end of the attempt (or the reaper) settles it")


def check_finished(run: Run, entry: Entry, copies: Copies, staged: set[str]) -> Finding | None:
    """`ID.json` agrees with the body's id; done/ holds completed and cancelled jobs, dead/
    every other outcome; a terminal file without an outcome is a fill that never came."""
    body = entry.body or {}
    job_id, state, outcome = body["id"], entry.state, body.get("outcome")
    wrong = [f"its body is job {job_id}"] if entry.path.name != f"{job_id}.json" else []
    if state in TERMINAL_STATES and outcome is None:
        if job_id in staged or run.age(entry.path, ctime=True) < SETTLE:
            return None  # a move-then-fill in progress, or tmp/'s staged outcome fills it
        return unplaceable(run, entry, "unfilled", "is finished but has no outcome, and no "
                           "staged outcome is left to fill it", copies)
    if state in TERMINAL_STATES:
        right = "done" if outcome in DONE_OUTCOMES else "dead"
        if right != state:
            wrong.append(f"its outcome {shown(outcome)!r} belongs in {right}/")
            state = right
    if not wrong:
        return None
    dest = run.layout.root / state / f"{job_id}.json"
    detail = "; ".join(wrong)
    return Finding(entry.path, "wrong-state" if state != entry.state else "name-mismatch",
                   detail, f"rename it to {run.rel(dest)}",
                   run.relocate_fix(entry.path, dest, job_id, detail))


def orphan_originals(run: Run) -> list[Finding]:
    """`dead/ID.orig` without `dead/ID.json`: a rejection cut short between its moves."""
    findings = []
    for name in list_names(run.layout.dead):
        stem, path = name[:-5] if name.endswith(".orig") else "", run.layout.dead / name
        if not is_valid_id(stem) or os.path.lexists(run.layout.dead / f"{stem}.json"):
            continue
        try:
            if run.age(path, ctime=True) < SETTLE:
                continue
        except FileNotFoundError:
            continue
        findings.append(Finding(
            path, "orphan-original", "is the original of a rejected job but has no "
            f"dead/{stem}.json beside it", f"write dead/{stem}.json (invalid) for it",
            run.bury_fix(path, stem, f"dead/{name} had no record (a rejection cut short)",
                         None)))
    return findings


def check_drops(run: Run) -> list[Finding]:
    """Drops in pending/ wait for a worker; one that cannot be parsed once settled is
    rejected the way a worker would (`drops.adopt_drop`)."""
    findings = []
    for name in run.names(run.layout.pending):
        path = run.layout.pending / name
        if not name.endswith(".json"):
            run.info(path, "not a .json name: ignored by spool")
            continue
        if parse_pending_name(name) is not None:
            continue
        run.report.checked += 1
        try:
            _body, error = run.read(path)
            young = run.age(path) < DROP_SETTLE
        except FileNotFoundError:
            continue
        if error is None or young:
            run.info(path, "dropped file waiting for a worker to adopt it")
            continue
        findings.append(Finding(path, "unreadable-drop", error, "reject it to dead/ as "
                                "invalid, keeping the original (as a worker would)",
                                _reject_drop_fix(run, name)))
    return findings


def _reject_drop_fix(run: Run, name: str) -> Fix:
    def fix() -> str:
        adopt_drop(run.store, name, run.now)
        if os.path.lexists(run.layout.pending / name):
            raise FileExistsError(f"pending/{shown(name)} is still there")
        return "rejected to dead/ as invalid (see `spool ls dead`)"
    return fix
