"""fsck of tmp/: holds, staged outcomes and scratch whose writer is gone.

Names follow `layout.tmp_name` (`VERB,HOST,PID,RAND[,ID.N]`); an older release's dotted names
(`ID.N.VERB.HOST.PID` holds, `ID.N.finish-STATE` staged outcomes) are read as legacy.
A writer is gone when, on this host, its pid is not alive; on another, when the file has not
changed for an hour. Files of live writers are never findings.

Invariant: a hold is a job body and is never deleted: recovery (`recover_holds`) finishes its
move, or it is set aside when its job already stands in a state. A staged outcome fills its
unfilled terminal file or is set aside; only scratch that holds no job body is removed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from spool.errors import SpoolError
from spool.fsck_base import Finding, Fix, Run, shown
from spool.layout import attempt_subject, is_valid_id, parse_tmp_name, tmp_name
from spool.ledger import pid_alive
from spool.recovery import HOLD_VERBS, STALE_TMP_AGE, recover_holds

_LEGACY_HOLD = re.compile(r"(?P<id>.+)\.(?P<n>[0-9]{1,9})\.(?P<verb>requeue|retry|adopt)\."
                          r"(?P<host>[A-Za-z0-9_][A-Za-z0-9._-]*)\.(?P<pid>[0-9]{1,9})")
_LEGACY_STAGED = re.compile(r"(?P<id>.+)\.(?P<n>[0-9]{1,9})\.finish-(?P<state>done|dead)")


def check_tmp(run: Run) -> list[Finding]:
    standing = run.job_index()
    findings = []
    for name in run.names(run.layout.tmp):
        try:
            finding = check_tmp_file(run, run.layout.tmp / name, name, standing)
        except FileNotFoundError:
            continue  # its writer finished meanwhile
        if finding is not None:
            findings.append(finding)
    return findings


def check_tmp_file(run: Run, path: Path, name: str,
                   standing: dict[str, set[str]]) -> Finding | None:
    parts = parse_tmp_name(name)
    if parts is not None:
        if parts.verb == "aside":
            run.info(path, f"set aside ({shown(parts.subject)}): a job body kept for an "
                           "operator to move back or remove (the journal says why)")
            return None
        if not writer_gone(run, parts.host, parts.pid, path):
            return None
        job_id, _, attempt = (parts.subject or "").rpartition(".")
        if is_valid_id(job_id) and attempt.isascii() and attempt.isdigit():
            if parts.verb in HOLD_VERBS:
                return stale_hold(run, path, parts.verb, job_id, int(attempt), None, standing)
            if parts.verb in ("finish-done", "finish-dead"):
                return stale_staged(run, path, parts.verb[7:], job_id, int(attempt), False,
                                    standing)
        return stale_scratch(run, path, f"scratch file ({shown(parts.verb)}) of a gone "
                             "writer", standing)
    if match := _LEGACY_HOLD.fullmatch(name):
        if is_valid_id(match["id"]) and writer_gone(run, match["host"], int(match["pid"]),
                                                     path):
            return stale_hold(run, path, match["verb"], match["id"], int(match["n"]),
                              (match["host"], int(match["pid"])), standing)
        return None
    if run.age(path) <= STALE_TMP_AGE:
        return None
    if (match := _LEGACY_STAGED.fullmatch(name)) and is_valid_id(match["id"]):
        return stale_staged(run, path, match["state"], match["id"], int(match["n"]), True,
                            standing)
    return stale_scratch(run, path, "file of an unknown name, older than an hour", standing)


def writer_gone(run: Run, host: str, pid: int, path: Path) -> bool:
    """Same host: its pid is not alive. Another host: unchanged for an hour (ctime)."""
    if host == run.store.host:
        return not pid_alive(pid)
    return run.age(path, ctime=True) > STALE_TMP_AGE


def stale_hold(run: Run, path: Path, verb: str, job_id: str, attempt: int,
               legacy: tuple[str, int] | None, standing: dict[str, set[str]]) -> Finding:
    """A job file taken out of its state for a move whose writer died."""
    run.report.checked += 1
    kind = "legacy-hold" if legacy else "stale-hold"
    what = f"hold ({verb}) of attempt {attempt} of job {job_id}, whose writer is gone"
    states = sorted(standing.get(job_id, ()))
    if states:
        detail = f"{what}; the job already stands in {', '.join(states)}/"
        return Finding(path, kind, detail, "set it aside", run.aside_fix(path, job_id, detail))
    _, error = run.read(path)
    if error is not None and verb != "adopt":  # a held drop may be anything: it is re-adopted
        detail = f"{what}; it {error}"
        return Finding(path, kind, detail, f"move it to dead/{job_id}.json as invalid",
                       run.bury_fix(path, job_id, f"{run.rel(path)}: {detail}", None))
    finding = Finding(path, kind, f"{what}; the job stands in no state",
                      "finish the move with recovery (recover_holds)")
    finding.fix = _recovery_fix(run, finding, path, verb, job_id, attempt, legacy)
    return finding


def _recovery_fix(run: Run, finding: Finding, path: Path, verb: str, job_id: str,
                  attempt: int, legacy: tuple[str, int] | None) -> Fix:
    def fix() -> str:
        target = path
        if legacy is not None:  # an older release's name: rename it into today's scheme
            target = run.layout.tmp / tmp_name(verb, legacy[0], legacy[1],
                                               attempt_subject(job_id, attempt))
            run.store.relocate(path, target, run.now, job_id,
                               "legacy hold renamed into the tmp_name scheme")
        run.handed.append((finding, target, job_id))
        return "handed to recovery"
    return fix


def finish_recovery(run: Run) -> None:
    """Let recovery finish the holds handed to it, then see what became of each."""
    handed, run.handed = run.handed, []
    error = ""
    try:
        recover_holds(run.store, run.now)
    except (OSError, SpoolError) as exc:
        error = f": {shown(exc)}"
    standing = run.job_index()
    for finding, target, job_id in handed:
        if os.path.lexists(target):
            finding.repaired = False
            finding.action = f"not repaired: recovery left {run.rel(target)} in place (it " \
                             f"waits until its writer is judged gone){error}"
        else:
            where = ", ".join(sorted(standing.get(job_id, ()))) or "no state"
            finding.action = f"resolved by recovery: job {job_id} now stands in {where}"


def stale_staged(run: Run, path: Path, state: str, job_id: str, attempt: int, legacy: bool,
                 standing: dict[str, set[str]]) -> Finding | None:
    """A staged outcome whose writer is gone: it fills its terminal file, or is kept aside."""
    run.report.checked += 1
    what = f"staged outcome ({state}) of attempt {attempt} of job {job_id}" + \
           (" under an older name" if legacy else "")
    if run.store.processing_paths_of(job_id, attempt):
        if not legacy:  # the attempt's own recovery (worker or reaper) completes the finish
            run.info(path, f"{what}: waits for the recovery of its attempt in processing/")
            return None
        target = run.layout.tmp / tmp_name(f"finish-{state}", run.store.host, os.getpid(),
                                           attempt_subject(job_id, attempt))
        detail = f"{what}, whose attempt is still in processing/"
        return Finding(path, "legacy-staged", detail, "rename it into the tmp_name scheme, "
                       "where the attempt's recovery finds it",
                       run.relocate_fix(path, target, job_id, detail))
    body, error = run.read(path)
    if body is None:
        return Finding(path, "stale-staged", f"{what}: it {error} (it holds no body)",
                       "remove it", run.remove_fix(path))
    dest = run.layout.root / state / f"{job_id}.json"
    if body.get("id") == job_id and unfilled(run, dest, attempt):
        detail = f"{run.rel(dest)} was moved but never filled; this is its {what}"
        return Finding(path, "unfilled", detail, f"fill {run.rel(dest)} with it",
                       _fill_fix(run, path, dest))
    where = ", ".join(sorted(standing.get(job_id, ()))) or "no state"
    detail = f"{what}, whose writer is gone; the job stands in {where}"
    return Finding(path, "stale-staged", detail, "set it aside",
                   run.aside_fix(path, job_id, detail))


def unfilled(run: Run, dest: Path, attempt: int) -> bool:
    """Whether `dest` is the committed, unfilled move of attempt `attempt`."""
    try:
        body = run.store.read(dest)
    except (OSError, SpoolError, RecursionError):
        return False
    return "outcome" not in body and body.get("attempts") == attempt - 1


def _fill_fix(run: Run, staged: Path, dest: Path) -> Fix:
    def fix() -> str:
        if not run.store.complete_fill(staged, dest):
            raise FileNotFoundError(f"{staged} is gone")
        return f"filled {run.rel(dest)}"
    return fix


def stale_scratch(run: Run, path: Path, what: str,
                  standing: dict[str, set[str]]) -> Finding:
    """Scratch of a gone writer: a job body in it is set aside, anything else removed."""
    body, error = run.read(path)
    if error == "is a directory":
        return Finding(path, "stale-scratch", f"{what}: {error}",
                       "left alone: remove the directory by hand")
    if body is not None and isinstance(body.get("job"), str) and is_valid_id(body.get("id")):
        run.report.checked += 1
        where = ", ".join(sorted(standing.get(body["id"], ()))) or "no state"
        detail = f"{what}; it holds a body of job {body['id']}, which stands in {where}"
        return Finding(path, "stale-scratch", detail, "set it aside",
                       run.aside_fix(path, body["id"], detail))
    return Finding(path, "stale-scratch", f"{what}; it holds no job body", "remove it",
                   run.remove_fix(path))
