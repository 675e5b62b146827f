"""Shared option types and output helpers for the commands."""

from __future__ import annotations

import errno
import json
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

# Commands that only read: they work on a broken spool.toml (saying so once), DESIGN §8.
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


def table(rows: list[list[str]], header: list[str]) -> str:
    """Aligned columns."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)
