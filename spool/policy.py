"""What happens after an attempt: pure decisions, no I/O, the clock and randomness passed in.

An attempt is counted when it is claimed, so `attempts` in the body passed here already
includes the attempt that just ended (except for `interrupted`, which gives it back).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from spool.config import Backoff

RETRYABLE = ("failed", "timeout", "lost")


@dataclass(frozen=True)
class Decision:
    """Where the job goes next: `done`, `dead`, or `pending` at `due`."""

    state: str
    due: datetime | None = None


def backoff_delay(backoff: Backoff, attempt: int, u: float) -> float:
    """Seconds to wait before retrying after attempt `attempt` (1-based); u in [-1, 1]."""
    try:
        grown = backoff.base * backoff.factor ** max(0, attempt - 1)
    except OverflowError:  # a large factor or attempt number: the cap applies long before
        grown = backoff.max
    base = min(backoff.max, grown)
    return max(0.0, base * (1 + u * backoff.jitter))


def decide(outcome: str, attempts: int, max_attempts: int, backoff: Backoff,
           now: datetime, u: float) -> Decision:
    """The next state of a job whose attempt number `attempts` ended with `outcome`."""
    if outcome in ("completed", "cancelled"):
        return Decision("done")
    if outcome == "interrupted":
        return Decision("pending", now)
    if outcome in RETRYABLE and attempts < max_attempts:
        return Decision("pending", now + timedelta(seconds=backoff_delay(backoff, attempts, u)))
    return Decision("dead")
