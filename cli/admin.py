"""Commands that set up and check a spool: init, status, validate."""

from __future__ import annotations

import grp
import sys
import time
from pathlib import Path

import click
from spool.cli import main
from spool.cli.common import LEVEL_COLOURS, coloured, emit_json, use_colour

from spool.api import Spool
from spool.config import load_config
from spool.errors import InvalidInput, SpoolError
from spool.templates import placeholders
from spool.job import normalize
from spool.jsonvalues import load_json
from spool.sample import SAMPLE_CONFIG
from spool.status import format_status


def create_spool(sp: Spool, config_text: str, group: str | None = None) -> bool:
    """Create the layout and spool.toml; False when the spool already existed."""
    if sp.layout.exists() and sp.layout.config_path.exists():
        return False
    gid = None
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise InvalidInput(f"--group {group!r}: no such group") from None
    sp.layout.create(group=gid)
    if not sp.layout.config_path.exists():
        sp.layout.config_path.write_text(config_text)
    return True


@main.command()
@click.option("--group", help="Make the spool group-writable (setgid) for this group.")
@click.pass_obj
def init(sp: Spool, group: str | None) -> None:
    """Create the spool directory layout and a commented sample spool.toml."""
    if create_spool(sp, SAMPLE_CONFIG, group):
        click.echo(f"created spool at {sp.path}; edit {sp.layout.config_path} to declare jobs")
    elif group is not None:
        click.echo(f"spool at {sp.path} already exists; nothing changed (--group {group} is "
                   "applied only when init creates the spool)")
    else:
        click.echo(f"spool at {sp.path} already exists; nothing changed")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.option("--watch", is_flag=True, help="Refresh every 2 seconds until interrupted.")
@click.pass_obj
def status(sp: Spool, as_json: bool, watch: bool) -> None:
    """Counts per state, oldest due job, hosts and their slots, unclaimable jobs, schedules."""
    while True:
        doc = sp.status()
        if as_json:
            emit_json(doc)
        else:
            if watch:
                click.clear()
            click.echo(format_status(doc))
        if not watch:
            return
        time.sleep(2)


@main.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def validate(sp: Spool, file: Path | None) -> None:
    """Check spool.toml (the default, or FILE ending in .toml) or a job FILE (exit 2 if bad)."""
    if file is None or file.suffix == ".toml":
        path = file or sp.layout.require().config_path
        if not path.exists():
            raise InvalidInput(f"{path}: no such file")
        config = load_config(path)
        click.echo(f"{path}: OK ({len(config.jobs)} job types, "
                   f"{len(config.schedules)} schedules)")
        for name, jtype in sorted(config.jobs.items()):
            if jtype.command:
                wanted = ", ".join(placeholders(jtype.command)) or "none"
                click.echo(f"  {name}: argv placeholders: {wanted}")
            if jtype.limits:
                click.echo(f"  {name}: limits: {', '.join(jtype.limits)}")
            if jtype.allow is not None:
                click.echo(f"  {name}: allow: {', '.join(jtype.allow) or 'nobody'}")
        return
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{file}: cannot read: {exc.strerror}") from None
    body = load_json(data, str(file))  # not valid JSON, or nested too deep: InvalidInput
    try:
        has_id = isinstance(body, dict) and "id" in body
        normalize(body, sp.config, sp.clock(), None if has_id else "validate")
    except SpoolError as exc:
        raise InvalidInput(f"{file}: {exc}") from None
    click.echo(f"{file}: OK")


@main.command()
@click.pass_obj
def doctor(sp: Spool) -> None:
    """Check the spool: layout, permissions, filesystem and NFS options, locks, clock, stuck
    and unclaimable jobs. One line per check (OK, WARN, FAIL); exit 1 on any FAIL."""
    from spool.doctor import diagnose

    sp.layout.require(complete=False)  # a damaged layout is reported, not refused
    findings = diagnose(sp)
    colour = use_colour()
    for level, message in findings:
        click.echo(coloured(f"{level:<5}", LEVEL_COLOURS.get(level), colour) + message)
    if any(level == "FAIL" for level, _ in findings):
        sys.exit(1)
