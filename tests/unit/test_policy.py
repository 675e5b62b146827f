"""Retry decisions and backoff: pure functions."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spool.config import Backoff
from spool.policy import backoff_delay, decide
from spool.timeutil import UTC

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
B = Backoff(base=5, factor=2, max=60, jitter=0)


@pytest.mark.parametrize("attempt,delay", [(1, 5), (2, 10), (3, 20), (4, 40), (5, 60), (9, 60)])
def test_backoff_grows_and_caps(attempt, delay):
    assert backoff_delay(B, attempt, 0.0) == delay


@given(st.integers(1, 30), st.floats(-1, 1))
def test_jitter_stays_within_bounds(attempt, u):
    jittered = Backoff(5, 2, 60, 0.2)
    base = backoff_delay(B, attempt, 0)
    assert base * 0.8 - 1e-9 <= backoff_delay(jittered, attempt, u) <= base * 1.2 + 1e-9


def test_outcomes():
    assert decide("completed", 1, 3, B, NOW, 0).state == "done"
    assert decide("cancelled", 1, 3, B, NOW, 0).state == "done"
    retry = decide("failed", 2, 3, B, NOW, 0)
    assert retry.state == "pending" and retry.due == NOW + timedelta(seconds=10)
    assert decide("timeout", 3, 3, B, NOW, 0).state == "dead"
    assert decide("lost", 1, 1, B, NOW, 0).state == "dead"
    assert decide("interrupted", 3, 3, B, NOW, 0) .due == NOW
