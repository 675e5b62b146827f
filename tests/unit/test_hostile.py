"""Hostile names and values (DESIGN §7): each is an `invalid` rejection or InvalidInput naming
the value — never a crash, a hang or a loop."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_spool
from spool import Spool
from spool.config import Config, JobType
from spool.drops import adopt_drops
from spool.errors import InvalidInput
from spool.job import decode, encode, normalize
from spool.jsonvalues import MAX_DEPTH, load_json
from spool.layout import (is_valid_id, parse_pending_name, parse_processing_name, pending_name,
                          processing_name, validate_host, validate_id)
from spool.timeutil import (MAX_DURATION, UTC, due_stamp, format_time, from_timestamp,
                            parse_due, parse_duration, parse_time)

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
CONFIG = Config(jobs={"noop": JobType("noop", command=("true",))})
STAMP = "20261122T120000.000000Z"
UNICODE_DIGITS = st.characters(categories=["Nd"]).filter(lambda c: not c.isascii())


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# -- names: ASCII only --------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    f"²-{STAMP}-abc.json",                       # crashed the worker (int('²'))
    f"٣-{STAMP}-abc.json",                       # taken as priority 3
    f"5-{STAMP.replace('2026', '٢٠٢٦')}-abc.json",  # taken as DUE digits
    f"5-{STAMP.replace('1122', '１１２２')}-abc.json",
])
def test_unicode_digits_are_no_pending_name(name):
    assert parse_pending_name(name) is None


@pytest.mark.parametrize("name", ["abc.².json", "abc.٣.json", "abc.１.json",
                                  "abc." + "1" * 5000 + ".json"])
def test_unicode_or_endless_digits_are_no_processing_name(name):
    assert parse_processing_name(name) is None


def test_unicode_digits_are_no_due_stamp():
    with pytest.raises(ValueError):
        parse_due(STAMP.replace("2026", "٢٠٢٦"))


@settings(deadline=None)
@given(st.text(max_size=60), st.sampled_from(["", ".json"]))
def test_any_name_parses_or_is_a_drop_and_canonical_names_round_trip(text, suffix):
    name = text + suffix
    parsed = parse_pending_name(name)
    if parsed is not None:
        assert pending_name(parsed.priority, parse_due(parsed.due), parsed.id) == name
    attempt = parse_processing_name(name)
    if attempt is not None:
        assert name[:-5].rpartition(".")[2].isascii()
        assert int(name[:-5].rpartition(".")[2]) == attempt[1]


@settings(deadline=None)
@given(st.integers(0, 9), UNICODE_DIGITS, st.integers(0, len(STAMP) - 1))
def test_a_unicode_digit_anywhere_makes_a_drop(priority, digit, where):
    stamp = STAMP[:where] + digit + STAMP[where + 1:]
    assert parse_pending_name(f"{priority}-{stamp}-abc.json") is None
    assert parse_pending_name(f"{digit}-{STAMP}-abc.json") is None
    assert parse_processing_name(f"abc.{digit}.json") is None


@pytest.mark.parametrize("bad", ["abc\n", "abc\r", "a\u00e9", "a\ud800"])
def test_ids_and_hosts_with_trailing_newline_or_non_ascii_are_refused(bad):
    assert not is_valid_id(bad)
    with pytest.raises(InvalidInput):
        validate_id(bad)
    with pytest.raises(InvalidInput):
        validate_host(bad)


def test_processing_names_still_round_trip():
    assert parse_processing_name(processing_name("a.b", 12)) == ("a.b", 12)
    assert parse_pending_name(pending_name(3, NOW, "x")) == (3, STAMP, "x")


# -- JSON nested too deep -----------------------------------------------------------------


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000, 200000])
def test_deep_json_is_invalid_input(depth):
    with pytest.raises(InvalidInput, match="nested deeper"):
        decode(f'{{"job": "noop", "args": {nested(depth)}}}'.encode(), "drop.json")
    with pytest.raises(InvalidInput, match="nested deeper"):
        load_json(nested(depth), "ARGS_JSON")


def test_json_at_the_depth_limit_is_fine():
    args = json.loads(nested(MAX_DEPTH - 1))
    body = normalize({"job": "noop", "args": args}, CONFIG, NOW, "a")
    assert decode(encode(body), "a") == body


def test_deep_python_values_are_refused_by_normalize():
    deep: list = []
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(InvalidInput, match="deeper than"):
        normalize({"job": "noop", "args": deep}, CONFIG, NOW, "a")
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(InvalidInput):
        normalize({"job": "noop", "meta": {"x": cycle}}, CONFIG, NOW, "a")


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["job", "id", "args", "priority", "run_at", "timeout",
                                        "after", "meta", "unique", "attempts", "slots", "x"]),
                       JSON, max_size=6))
def test_normalize_takes_any_json_or_says_why(raw):
    raw.setdefault("job", "noop")
    try:
        body = normalize(raw, CONFIG, NOW, "a")
    except InvalidInput:
        return
    assert decode(encode(body), "a")["id"] == "a"


@settings(deadline=None)
@given(st.binary(max_size=200))
def test_decode_takes_any_bytes_or_says_why(data):
    try:
        assert isinstance(decode(data, "x"), dict)
    except InvalidInput:
        pass


# -- lone surrogates, NaN -----------------------------------------------------------------


@pytest.mark.parametrize("raw, field", [
    ({"args": {"to": "\ud800"}}, "args"),
    ({"args": {"\udcff": 1}}, "args"),
    ({"unique": "key\udc80"}, "unique"),
    ({"meta": {"m": ["\udfff"]}}, "meta"),
    ({"args": [float("nan")]}, "args"),
    ({"args": {"x": float("inf")}}, "args"),
])
def test_values_utf8_or_json_cannot_hold_are_refused(raw, field):
    with pytest.raises(InvalidInput, match=f"field '{field}'"):
        normalize({"job": "noop", **raw}, CONFIG, NOW, "a")


def test_lone_surrogate_from_json_text_is_refused():
    raw = load_json(r'{"job": "noop", "args": {"s": "\ud800"}}', "x")
    with pytest.raises(InvalidInput, match="not encodable as UTF-8"):
        normalize(raw, CONFIG, NOW, "a")


# -- numbers and times out of range --------------------------------------------------------


@pytest.mark.parametrize("value", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_times_that_leave_the_calendar_in_utc_are_invalid(value):
    with pytest.raises(InvalidInput, match="out of range"):
        parse_time(value, "at")
    moment = datetime.fromisoformat(value)
    for render in (format_time, due_stamp):
        with pytest.raises(InvalidInput, match="out of range"):
            render(moment)


@pytest.mark.parametrize("value", ["999999999999d", "36501d", 1e300, timedelta(days=99999)])
def test_durations_out_of_range_are_invalid(value):
    with pytest.raises(InvalidInput, match="out of range"):
        parse_duration(value, "--delay")


@pytest.mark.parametrize("value", ["５s", "٣", "1e3", "1_000"])
def test_durations_are_ascii_digits(value):
    with pytest.raises(InvalidInput):
        parse_duration(value)


@settings(deadline=None)
@given(st.text(max_size=40))
def test_any_text_is_a_time_a_duration_or_invalid_input(text):
    for parse in (parse_time, parse_duration):
        try:
            value = parse(text)
        except InvalidInput:
            continue
        if isinstance(value, float):
            assert 0 <= value <= MAX_DURATION
        else:
            assert value.tzinfo is UTC and format_time(value)


@pytest.mark.parametrize("field, value", [("attempts", 10**100), ("slots", 2**40),
                                          ("max_attempts", 2**31)])
def test_huge_counts_are_out_of_range(field, value):
    with pytest.raises(InvalidInput, match=f"field '{field}'.*out of range"):
        normalize({"job": "noop", field: value}, CONFIG, NOW, "a")


def test_api_delay_past_year_9999_is_invalid(tmp_path):
    end = datetime(9999, 12, 30, tzinfo=UTC)
    sp = Spool(tmp_path, host="h", config=CONFIG, clock=lambda: end)
    with pytest.raises(InvalidInput, match="delay"):
        sp.build("noop", delay="2d")
    with pytest.raises(InvalidInput, match="at"):
        sp.build("noop", at=datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-2))))


def test_file_times_anyone_can_set_never_overflow():
    assert from_timestamp(1e18).year == 9999 and from_timestamp(-1e18).year == 1
    assert from_timestamp(float("nan")).year == 1970


# -- hostile drops: each ends in dead/ as invalid, nothing left behind ---------------------


@pytest.fixture
def sp(tmp_path):
    return Spool(make_spool(tmp_path / "spool"), host="h1", clock=lambda: NOW)


def drop(sp: Spool, name: str | bytes, content: bytes) -> None:
    directory = os.fsencode(sp.path / "pending")
    path = os.path.join(directory, os.fsencode(name))
    with open(path, "wb") as out:
        out.write(content)
    os.utime(path, (NOW.timestamp() - 60,) * 2)


def dead_records(sp: Spool) -> list[dict]:
    return [json.loads((sp.path / "dead" / n).read_bytes())
            for n in os.listdir(sp.path / "dead") if n.endswith(".json")]


def assert_rejected(sp: Spool, needle: str) -> dict:
    [record] = dead_records(sp)
    assert record["outcome"] == "invalid" and needle in record["error"], record
    assert os.listdir(sp.path / "pending") == [] and os.listdir(sp.path / "tmp") == []
    assert (sp.path / "dead" / f"{record['id']}.orig").exists()
    return record


def test_drop_with_a_name_that_is_not_utf8_is_rejected_readably(sp):
    drop(sp, b"bad-\xff\xfe.json", b"not json")
    adopt_drops(sp.store, NOW)
    record = assert_rejected(sp, "not valid JSON")
    assert record["dropped_as"] == "bad-\ufffd\ufffd.json"
    assert "bad-\ufffd\ufffd.json" in record["error"]
    assert (sp.path / "dead" / f"{record['id']}.orig").read_bytes() == b"not json"


def test_drop_with_a_name_that_is_not_utf8_is_adopted_when_valid(sp):
    drop(sp, b"ok-\xff.json", b'{"job": "noop"}')
    [job_id] = adopt_drops(sp.store, NOW)
    assert sp.get(job_id).state == "pending" and dead_records(sp) == []


def test_drop_with_a_lone_surrogate_is_rejected_not_parked_in_tmp(sp):
    drop(sp, "s.json", rb'{"job": "noop", "args": {"to": "\ud800"}}')
    adopt_drops(sp.store, NOW)
    assert_rejected(sp, "not encodable as UTF-8")


def test_drop_with_a_lone_surrogate_job_name_is_rejected_readably(sp):
    drop(sp, "j.json", rb'{"job": "x\udc80"}')
    adopt_drops(sp.store, NOW)
    record = assert_rejected(sp, "unknown job type")
    assert record["job"].startswith("x\ufffd") and record["job"].encode()


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100000])
def test_deep_drop_is_rejected(sp, depth):
    drop(sp, "deep.json", f'{{"job": "noop", "args": {nested(depth)}}}'.encode())
    adopt_drops(sp.store, NOW)
    assert_rejected(sp, "nested deeper")


@pytest.mark.parametrize("name", [f"٣-{STAMP}-abc.json", f"²-{STAMP}-abc.json"])
def test_drop_named_with_unicode_digits_is_adopted_as_a_drop(sp, name):
    drop(sp, name, b'{"job": "noop", "id": "abc"}')
    assert adopt_drops(sp.store, NOW) == ["abc"]
    assert sp.get("abc").priority == 5


# -- reading: any body placed by hand gives a Job ------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["id", "job", "after", "history", "meta", "run_at",
                                        "created_at", "finished_at", "priority", "attempts",
                                        "timeout", "error", "outcome", "y"]), JSON, max_size=8))
def test_any_stored_body_gives_a_job(body):
    from pathlib import Path

    from spool.job import Job

    job = Job.from_body(body, "done", Path("x.json"))
    assert isinstance(job.id, str) and isinstance(job.after, tuple)
    assert all(isinstance(entry, dict) for entry in job.history)
    assert job.run_at is None or job.run_at.tzinfo is UTC
    assert isinstance(job.priority, int) and isinstance(job.meta, dict)
