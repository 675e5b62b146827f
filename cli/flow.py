"""Flow-control commands (docs/protocol.md, Directories are states): hold, release, pause, resume,
fire."""

from __future__ import annotations

import click

from spool.api import Spool
from spool.cli import main
from spool.cli.jobs import _each


@main.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@click.pass_obj
def hold(sp: Spool, job_ids: tuple[str, ...]) -> None:
    """Put pending jobs on hold: they move to held/, where no worker looks, keeping their
    priority, due time and unique key. Exit 3 for an unknown id, 4 for a job that is not
    pending.

    \b
    Example:
      spool hold 20261203T101500.123456-a1b2c3d4e5f6
    """
    _each(job_ids, lambda job_id: (sp.hold(job_id), click.echo(f"{job_id} held")))


@main.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@click.pass_obj
def release(sp: Spool, job_ids: tuple[str, ...]) -> None:
    """Put held jobs back into pending/ with their priority and due time. Exit 3 for an
    unknown id, 4 for a job that is not held."""
    _each(job_ids, lambda job_id: (sp.release(job_id), click.echo(f"{job_id} released")))


def _targets(function):
    """The options `pause` and `resume` share."""
    function = click.option("--all", "every", is_flag=True,
                            help="Everything: no claims on any host, no schedule fires.")(function)
    function = click.option("--schedule", "schedules", multiple=True, metavar="S",
                            help="A schedule (declared in spool.toml). Repeatable.")(function)
    function = click.option("--host", "hosts", multiple=True, metavar="H",
                            help="A host: its workers claim nothing. Repeatable.")(function)
    return click.argument("jobs", metavar="[JOB]...", nargs=-1)(function)


def _report(changes: dict[str, bool], done: str, already: str) -> None:
    for marker, changed in changes.items():
        click.echo(f"{marker} {done}" if changed else f"{marker} {already}")


@main.command()
@_targets
@click.pass_obj
def pause(sp: Spool, jobs: tuple[str, ...], hosts: tuple[str, ...],
          schedules: tuple[str, ...], every: bool) -> None:
    """Stop claiming jobs of these JOB types (anywhere), or anything on a host (--host) or
    at all (--all); stop firing a schedule (--schedule). Running jobs go on. Pausing what is
    paused already is no error.

    \b
    Examples:
      spool pause send_email
      spool pause --host node3 --schedule nightly
    """
    _report(sp.pause(jobs, host=hosts, schedule=schedules, all=every),
            "paused", "was paused already")


@main.command()
@_targets
@click.pass_obj
def resume(sp: Spool, jobs: tuple[str, ...], hosts: tuple[str, ...],
           schedules: tuple[str, ...], every: bool) -> None:
    """Undo `pause` for these JOB types, hosts (--host), schedules (--schedule) or --all.
    A schedule's fires that fell in the pause are not caught up. Resuming what is not paused
    is no error."""
    _report(sp.resume(jobs, host=hosts, schedule=schedules, all=every),
            "resumed", "was not paused")


@main.command()
@click.argument("schedule")
@click.option("--force", is_flag=True,
              help="Fire even when a fire is still active (overlap = \"skip\") or the "
                   "schedule is paused.")
@click.pass_obj
def fire(sp: Spool, schedule: str, force: bool) -> None:
    """Enqueue one fire of SCHEDULE now, as SCHEDULE@manual.YYYYMMDDTHHMMSSZ; prints its id.
    Exit 3 for an unknown schedule; 4 when it is paused or a fire of it is still pending or
    running (overlap = "skip"), unless --force."""
    click.echo(sp.fire(schedule, force=force))
