"""`spool fsck [--repair] [--json]`: check every job file; repair what can be repaired without
deleting a job body. Exit 0 clean (or all repaired), 1 a problem left, 2 usage."""

from __future__ import annotations

import sys

import click

from spool.api import Spool
from spool.cli import main
from spool.cli.common import emit_json
from spool.errors import ConfigError
from spool.fsck import Report, fsck as check_spool
from spool.fsck_base import shown
from spool.store import Store


def open_store(sp: Spool, repair: bool) -> Store:
    """The spool's store. fsck is a read-only command: with a broken spool.toml it checks with
    default settings (the Spool says so once); a repair writes, so it is refused then."""
    sp.layout.require()
    store = sp.store
    if repair and sp.config_error is not None:
        raise ConfigError(f"{sp.config_error} (fix spool.toml before `fsck --repair`; "
                          "`fsck` alone checks with default settings)")
    return store


def format_report(report: Report, repair: bool) -> str:
    """One line per finding (PROBLEM / REPAIRED / INFO) and a last summary line."""
    root = report.spool
    lines = []
    for finding in report.problems:
        where = _rel(finding.path, root)
        tag = "REPAIRED" if finding.repaired else "PROBLEM"
        lines.append(f"{tag} {where}: {finding.detail} ({finding.action})")
    lines += [f"INFO {_rel(path, root)}: {text}" for path, text in report.info]
    left, fixed = len(report.unrepaired), len(report.problems) - len(report.unrepaired)
    checked = f"{_count(report.checked, 'job file')} checked in {root}"
    if not report.problems:
        lines.append(f"OK {checked}: no problems")
    elif not left:
        lines.append(f"OK {checked}: {_count(fixed, 'problem')} repaired")
    else:
        hint = "" if repair else "; `spool fsck --repair` fixes what it can"
        lines.append(f"{checked}: {_count(left, 'problem')} left, {fixed} repaired{hint}")
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _rel(path: object, root: object) -> str:
    text, prefix = shown(path), f"{shown(root)}/"
    return text[len(prefix):] if text.startswith(prefix) else text


@main.command()
@click.option("--repair", is_flag=True,
              help="Fix what can be fixed without deleting a job body (see the README).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.pass_obj
def fsck(sp: Spool, repair: bool, as_json: bool) -> None:
    """Check every job file: readable, in one state only, name and body agreeing, no stale
    holds or staged files in tmp/, markers and tokens matching jobs. Exit 1 when a problem is
    left (without --repair: when there is any)."""
    report = check_spool(open_store(sp, repair), sp.clock(), repair=repair)
    if as_json:
        emit_json(report.to_json())
    else:
        click.echo(format_report(report, repair))
    sys.exit(1 if report.unrepaired else 0)
