"""Ids, canonical names and their order."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spool.errors import InvalidInput
from spool.layout import (new_id, parse_pending_name, parse_processing_name, pending_name,
                          processing_name, validate_id)
from spool.timeutil import UTC, parse_duration

ids = st.from_regex(r"[A-Za-z0-9_@+][A-Za-z0-9._@+-]{0,40}", fullmatch=True)
times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1),
                     timezones=st.just(UTC))


@given(st.lists(st.tuples(st.integers(0, 9), times, ids), min_size=2, max_size=30))
def test_names_sort_by_priority_then_due_then_id(jobs):
    names = [pending_name(p, due, job_id) for p, due, job_id in jobs]
    by_name = [parse_pending_name(n) for n in sorted(names)]
    assert [(n.priority, n.due) for n in by_name] == sorted((n.priority, n.due) for n in by_name)
    for p, due, job_id in jobs:
        parsed = parse_pending_name(pending_name(p, due, job_id))
        assert parsed.priority == p and parsed.id == job_id


@given(ids, st.integers(1, 10_000))
def test_processing_names_round_trip(job_id, attempt):
    assert parse_processing_name(processing_name(job_id, attempt)) == (job_id, attempt)


@pytest.mark.parametrize("bad", ["", ".hidden", "-flag", "a/b", "a\0b", "x" * 129, "sp ace",
                                 "é", None, 5])
def test_bad_ids_are_rejected_naming_the_value(bad):
    with pytest.raises(InvalidInput, match="invalid"):
        validate_id(bad)


def test_new_ids_are_valid_unique_and_sort_by_creation():
    start = datetime(2026, 11, 22, tzinfo=UTC)
    made = [new_id(start + timedelta(microseconds=i)) for i in range(500)]
    assert len(set(made)) == 500
    assert sorted(made) == made
    assert all(validate_id(i) for i in made)


@pytest.mark.parametrize("name", ["job.json", "5-20261122T000000.000000Z-.json",
                                  "x-20261122T000000.000000Z-a.json",
                                  "5-2026112XT000000.000000Z-a.json", "5-20261122T000000.000000Z-a"])
def test_non_canonical_names_are_drops(name):
    assert parse_pending_name(name) is None


@pytest.mark.parametrize("text,seconds", [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200),
                                          ("1d", 86400), (1.5, 1.5), ("0.5s", 0.5)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["-1", "10x", "", "1h30", True, None, "nan"])
def test_bad_durations_name_the_value(text):
    with pytest.raises(InvalidInput, match="duration"):
        parse_duration(text)
