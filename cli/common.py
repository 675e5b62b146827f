"""Shared option types and output helpers for the commands."""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from spool.errors import InvalidInput
from spool.timeutil import parse_duration


class Duration(click.ParamType):
    """`90`, `90s`, `15m`, `2h`, `1d` -> seconds."""

    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, float):
            return value
        try:
            what = f"--{param.name.replace('_', '-')}" if param and param.name else "duration"
            return parse_duration(value, what)
        except InvalidInput as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()

# Commands that only read: they work on a broken spool.toml (saying so once), README, Command line.
READ_ONLY_COMMANDS = frozenset({"ls", "show", "logs", "status", "explain", "events", "doctor",
                                "fsck"})


def warn(message: str) -> None:
    """One `Warning: ...` line on stderr."""
    click.echo(f"Warning: {message}", err=True)

BUG_ERRNOS = {errno.EBADF, errno.EFAULT}  # OSErrors that mean a bug in spool, not a fault


def is_fault(exc: BaseException) -> bool:
    """Whether `exc` is a filesystem fault (ENOSPC, EDQUOT, EACCES, EROFS, EIO, ESTALE, ...) to
    report in one line, rather than a bug that keeps its traceback."""
    return isinstance(exc, OSError) and exc.errno not in BUG_ERRNOS


def describe_fault(exc: OSError, where: object = None) -> str:
    """`PATH: problem (ERRNO)` for an OSError; `where` names the place when the error has no
    path (a write(2) on a full disk reports none)."""
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    place = " -> ".join(paths) or (str(where) if where is not None else "")
    problem = exc.strerror or str(exc)
    code = errno.errorcode.get(exc.errno or 0)
    text = f"{problem} ({code})" if code else problem
    return f"{place}: {text}" if place else text


def emit_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=False, default=str))


def table(rows: list[list[str]], header: list[str],
          paint: Callable[[int, str, str], str] | None = None) -> str:
    """Aligned columns; `paint(column, value, padded)` may colour a body cell after padding."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def cell(i: int, value: str, width: int, is_header: bool) -> str:
        padded = str(value).ljust(width)
        return padded if paint is None or is_header else paint(i, str(value), padded)

    lines = ["  ".join(cell(i, c, w, row is header) for i, (c, w) in
                       enumerate(zip(row, widths, strict=False))).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)


# -- colour: only on a terminal, never with NO_COLOR (https://no-color.org) -------------------

STATE_COLOURS = {"pending": "cyan", "processing": "yellow", "done": "green", "dead": "red",
                 "held": "magenta"}
LEVEL_COLOURS = {"OK": "green", "WARN": "yellow", "FAIL": "red"}


def use_colour() -> bool:
    """Whether human output on stdout gets colour: a terminal, and NO_COLOR unset or empty."""
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def coloured(text: str, colour: str | None, enabled: bool) -> str:
    return click.style(text, fg=colour) if enabled and colour else text


# -- SPOOL_<OPTION> for every option (README, Command line)
# ----------------------------------------------

# Never taken from the environment: options that confirm or widen a destructive action (a
# variable left set in a shell must not turn every `purge` into a deletion), and names that
# mean something else there: SPOOL_HOST is this host's name (the group's --host), SPOOL_JOB and
# SPOOL_ATTEMPT are set in every task's environment (a task running `spool ls` must not be
# filtered by its own job type).
NO_ENVVAR = frozenset({"yes", "all", "force", "repair", "help", "version", "host", "spool",
                       "job", "attempt", "args", "result", "dir", "job-id"})


def option_envvars(command: click.Command) -> None:
    """Give each option of `command` without one the variable `SPOOL_<OPTION>` (its long
    name, upper case, dashes as underscores: `--max-attempts` reads SPOOL_MAX_ATTEMPTS)."""
    for param in command.params:
        if not isinstance(param, click.Option) or param.envvar is not None:
            continue
        longs = [opt for opt in param.opts if opt.startswith("--")]
        if not longs:
            continue
        name = longs[0][2:]
        if name in NO_ENVVAR:
            continue
        param.envvar = "SPOOL_" + name.upper().replace("-", "_")
