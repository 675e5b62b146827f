"""Shared option types and output helpers for the commands."""

from __future__ import annotations

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


def emit_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=False, default=str))


def table(rows: list[list[str]], header: list[str]) -> str:
    """Aligned columns."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)
