"""Functions the RQ worker imports (by the name `peer_tasks.noop`) in workloads 2 and 3, and the
stamp reading both sides of workload 3 share (standard library only: both interpreters)."""

from __future__ import annotations

import time
from pathlib import Path


def noop() -> None:
    """Does nothing."""


def stamp(path: str) -> None:
    """Appends the time it started, for the enqueue → start latency."""
    with open(path, "a") as out:
        out.write(f"{time.time()}\n")


def stamps(path: Path) -> list[str]:
    """The stamps written so far."""
    return path.read_text().splitlines() if path.exists() else []


def delay_ms(path: Path, seen: int, start: float) -> float:
    """Wait for stamp number `seen + 1` in `path`; milliseconds from `start` (time.time()) to
    it. Both sides of workload 3 poll this way, every half millisecond."""
    while len(lines := stamps(path)) == seen:
        if time.time() - start > 30:
            raise RuntimeError(f"no job stamped {path} within 30 s: is the worker running?")
        time.sleep(0.0005)
    return (float(lines[seen]) - start) * 1000
