"""Commands that enqueue and inspect jobs: submit, ls, show, logs, wait, cancel, retry, purge."""

from __future__ import annotations

import itertools
import json
import sys
import time
from typing import Any

import click
from spool.cli import main
from spool.cli.common import (
    DURATION,
    STATE_COLOURS,
    coloured,
    emit_json,
    table,
    use_colour,
)
from spool.cli.listing import HEADER, ago, line, select
from spool.cli.logview import LogReader

from spool.api import Spool
from spool.events import parse_since
from spool.errors import Conflict, InvalidInput, JobNotFound, SpoolError
from spool.job import Job
from spool.jsonvalues import load_json, printable
from spool.layout import STATES
from spool.pause import read_pauses

WAIT_EXIT = {"completed": 0, "cancelled": 5}


def _args(args_json: str | None, pairs: tuple[str, ...], limit: int) -> Any:
    """ARGS_JSON (or '-' for stdin, at most `limit` bytes) merged with -a k=v (string) and
    -a k:=v (JSON) pairs. Deep JSON and strings UTF-8 cannot hold are refused by `normalize`
    (or here, before the parser's own limits show)."""
    text = _stdin(limit) if args_json == "-" else args_json
    args: Any = {}
    if text is not None:
        args = load_json(text, f"ARGS_JSON {_clip(text)}")
    if pairs and not isinstance(args, dict):
        raise InvalidInput(f"-a needs ARGS_JSON to be an object, not {_clip(text)}")
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"-a {_clip(pair)} is not KEY=VALUE (or KEY:=JSON)")
        if key.endswith(":"):
            args[key[:-1]] = load_json(value, f"-a {_clip(pair)}")
        else:
            args[key] = value
    return args


def _stdin(limit: int) -> bytes:
    """ARGS_JSON from stdin, as bytes (the parser checks they are UTF-8), refused past `limit`."""
    data = sys.stdin.buffer.read(limit + 1)
    if len(data) > limit:
        raise InvalidInput(f"ARGS_JSON from stdin is larger than max_job_bytes ({limit})")
    return data


def _clip(text: str | bytes | None, width: int = 60) -> str:
    """A short repr of a user's text for messages (args may be a megabyte long)."""
    if text is None or len(text) <= width:
        return repr(text)
    return f"{text[:width]!r}... ({len(text)} long)"


@main.command()
@click.argument("job")
@click.argument("args_json", required=False)
@click.option("-a", "--arg", "pairs", multiple=True, metavar="K=V",
              help="Set one argument: K=V (a string) or K:=JSON. Repeatable.")
@click.option("--priority", type=int, help="0 (first) to 9 (last); default from the job type.")
@click.option("--delay", type=DURATION, help="Run no sooner than this from now (e.g. 15m).")
@click.option("--at", help="Run no sooner than this time: RFC 3339, or without an offset this "
              "host's local time, like at(1) (e.g. \"2026-12-03 09:00\").")
@click.option("--id", "job_id", help="Your own id (must not exist yet).")
@click.option("--unique", help="Refuse (exit 4) while a job with this key is pending or running.")
@click.option("--after", multiple=True, metavar="ID",
              help="Run only after this job completed. Repeatable.")
@click.option("--after-any", multiple=True, metavar="ID",
              help="Run only after this job finished, whatever its outcome. Repeatable.")
@click.option("--after-failed", multiple=True, metavar="ID",
              help="Run only if this job ends in dead/ (else cancelled). Repeatable.")
@click.option("--slots", type=int, help="Slots the job holds while it runs.")
@click.option("--timeout", type=DURATION, help="Per-attempt time limit.")
@click.option("--max-attempts", type=int, help="Attempts before the job goes to dead/.")
@click.option("--wait", "wait_for", is_flag=True, help="Wait for the job; exit as 'spool wait'.")
@click.option("--limit", "limits", multiple=True, metavar="NAME[:KEY]",
              help="Hold a token of this [limits.NAME] pool while running (added to the job "
              "type's). Repeatable.")
@click.pass_obj
def submit(sp: Spool, job: str, args_json: str | None, pairs: tuple[str, ...],
           priority: int | None, delay: float | None, at: str | None, job_id: str | None,
           unique: str | None, after: tuple[str, ...], slots: int | None,
           timeout: float | None, max_attempts: int | None, wait_for: bool,
           limits: tuple[str, ...], after_any: tuple[str, ...] = (),
           after_failed: tuple[str, ...] = ()) -> None:
    """Enqueue a JOB of a type declared in spool.toml; prints its id.

    ARGS_JSON is any JSON value ('-' reads it from stdin); -a adds keys to an object.

    \b
    Examples:
      spool submit send_email '{"to": "ops@example.org"}'
      spool submit send_email -a to=ops@example.org --delay 10m --priority 2
      echo '[1, 2]' | spool submit add - --wait
    """
    args = _args(args_json, pairs, sp.config.defaults.max_job_bytes)
    new_id = sp.submit(job, args, id=job_id, priority=priority, delay=delay,
                       at=at, unique=unique, after=after, slots=slots, timeout=timeout,
                       max_attempts=max_attempts, limits=limits or None,
                       after_any=after_any, after_failed=after_failed)
    click.echo(new_id)
    if wait_for:
        sys.exit(_wait_code([sp.wait(new_id)]))


@main.command("ls")
@click.argument("state", required=False, default="all",
                type=click.Choice([*STATES, "all"]))
@click.option("--job", "job_type", help="Only jobs of this job type.")
@click.option("--outcome", help="Only jobs that ended so (completed, cancelled, dead, ...).")
@click.option("--host", help="Only jobs running on this host (finished: their last attempt's).")
@click.option("--since", metavar="T|D",
              help="Only jobs submitted, started or finished (what AGE counts from) since a "
                   "time (RFC 3339) or a duration ago (15m, 2h, 1d).")
@click.option("--newest", is_flag=True, help="Finished jobs newest first.")
@click.option("--limit", type=click.IntRange(min=0),
              help="At most N jobs: the next to run, the running, then the newest finished.")
@click.option("-q", "--quiet", is_flag=True, help="Only the ids, one a line (for xargs).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document (a list of show's).")
@click.pass_obj
def ls(sp: Spool, state: str, job_type: str | None, outcome: str | None, host: str | None,
       since: str | None, newest: bool, limit: int | None, quiet: bool, as_json: bool) -> None:
    """List jobs of a STATE: ID, STATE, JOB, ATTEMPT (n/max), HOST (while running), AGE (since
    submitted, started or finished), OUTCOME and INFO (why a pending job waits; the error of a
    finished one). Pending jobs come in claim order, then running, then finished by id.

    \b
    Examples:
      spool ls dead -q | xargs spool retry
      spool ls done --newest --limit 20
      spool ls --since 1h --outcome failed
    """
    now = sp.clock()
    cutoff = None if since is None else parse_since(since, now)
    plain = outcome is None and host is None and cutoff is None and not newest
    found = sp.list_with_bodies(state, job=job_type,
                                limit=limit if plain and state in ("pending", "processing")
                                else None)
    chosen = select(sp, [line(sp, job, body) for job, body in found], outcome=outcome,
                    host=host, since=cutoff, newest=newest, limit=limit)
    if as_json:
        emit_json([_document(sp, ln.job, ln.body) for ln in chosen])
    elif quiet:
        for ln in chosen:
            click.echo(ln.job.id)
    elif chosen:
        colour, pauses = use_colour(), read_pauses(sp.store)
        click.echo(table([ln.row(sp, now, pauses) for ln in chosen], HEADER,
                         lambda col, value, padded: coloured(
                             padded, STATE_COLOURS.get(value) if col == 1 else None, colour)))
    else:
        click.echo(f"no jobs match ({_asked(state, job_type, outcome, host, since)})")
    for ln in chosen:
        if ln.job.extra.get("unreadable"):
            click.echo(f"Warning: {ln.job.error}", err=True)


def _asked(state: str, *filters: str | None) -> str:
    names = ("--job", "--outcome", "--host", "--since")
    given = zip(names, filters, strict=True)
    parts = [f"state {state}", *(f"{n} {v}" for n, v in given if v is not None)]
    return ", ".join(parts)


def _document(sp: Spool, job: Job, body: dict) -> dict:
    """show --json: the job file's fields, state and path; a running job adds `running`."""
    doc = job.to_json(body)
    running = sp.running(job)
    if running is not None:
        doc["running"] = running
    return doc


@main.command()
@click.argument("job_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="The job file's fields plus state and path.")
@click.pass_obj
def show(sp: Spool, job_id: str, as_json: bool) -> None:
    """Show one job: its state, fields, running attempt and attempt history."""
    job, body = sp.get_with_body(job_id)
    if as_json:
        emit_json(_document(sp, job, body))
        return
    for key in ("id", "state", "job", "args", "priority", "run_at", "created_at", "attempts",
                "max_attempts", "timeout", "slots", "unique", "after", "after_any", "after_failed",
                "schedule", "meta",
                "outcome", "exit_code", "result", "error", "finished_at"):
        if body.get(key) not in (None, [], {}) or key in ("id", "state", "attempts"):
            value = job.state if key == "state" else body.get(key)
            shown = json.dumps(value) if not isinstance(value, str) else printable(value)
            click.echo(f"{key:<13}{shown}")
    click.echo(f"{'path':<13}{printable(str(job.path))}")
    running = sp.running(job)
    if running is not None:
        started = running["started_at"]
        click.echo(printable(
            f"{'running':<13}attempt {running['attempt']}/{job.max_attempts} on "
            f"{running['host']}"
            + (f" since {started} ({ago(running['runtime'])})" if started else "")
            + (f", heartbeat {ago(running['heartbeat_age'])} ago"
               if running["heartbeat_age"] is not None else "")))
    for entry in job.history:
        click.echo(printable(
            f"attempt {entry.get('attempt')}: {entry.get('outcome')} on "
            f"{entry.get('host')} {entry.get('started_at')} -> {entry.get('ended_at')}"
            + (f" exit {entry['exit_code']}" if entry.get("exit_code") is not None else "")
            + (f" ({entry['error']})" if entry.get("error") else "")))


@main.command()
@click.argument("job_id", metavar="ID")
@click.option("-f", "--follow", is_flag=True,
              help="Keep printing until the job finishes; exit then as 'spool wait' does.")
@click.option("-n", "--lines", type=click.IntRange(min=0), metavar="N",
              help="Only the last N lines (with -f: then follow).")
@click.option("--attempt", type=click.IntRange(min=1), metavar="N",
              help="Only attempt N's section of the log.")
@click.pass_obj
def logs(sp: Spool, job_id: str, follow: bool, lines: int | None, attempt: int | None) -> None:
    """Print a job's log: every attempt's output after a header line.

    A job that has not run yet has no log: that is said on stderr (exit 0); with -f the log
    is followed once it starts. With -f the exit code is the job's outcome: 0 completed,
    1 failed or dead, 5 cancelled.
    """
    job = sp.get(job_id)
    path = sp.layout.log_path(job.id)
    reader = LogReader(path, attempt)
    if not path.exists() and not job.finished:
        click.echo(f"job {job.id} has not run yet ({job.state}): no log"
                   + ("; waiting for it to start" if follow else ""), err=True)
    first = reader.read()
    if attempt is not None and not reader.seen and not follow:
        raise JobNotFound(f"job {job.id} has no attempt {attempt} in its log {path}")
    _write(first[-lines:] if lines is not None and lines > 0 else [] if lines == 0 else first)
    if not follow:
        return
    for turn in itertools.count(1):
        finished = sp.finished_job(job.id)
        chunk = reader.read()
        _write(chunk)
        if finished is not None and not chunk:
            sys.exit(_wait_code([finished]))
        if finished is None and turn % 25 == 0:
            sp.get(job.id)  # purged meanwhile: JobNotFound (exit 3), not a wait for ever
        time.sleep(0.2)


def _write(chunk: list[bytes]) -> None:
    if chunk:
        sys.stdout.buffer.write(b"".join(chunk))
        sys.stdout.flush()


def _wait_code(jobs: list[Job]) -> int:
    codes = [WAIT_EXIT.get(job.outcome or "", 1) for job in jobs]
    return 1 if 1 in codes else max(codes, default=0)


@main.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@click.option("--timeout", type=DURATION, help="Give up after this long (exit 124).")
@click.pass_obj
def wait(sp: Spool, job_ids: tuple[str, ...], timeout: float | None) -> None:
    """Wait until the jobs finish: exit 0 completed, 1 failed/dead, 5 cancelled, 124 timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    finished = []
    for job_id in job_ids:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        job = sp.wait(job_id, timeout=left)
        click.echo(f"{job.id} {job.state} {job.outcome}")
        finished.append(job)
    sys.exit(_wait_code(finished))


def _each(ids: tuple[str, ...], action) -> None:
    """Apply `action` to every id; report each failure, exit with the first failure's code."""
    first: SpoolError | None = None
    for job_id in ids:
        try:
            action(job_id)
        except (JobNotFound, Conflict, InvalidInput) as error:
            click.echo(f"Error: {error}", err=True)
            first = first or error
    if first is not None:
        sys.exit(first.exit_code)


@main.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@click.pass_obj
def cancel(sp: Spool, job_ids: tuple[str, ...]) -> None:
    """Cancel jobs: a pending one ends in done/ as cancelled; a running one is stopped."""
    _each(job_ids, lambda job_id: click.echo(f"{job_id} {sp.cancel(job_id)}"))


@main.command()
@click.argument("job_ids", metavar="ID...", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Retry every dead job.")
@click.option("--job", "job_type", help="With --all: only dead jobs of this type.")
@click.pass_obj
def retry(sp: Spool, job_ids: tuple[str, ...], every: bool, job_type: str | None) -> None:
    """Move dead jobs back to pending/ with their attempts reset."""
    if every == bool(job_ids):
        raise click.UsageError("give job ids or --all, not both and not neither")
    if every:
        retried = sp.retry_all(job_type)
        for job_id in retried:
            click.echo(f"{job_id} retried")
        if not retried:
            known = job_type is None or sp.config.job_type(job_type) is not None
            click.echo("nothing to retry: no dead jobs"
                       + (f" of job type {job_type!r}" if job_type else "")
                       + ("" if known else f" ({job_type!r} is not a job type in spool.toml)"),
                       err=True)
        return
    _each(job_ids, lambda job_id: (sp.retry(job_id), click.echo(f"{job_id} retried")))


@main.command()
@click.argument("state", type=click.Choice(["done", "dead", "all"]))
@click.option("--older-than", type=DURATION, help="Only jobs finished longer ago than this.")
@click.option("--yes", is_flag=True, help="Really delete (without it: only show the count).")
@click.pass_obj
def purge(sp: Spool, state: str, older_than: float | None, yes: bool) -> None:
    """Delete finished jobs (with their logs) from done/, dead/ or both."""
    ids = sp.purge(state, older_than, dry_run=not yes)
    if yes:
        click.echo(f"purged {len(ids)} jobs")
        return
    for job_id in ids:
        click.echo(f"would purge {job_id}")
    click.echo(f"would purge {len(ids)} jobs; run again with --yes to delete them")

