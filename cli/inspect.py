"""Commands that look into the spool without changing it: explain, events."""

from __future__ import annotations

import json
import sys
import time

import click
from spool.cli import main
from spool.cli.common import emit_json

from spool.api import Spool
from spool.events import Filter, Reader, format_event, format_events, parse_since
from spool.explain import explain as explain_job
from spool.explain import render
from spool.jsonvalues import printable
from spool.layout import validate_id

FOLLOW_POLL = 0.5  # seconds between two reads of the journal under -f


@main.command()
@click.argument("job_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON document: {id, job, state, summary, gates: [...], ...}.")
@click.pass_obj
def explain(sp: Spool, job_id: str, as_json: bool) -> None:
    """Why a job is where it is.

    A pending job: every gate in turn (due time, each dependency, pause, limits, slots
    against each host's capacity, hold), one line each with its verdict: ok, waiting
    (passes by itself), blocked (an operator must act) or never. A running job: its host,
    worker, attempt, runtime and heartbeat age. A finished job: outcome, error, attempts.
    Times are shown in this host's local time with their offset. Exit 3: no such job.
    """
    doc = explain_job(sp, job_id)
    if as_json:
        emit_json(doc)
    else:
        click.echo(printable(render(doc)))


@main.command()
@click.option("-f", "--follow", is_flag=True,
              help="Keep printing new events (of any host, new days, new hosts) as they come.")
@click.option("--since", metavar="T|D",
              help="Only events since a time (RFC 3339; without an offset: local time) or "
                   "for a duration back from now (90s, 15m, 2h, 1d).")
@click.option("--id", "job_id", metavar="ID", help="Only the events of this job.")
@click.option("--job", metavar="T", help="Only the events of jobs of this type.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON list (with -f: one JSON object per line).")
@click.pass_obj
def events(sp: Spool, follow: bool, since: str | None, job_id: str | None, job: str | None,
           as_json: bool) -> None:
    """The journal of every host, merged in time order.

    Human output: local time with its offset, host, event, id, then the other fields. The
    job type of --job is read from each job's file (a purged job's events never match it).
    """
    keep = Filter(sp.store, since=parse_since(since, sp.clock()) if since else None,
                  job_id=validate_id(job_id, "--id") if job_id else None, job=job)
    reader = Reader(sp.store, keep)
    found = reader.poll()
    if not follow:
        if as_json:
            emit_json(found)
        else:
            for line in format_events(found):
                click.echo(printable(line))
        return
    host_width = max([8, *(len(str(e.get("host"))) for e in found)])
    try:
        while True:
            for event in found:
                host_width = max(host_width, len(str(event.get("host"))))
                click.echo(json.dumps(event, ensure_ascii=False) if as_json
                           else printable(format_event(event, host_width)))
            sys.stdout.flush()  # a pipe or a file sees each event as it comes
            time.sleep(FOLLOW_POLL)
            found = reader.poll()
    except KeyboardInterrupt:
        pass
