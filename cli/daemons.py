"""Commands that run daemons: worker, cron, reap, and run (the embedded single-host default).

The daemons (not `--once`, not `--burst`) wait out filesystem faults at start-up: `start`.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import TypeVar
from collections.abc import Callable

import click
from click.core import ParameterSource

from spool.api import Spool
from spool.errors import ConfigError, SpoolError, SpoolMissing
from spool.cli import main
from spool.cli.admin import create_spool
from spool.cli.common import describe_fault, is_fault
from spool.sample import DEMO_CONFIG
from spool.cron import Cron
from spool.daemon import loop
from spool.reaper import Reaper
from spool.runloop import Companion
from spool.worker import Worker


T = TypeVar("T")
log = logging.getLogger("spool")
START_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def start(name: str, sp: Spool, make: Callable[[], T]) -> T | None:
    """`make()` (read the config, build the daemon), retried with backoff while the filesystem
    fails it — a full disk, no free inodes, EACCES on a lock or state file, EIO — each failure
    logged with the path (docs/protocol.md, Links, FIFOs and group members: a daemon that starts on
    a full disk waits, never exits). None when SIGTERM/SIGINT arrives meanwhile; SIGHUP retries at
    once."""
    failures = 0
    while True:
        try:
            return make()
        except (OSError, ConfigError) as exc:
            fault = exc.__cause__ if isinstance(exc, ConfigError) else exc
            if not is_fault(fault):
                raise
            failures += 1
            wait = min(60.0, 2.0 ** failures)
            log.error("%s cannot start (retry in %gs): %s", name, wait,
                      describe_fault(fault, sp.path) if isinstance(exc, OSError) else exc)
            if _stop_within(wait):
                return None


def _stop_within(seconds: float) -> bool:
    """Wait up to `seconds`; True when SIGTERM or SIGINT arrived (SIGHUP only ends the wait)."""
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, START_SIGNALS)
    try:
        received = signal.sigtimedwait(START_SIGNALS, seconds)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    if received is not None and received.si_signo != signal.SIGHUP:
        log.info("stopping on signal %d before start-up completed", received.si_signo)
        return True
    return False


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

    def make() -> Worker:
        sp.layout.require()
        return Worker(sp, capacity, burst)

    daemon = make() if burst else start("worker", sp, make)  # a burst fails at once
    if daemon is not None:
        sys.exit(daemon.run())


DEMO_JOBS = [
    ("hello", {"name": "world"}),
    ("checksum", {"text": "spool"}),
    ("flaky", {"message": "retried with backoff"}),
    ("doomed", {}),
]


@main.command()
@click.option("--capacity", type=click.IntRange(min=1), envvar="SPOOL_CAPACITY",
              help="Slots this host offers [default: CPU count].")
@click.option("--demo", is_flag=True,
              help="Create the demo spool (example jobs and a schedule) when the spool is "
                   "missing, wherever --spool points.")
@click.pass_context
def run(ctx: click.Context, capacity: int | None, demo: bool) -> None:
    """Worker, cron and reaper in one process, on ./spool by default.

    \b
    The quick start: on the default ./spool (no --spool, no SPOOL_DIR), a missing spool is
    created with a demo spool.toml and a few example jobs, so that a first run shows jobs
    flowing (`spool status` and `ls` in another terminal show them move). Anywhere else a
    missing spool is an error (exit 2) saying how to create it ('spool --spool DIR init'),
    unless --demo asks for the demo spool there.
    """
    sp: Spool = ctx.obj
    setup_logging()
    if not (demo or _default_spool(ctx)):
        if not sp.layout.exists():
            raise SpoolMissing(
                f"no spool at {sp.path}: create it with 'spool --spool {sp.path} init' "
                f"(or 'spool --spool {sp.path} run --demo' for the demo spool)")
    elif create_spool(sp, DEMO_CONFIG):
        click.echo(f"created the demo spool at {sp.path}", err=True)
        for job, args in DEMO_JOBS:
            click.echo(f"submitted {job}: {sp.submit(job, args)}", err=True)
    cron, reaper = Cron(sp), Reaper(sp)
    poll = sp.config.defaults.poll
    companions = [Companion("cron", cron.step, lambda now: cron.next_wake(now, poll)),
                  Companion("reaper", reaper.step, lambda now: sp.config.defaults.heartbeat)]
    sys.exit(Worker(sp, capacity, companions=companions).run())


def _default_spool(ctx: click.Context) -> bool:
    """Whether the spool is the default ./spool: neither --spool nor SPOOL_DIR named one."""
    parent = ctx.parent
    return parent is not None and \
        parent.get_parameter_source("spool_dir") in (ParameterSource.DEFAULT, None)


@main.command()
@click.option("--once", is_flag=True, help="One tick, then exit (for a systemd timer).")
@click.pass_obj
def cron(sp: Spool, once: bool) -> None:
    """Enqueue due schedule fires, each exactly once across all cron daemons and hosts.

    Sleeps until the next fire; SIGHUP reloads spool.toml.
    """
    setup_logging()
    if once:
        for job_id in Cron(sp).step(sp.clock()):
            click.echo(job_id)
        return
    daemon = start("cron", sp, lambda: Cron(sp))
    if daemon is None:
        return
    poll = sp.config.defaults.poll
    sys.exit(loop("cron", daemon.step, lambda now: daemon.next_wake(now, poll), sp.clock,
                  reload=_reloader(sp)))


@main.command()
@click.option("--once", is_flag=True, help="One pass, then exit (for a systemd timer).")
@click.pass_obj
def reap(sp: Spool, once: bool) -> None:
    """Return jobs of dead workers, finish half-done moves, clear stale markers, purge old jobs.

    A job is reaped when its heartbeat has not changed for the lease, as this reaper measures
    it; with --once, run it more often than the lease (observations are kept between runs).
    """
    setup_logging()
    if once:
        for name in Reaper(sp).step(sp.clock()):
            click.echo(f"reaped {name}")
        return
    daemon = start("reaper", sp, lambda: Reaper(sp))
    if daemon is None:
        return
    interval = sp.config.defaults.heartbeat
    sys.exit(loop("reaper", daemon.step, lambda now: interval, sp.clock, reload=_reloader(sp)))


def _reloader(sp: Spool):
    def reload() -> None:
        try:
            sp.reload_config()
            logging.getLogger("spool").info("reloaded %s", sp.layout.config_path)
        except (SpoolError, OSError) as exc:
            logging.getLogger("spool").error("reload failed, keeping the old config: %s", exc)
    return reload
