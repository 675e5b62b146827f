"""Helpers of the limit tests (local and NFS): task records and how many ran at once."""

from __future__ import annotations

import json
import os
from pathlib import Path

LIMIT_TYPES = """
[limits.pair]
max = 2
[limits.account]
max = 1

[jobs.limited]
handler = "taskfns:record"
limits = ["pair"]

[jobs.per_account]
handler = "taskfns:record"
limits = ["account:{tag}"]

[jobs.slow_limited]
handler = "taskfns:sleep"
limits = ["pair"]
max_attempts = 1
"""


def records(path: Path) -> list[dict]:
    """The JSON lines `taskfns.record` appended to `path`."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment (an end before a start at the same instant)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = current = 0
    for _, step in events:
        current += step
        most = max(most, current)
    return most


def overlap_of(runs: list[dict]) -> int:
    return max_overlap([(run["start"], run["end"]) for run in runs])


def tokens(spool: Path) -> list[str]:
    """Every token under `limits/`, as `NAME/KEY/N`."""
    root = spool / "limits"
    if not root.exists():
        return []
    return sorted(f"{name}/{key}/{token}" for name in os.listdir(root)
                  for key in os.listdir(root / name) for token in os.listdir(root / name / key))
