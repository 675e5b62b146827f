"""Commands that run daemons: worker, and run (the embedded single-host default)."""

from __future__ import annotations

import logging
import sys

import click

from spool.api import Spool
from spool.cli import main
from spool.cli.admin import create_spool
from spool.sample import DEMO_CONFIG
from spool.worker import Worker


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s[%(process)d]: %(message)s")


@main.command()
@click.option("--capacity", type=click.IntRange(min=1), envvar="SPOOL_CAPACITY",
              help="Slots this host offers [env: SPOOL_CAPACITY; default: CPU count].")
@click.option("--burst", is_flag=True, help="Run everything due, then exit.")
@click.pass_obj
def worker(sp: Spool, capacity: int | None, burst: bool) -> None:
    """Claim and run jobs, several at once up to this host's free slots.

    SIGTERM/SIGINT drain running jobs within `grace` (a second signal stops at once);
    SIGHUP reloads spool.toml.
    """
    setup_logging()
    sp.layout.require()
    sys.exit(Worker(sp, capacity, burst).run())


DEMO_JOBS = [
    ("hello", {"name": "world"}),
    ("checksum", {"text": "spool"}),
    ("flaky", {"message": "retried with backoff"}),
    ("doomed", {}),
]


@main.command()
@click.option("--capacity", type=click.IntRange(min=1), envvar="SPOOL_CAPACITY",
              help="Slots this host offers [default: CPU count].")
@click.pass_obj
def run(sp: Spool, capacity: int | None) -> None:
    """Worker, cron and reaper in one process, on ./spool by default.

    A missing spool is created with a demo spool.toml and a few example jobs, so that a first
    run shows jobs flowing: `spool status` and `ls` in another terminal show them move.
    """
    setup_logging()
    if create_spool(sp, DEMO_CONFIG):
        for job, args in DEMO_JOBS:
            click.echo(f"submitted {job}: {sp.submit(job, args)}", err=True)
    sys.exit(Worker(sp, capacity).run())
