"""argv placeholders (DESIGN §5), the checks of `normalize`, and times people type."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from spool.config import load_config
from spool.errors import InvalidInput
from spool.commands import expand_argv
from spool.templates import placeholders
from spool.job import normalize
from spool.timeutil import human_duration, human_time, parse_time

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def test_only_identifiers_in_braces_are_placeholders():
    command = ("awk", "{print $1}", "{to}", "--json={\"a\": 1}", "{{to}}", "x{to}y{n}", "{1}",
               "{ to }", "{}")
    assert placeholders(command) == ["to", "n"]
    assert expand_argv(command, {"to": "a b", "n": 3}) == [
        "awk", "{print $1}", "a b", "--json={\"a\": 1}", "{to}", "xa by3", "{1}", "{ to }", "{}"]


def test_doubled_braces_give_one_and_expansions_stay_one_item():
    assert expand_argv(("{{", "}}", "{{}}", "{x}"), {"x": "{y} ; rm -rf /"}) == [
        "{", "}", "{}", "{y} ; rm -rf /"]  # an expansion is never expanded again
    assert expand_argv(("{x}",), {"x": {"k": [1]}}) == ['{"k": [1]}']


def test_no_placeholder_needs_no_args():
    assert expand_argv(("awk", "{print $1}"), None) == ["awk", "{print $1}"]
    assert expand_argv(("awk", "{print $1}"), [1, 2]) == ["awk", "{print $1}"]


def test_missing_argument_is_invalid():
    with pytest.raises(InvalidInput, match="'to'"):
        expand_argv(("mail", "{to}"), {"subject": "x"})
    with pytest.raises(InvalidInput, match="object args"):
        expand_argv(("mail", "{to}"), ["x"])


def config(tmp_path: Path):
    path = tmp_path / "spool.toml"
    path.write_text('[jobs.mail]\ncommand = ["mail", "{to}", "{{literal}}", "{print $1}"]\n'
                    '[jobs.plain]\ncommand = ["awk", "{print $1}"]\n')
    return load_config(path)


def test_normalize_rejects_args_lacking_a_placeholder(tmp_path):
    cfg = config(tmp_path)
    assert normalize({"job": "mail", "args": {"to": "x"}}, cfg, NOW, "a")["args"] == {"to": "x"}
    with pytest.raises(InvalidInput, match="needs argument 'to'"):
        normalize({"job": "mail", "args": {"too": "x"}}, cfg, NOW, "a")
    with pytest.raises(InvalidInput, match="must be an object"):
        normalize({"job": "mail", "args": ["x"]}, cfg, NOW, "a")
    assert normalize({"job": "plain", "args": [1]}, cfg, NOW, "a")["args"] == [1]


@pytest.fixture
def paris(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_naive_times_people_type_are_local(paris):
    assert parse_time("2026-12-03 09:00", local_naive=True) == datetime(
        2026, 12, 3, 8, 0, tzinfo=UTC)
    assert parse_time("2026-07-03 09:00", local_naive=True).hour == 7  # summer time
    assert parse_time("2026-12-03 09:00") == datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    assert parse_time("2026-12-03T09:00Z", local_naive=True).hour == 9  # an offset wins
    with pytest.raises(InvalidInput, match="out of range"):
        parse_time("0001-01-01 00:30", local_naive=True)  # before year 1 once in UTC


def test_human_times_show_their_offset(paris):
    assert human_time(NOW) == "2026-12-03 10:00:00+01:00"
    assert [human_duration(s) for s in (0, 0.25, 45, 300, 7800, 90000)] == [
        "0s", "0.2s", "45s", "5m", "2h10m", "1d1h"]
