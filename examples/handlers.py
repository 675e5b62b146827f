"""Example handlers: plain functions. A dict of args arrives as keyword arguments, a list as
positional ones; the return value (any JSON value) becomes the job's `result`. Raise
`spool.Cancel` to end the job as cancelled; any other exception is a failure (retried)."""

from __future__ import annotations

import os

import spool


def count_words(text: str) -> dict:
    """Count the words of `text`."""
    return {"words": len(text.split())}


def send_report(kind: str) -> str:
    """Pretend to send a report; idempotent by attempt, as at-least-once delivery asks."""
    if kind not in ("daily", "weekly"):
        raise spool.Cancel(f"unknown report kind {kind!r}: nothing to retry")
    sender = os.environ.get("REPORT_FROM", "spool")
    return f"{kind} report sent by {sender} (attempt {os.environ['SPOOL_ATTEMPT']})"
