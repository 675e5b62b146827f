"""Importable job handlers for the tests' workers."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import spool


def record(path: str, tag: str = "", seconds: float = 0.0) -> dict:
    """Append (tag, start, end, pid, attempt) to `path`; sleep in between."""
    start = time.time()
    if seconds:
        time.sleep(seconds)
    entry = {"tag": tag, "start": start, "end": time.time(), "pid": os.getpid(),
             "attempt": int(os.environ["SPOOL_ATTEMPT"]), "job": os.environ["SPOOL_JOB_ID"]}
    with open(path, "a") as log:
        log.write(json.dumps(entry) + "\n")
    return entry


def add(a: int, b: int) -> int:
    return a + b


def sleep(seconds: float, marker: str = "") -> str:
    if marker:
        Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)
    return "slept"


def cancel_self() -> None:
    raise spool.Cancel("not needed any more")
