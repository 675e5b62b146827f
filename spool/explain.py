"""`spool explain`: why a job is where it is, read from the catalog without changing anything.

A pending (or held) job passes its gates in claim order — due time, each `after` dependency,
pause, limits, slots against each host's capacity, hold — and each gate gives a verdict:
`ok` (passed), `waiting` (will pass by itself), `blocked` (will not pass as things stand: an
operator must act) or `never` (can never pass: the worker ends the job as cancelled); each
gate is one function in `GATES`. A running job shows its host, worker, attempt, runtime and
heartbeat age; a finished one its outcome, error and attempts. Everything here is a reading:
listings are hints (docs/protocol.md, Transitions: listings are hints on NFS) and the answer may be
stale by the time it is printed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spool.catalog import Catalog
from spool.dependencies import KINDS, dependencies, judge, require_known, terminal_fate
from spool.errors import InvalidInput, JobNotFound
from spool.files import list_names, read_state
from spool.job import Job
from spool.layout import parse_pending_name, parse_processing_name, validate_id
from spool.pause import read_pauses
from spool.limitgates import pool_verdicts
from spool.timeutil import (
    format_time,
    human_duration,
    human_time,
    parse_due,
    parse_time,
)

if TYPE_CHECKING:
    from spool.api import Spool

VERDICTS = ("ok", "waiting", "blocked", "never")


@dataclass(frozen=True)
class Gate:
    """One gate of a pending job: its name, verdict, a line for people and its subject."""

    gate: str
    verdict: str
    detail: str
    subject: str | None = None  # the dependency id, host or limit the gate is about


# -- reading what the gates need --------------------------------------------------------------


def host_ledgers(catalog: Catalog) -> dict[str, dict[str, Any]]:
    """Every host's ledger (`hosts/<host>.json`) as a hint; an unreadable one is skipped."""
    ledgers = {}
    for name in sorted(list_names(catalog.layout.hosts)):
        if not name.endswith(".json") or name.endswith(".reaper.json") or name.startswith("."):
            continue
        try:
            ledgers[name[:-5]] = read_state(catalog.layout.hosts / name)
        except (OSError, InvalidInput):
            continue
    return ledgers


def _int(value: object, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _used(ledger: dict[str, Any]) -> int:
    running = ledger.get("running")
    if not isinstance(running, dict):
        return 0
    return sum(_int(e.get("slots"), 1) for e in running.values() if isinstance(e, dict))


def held_path(catalog: Catalog, job_id: str) -> str:
    """Where a held job lives (docs/protocol.md, Directories are states: `held/ID.json`)."""
    return os.path.join(catalog.layout.root, "held", f"{job_id}.json")


def known_ids(catalog: Catalog) -> set[str]:
    """The id of every job in any state, from listings only (one pass over each directory)."""
    ids = {p.id for n in list_names(catalog.layout.pending) if (p := parse_pending_name(n))}
    ids.update(parsed[0] for path in catalog.processing_paths()
               if (parsed := parse_processing_name(path.name)))
    for state in ("done", "dead"):
        ids.update(name[:-5] for name in catalog.terminal_names(state))
    ids.update(n[:-5] for n in list_names(catalog.layout.root / "held") if n.endswith(".json"))
    return ids


def dependency(catalog: Catalog, dep: str, known: set[str] | None = None,
               kind: str = "after") -> Gate:
    """The gate of one dependency of kind `kind` (after, after_any, after_failed); every kind
    is an `after` gate, its detail naming the kind when it is not plain `after`."""
    label = "" if kind == "after" else f"{kind} "
    fate = terminal_fate(catalog, dep)
    verdict = judge(kind, fate) if fate is not None else None
    if verdict is not None and verdict.verdict == "met":
        return Gate("after", "ok", f"{label}{dep} {verdict.fate}", dep)
    if verdict is not None and verdict.verdict == "never":
        return Gate("after", "never", f"{label}{dep} ended {verdict.fate}: this job can never "
                    "run (the next worker pass ends it as cancelled)", dep)
    present = dep in known if known is not None else catalog.locate(dep) is not None \
        or os.path.lexists(held_path(catalog, dep))
    if not present and fate is None:
        return Gate("after", "blocked", f"{label}{dep} is missing (purged, or never existed): "
                    "this job is blocked and waits for it forever; cancel it", dep)
    where = catalog.locate(dep) if known is None else None
    state = where.state if where else "pending, running or held"
    wants = {"after": "completed", "after_any": "finished", "after_failed": "dead"}[kind]
    return Gate("after", "waiting", f"{label}{dep} is {state}, not {wants} yet", dep)


def require_dependencies(catalog: Catalog, after: Iterable[str],
                         also: Iterable[str] = ()) -> None:
    """JobNotFound naming the first `after` id that is no job in any state (docs/protocol.md,
    Dependencies)."""
    require_known(catalog, {"after": list(after)}, also)


def blocked_ids(catalog: Catalog) -> list[str]:
    """Pending jobs that can never run as things stand: a dependency that is missing
    (purged) or ended dead or cancelled. Reads the body of every pending job (not only the
    names): `status` pays one read per pending job for it."""
    known = known_ids(catalog)
    blocked = []
    for name in catalog.pending_names():
        try:
            body = catalog.read(catalog.layout.pending / name)
        except (OSError, InvalidInput):
            continue
        if any(dependency(catalog, dep, known, kind).verdict in ("blocked", "never")
               for kind, dep in dependencies(body)):
            blocked.append(str(body.get("id") or name))
    return blocked


# -- the gates -------------------------------------------------------------------------------


def due_gate(catalog: Catalog, job: Job, now: datetime,
             ledgers: dict[str, dict[str, Any]]) -> list[Gate]:
    parsed = parse_pending_name(job.path.name)
    due = parse_due(parsed.due) if parsed else job.run_at
    if due is None:
        return [Gate("due", "ok", "no due time: due now")]
    if due <= now:
        return [Gate("due", "ok", f"due since {human_time(due)} "
                     f"({human_duration((now - due).total_seconds())} ago)")]
    return [Gate("due", "waiting", f"due in {human_duration((due - now).total_seconds())} "
                 f"(at {human_time(due)})")]


def after_gates(catalog: Catalog, job: Job, now: datetime,
                ledgers: dict[str, dict[str, Any]]) -> list[Gate]:
    deps = [(kind, dep) for kind in KINDS for dep in getattr(job, kind)]
    if not deps:
        return [Gate("after", "ok", "no dependencies")]
    return [dependency(catalog, dep, kind=kind) for kind, dep in deps]


def pause_gate(catalog: Catalog, job: Job, now: datetime,
               ledgers: dict[str, dict[str, Any]]) -> list[Gate]:
    pauses = read_pauses(catalog)
    if pauses.all:
        return [Gate("pause", "blocked", "everything is paused: `spool resume --all`", "all")]
    if pauses.job(job.job):
        return [Gate("pause", "blocked", f"job type {job.job} is paused: `spool resume "
                     f"{job.job}`", f"job.{job.job}")]
    hosts = sorted(pauses.names("host"))
    if hosts and ledgers and all(pauses.host(h) for h in ledgers):
        return [Gate("pause", "blocked", f"every host is paused ({', '.join(hosts)}): "
                     "`spool resume --host H`", f"host.{hosts[0]}")]
    if hosts:
        return [Gate("pause", "ok", f"not paused (hosts paused: {', '.join(hosts)})")]
    return [Gate("pause", "ok", "not paused")]


def limit_gates(catalog: Catalog, job: Job, now: datetime,
                ledgers: dict[str, dict[str, Any]]) -> list[Gate]:
    body = {"job": job.job, "args": job.args, "limits": job.extra.get("limits")}
    return [Gate("limits", *verdict) for verdict in pool_verdicts(catalog, body)]


def slots_gate(catalog: Catalog, job: Job, now: datetime,
               ledgers: dict[str, dict[str, Any]]) -> list[Gate]:
    need = f"{job.slots} slot{'s' if job.slots != 1 else ''}"
    hosts = {h: (_int(led.get("capacity")), _used(led)) for h, led in ledgers.items()}
    if not hosts:
        return [Gate("slots", "waiting", f"{need}: no worker has run on this spool yet")]
    each = ", ".join(f"{h}: {cap - used} of {cap} free" for h, (cap, used) in hosts.items())
    if all(job.slots > cap for cap, _ in hosts.values()):
        return [Gate("slots", "blocked", f"{need}: unclaimable, bigger than every host's "
                     f"capacity ({each})")]
    fits = [h for h, (cap, used) in hosts.items() if job.slots <= cap - used]
    if fits:
        return [Gate("slots", "ok", f"{need}: fits {', '.join(fits)} now ({each})", fits[0])]
    return [Gate("slots", "waiting", f"{need}: every host that can take it is busy ({each})")]


def hold_gate(catalog: Catalog, job: Job, now: datetime,
              ledgers: dict[str, dict[str, Any]]) -> list[Gate]:
    if job.state == "held":
        return [Gate("hold", "blocked", f"held: `spool release {job.id}` puts it back")]
    return [Gate("hold", "ok", "not held")]


GateCheck = Callable[[Catalog, Job, datetime, "dict[str, dict[str, Any]]"], "list[Gate]"]
GATES: tuple[GateCheck, ...] = (due_gate, after_gates, pause_gate, limit_gates, slots_gate,
                                hold_gate)


# -- the explanation -------------------------------------------------------------------------


def _summary(gates: list[Gate]) -> str:
    for verdict in ("never", "blocked", "waiting"):
        stuck = [g for g in gates if g.verdict == verdict]
        if stuck:
            return f"{verdict}: {stuck[0].gate} {stuck[0].detail}" if verdict != "waiting" \
                else f"waiting: {stuck[0].detail}"
    return "ready: a worker claims it at its next pass"


def _get(catalog: Catalog, job_id: str) -> tuple[Job, dict[str, Any]]:
    try:
        return catalog.get(job_id)
    except JobNotFound:
        path = held_path(catalog, job_id)
        try:
            body = catalog.read(path)  # type: ignore[arg-type]
        except FileNotFoundError:
            raise JobNotFound(f"no job with id {job_id!r} in {catalog.layout.root}") from None
        return Job.from_body(body, "held", Path(path)), body


def explain_job(catalog: Catalog, job_id: str, now: datetime) -> dict[str, Any]:
    """The `explain --json` document: `{id, job, state, summary, gates: [{gate, verdict,
    detail, subject}], ...}` plus `running` or `finished` details by state."""
    job, _ = _get(catalog, validate_id(job_id))
    doc: dict[str, Any] = {"id": job.id, "job": job.job, "state": job.state, "summary": "",
                 "attempts": job.attempts, "max_attempts": job.max_attempts, "gates": []}
    if job.state in ("pending", "held"):
        ledgers = host_ledgers(catalog)
        gates = [gate for check in GATES for gate in check(catalog, job, now, ledgers)]
        doc["gates"] = [asdict(g) for g in gates]
        doc["summary"] = _summary(gates)
    elif job.state == "processing":
        doc["running"] = _running(catalog, job, now)
        run = doc["running"]
        doc["summary"] = (f"running attempt {run['attempt']}/{job.max_attempts} on "
                          f"{run['host']} for {human_duration(run['runtime'])}"
                          if run["runtime"] is not None else
                          f"running attempt {run['attempt']} on {run['host']}")
    else:
        doc["finished"] = {"outcome": job.outcome, "error": job.error,
                           "exit_code": job.exit_code,
                           "finished_at": format_time(job.finished_at)
                           if job.finished_at else None}
        doc["summary"] = (f"{job.outcome or 'being filled'} after {job.attempts}/"
                          f"{job.max_attempts} attempts") + (f": {job.error}" if job.error else "")
    return doc


def _running(catalog: Catalog, job: Job, now: datetime) -> dict[str, Any]:
    host = job.path.parent.name
    parsed = parse_processing_name(job.path.name)
    attempt = parsed[1] if parsed else job.attempts
    entry = (host_ledgers(catalog).get(host, {}).get("running") or {}).get(job.id)
    entry = entry if isinstance(entry, dict) else {}
    started = None
    try:
        started = parse_time(entry["started_at"]) if entry.get("started_at") else None
    except InvalidInput:
        started = None
    try:
        beat = now.timestamp() - os.lstat(job.path).st_mtime
    except OSError:
        beat = None
    return {"host": host, "attempt": attempt, "worker_pid": entry.get("worker_pid"),
            "task_pid": entry.get("task_pid"),
            "started_at": format_time(started) if started else None,
            "runtime": (now - started).total_seconds() if started else None,
            "heartbeat_age": beat}


def explain(spool: Spool, job_id: str) -> dict[str, Any]:
    """`Spool.explain(job_id)`: the explanation at the spool's clock (JobNotFound if none)."""
    return explain_job(spool.store, job_id, spool.clock())


def render(doc: dict[str, Any]) -> str:
    """Human text: a headline, then one line per gate (or per fact) with its verdict."""
    lines = [f"{doc['id']} ({doc['job']}) is {doc['state']}: {doc['summary']}"]
    rows: list[tuple[str, str, str]] = [(g["gate"], g["verdict"], g["detail"])
                                        for g in doc["gates"]]
    if "running" in doc:
        run = doc["running"]
        rows = [("host", "", run["host"]),
                ("worker", "", f"pid {run['worker_pid']}" if run["worker_pid"] else "unknown"),
                ("attempt", "", f"{run['attempt']}/{doc['max_attempts']}"),
                ("runtime", "", human_duration(run["runtime"])
                 if run["runtime"] is not None else "unknown"),
                ("heartbeat", "", f"{human_duration(run['heartbeat_age'])} ago"
                 if run["heartbeat_age"] is not None else "unknown")]
    if "finished" in doc:
        fin = doc["finished"]
        rows = [("outcome", "", str(fin["outcome"])), ("error", "", fin["error"] or "none"),
                ("attempts", "", f"{doc['attempts']}/{doc['max_attempts']}")]
        if fin["finished_at"]:
            rows.append(("finished", "", human_time(parse_time(fin["finished_at"]))))
    width = max((len(r[0]) for r in rows), default=0)
    vwidth = max((len(r[1]) for r in rows), default=0)
    for name, verdict, detail in rows:
        cells = [name.ljust(width), verdict.ljust(vwidth), detail] if vwidth \
            else [name.ljust(width), detail]
        lines.append("  " + "  ".join(cells))
    return "\n".join(lines)
