"""Adoption of dropped files and every rejection of DESIGN §7."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta

import pytest

from conftest import make_spool, state_files
from spool import Spool
from spool.drops import adopt_drop, adopt_drops
from spool.timeutil import UTC

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


@pytest.fixture
def sp(tmp_path):
    return Spool(make_spool(tmp_path / "spool"), host="h1", clock=lambda: NOW)


def drop(sp: Spool, name: str, content: bytes | str, age: float = 60) -> None:
    path = sp.path / "pending" / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    stamp = NOW.timestamp() - age
    os.utime(path, (stamp, stamp))


def test_valid_drop_gets_canonical_name_and_defaults(sp):
    drop(sp, "hello.json", '{"job": "echo", "args": {"message": "hi"}, "priority": 2, "x": 1}')
    assert adopt_drops(sp.store, NOW) == ["hello"]
    [name] = os.listdir(sp.path / "pending")
    assert name.startswith("2-") and name.endswith("-hello.json")
    job = sp.get("hello")
    assert (job.args, job.max_attempts, job.extra) == ({"message": "hi"}, 3, {"x": 1})


def test_id_field_wins_and_bad_stem_gets_a_derived_id(sp):
    drop(sp, "a.json", '{"job": "noop", "id": "custom-1"}')
    drop(sp, "has space.json", '{"job": "noop"}')
    ids = adopt_drops(sp.store, NOW)
    assert "custom-1" in ids and len(ids) == 2
    other = next(i for i in ids if i != "custom-1")
    assert " " not in other and sp.get(other).job == "noop"


def test_temporary_names_are_ignored(sp):
    drop(sp, ".writing.json", "{")
    drop(sp, "notes.txt", "hello")
    drop(sp, "job.json.tmp", "{")
    assert adopt_drops(sp.store, NOW) == []
    assert sorted(os.listdir(sp.path / "pending")) == [".writing.json", "job.json.tmp", "notes.txt"]


def test_young_unparsable_drop_is_left_alone_then_rejected(sp):
    drop(sp, "partial.json", '{"job": "no', age=1)
    assert adopt_drop(sp.store, "partial.json", NOW) is None
    assert os.listdir(sp.path / "pending") == ["partial.json"]
    later = NOW + timedelta(seconds=10)
    assert adopt_drop(sp.store, "partial.json", later) == "partial"
    record = json.loads((sp.path / "dead" / "partial.json").read_text())
    assert record["outcome"] == "invalid" and "not valid JSON" in record["error"]
    assert (sp.path / "dead" / "partial.orig").read_bytes() == b'{"job": "no'


@pytest.mark.parametrize("content,needle", [
    ("[1, 2]", "not a JSON object"),
    ('{"args": {}}', "field 'job'"),
    ('{"job": "nosuch"}', "unknown job type 'nosuch'"),
    ('{"job": "noop", "priority": 11}', "'priority': 11 is out of range"),
    ('{"job": "noop", "priority": "high"}', "priority"),
    ('{"job": "noop", "id": "../etc"}', "field 'id' '../etc' is invalid"),
    ('{"job": "noop", "run_at": "tomorrow"}', "run_at"),
    ('{"job": "noop", "timeout": -5}', "timeout"),
    ('{"job": "noop", "after": ["/x"]}', "after"),
    (b"\xff\xfe\x00garbage", "not valid JSON"),
])
def test_invalid_drops_go_to_dead_with_error_and_original(sp, content, needle):
    drop(sp, "bad.json", content)
    [job_id] = adopt_drops(sp.store, NOW)
    record = json.loads((sp.path / "dead" / f"{job_id}.json").read_text())
    assert record["outcome"] == "invalid"
    assert needle in record["error"] and "bad.json" in record["error"]
    original = (sp.path / "dead" / f"{job_id}.orig").read_bytes()
    assert original == (content if isinstance(content, bytes) else content.encode())
    assert os.listdir(sp.path / "pending") == []


def test_too_big_drop_is_rejected_unread(sp):
    big = '{"job": "noop", "args": "' + "x" * 2_000_000 + '"}'
    drop(sp, "big.json", big)
    [job_id] = adopt_drops(sp.store, NOW)
    record = json.loads((sp.path / "dead" / f"{job_id}.json").read_text())
    assert "larger than max_job_bytes" in record["error"]
    assert (sp.path / "dead" / f"{job_id}.orig").read_text() == big


def test_symlink_is_never_followed(sp, tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text('{"job": "noop"}')
    os.symlink(secret, sp.path / "pending" / "link.json")
    [job_id] = adopt_drops(sp.store, NOW)
    assert "symlink" in json.loads((sp.path / "dead" / f"{job_id}.json").read_text())["error"]
    assert os.path.islink(sp.path / "dead" / f"{job_id}.orig")
    assert secret.read_text() == '{"job": "noop"}'


def test_directory_is_rejected(sp):
    (sp.path / "pending" / "folder.json").mkdir()
    [job_id] = adopt_drops(sp.store, NOW)
    assert "directory" in json.loads((sp.path / "dead" / f"{job_id}.json").read_text())["error"]
    assert (sp.path / "dead" / f"{job_id}.orig").is_dir()


def test_drop_with_existing_id_is_rejected_not_duplicated(sp):
    sp.submit("noop", id="taken")
    drop(sp, "x.json", '{"job": "noop", "id": "taken"}')
    [job_id] = adopt_drops(sp.store, NOW)
    assert job_id != "taken"
    assert "already exists" in json.loads((sp.path / "dead" / f"{job_id}.json").read_text())["error"]
    assert state_files(sp.path)["pending"] == ["taken"]


def test_retry_of_invalid_drop_adopts_the_original_again(sp):
    drop(sp, "later.json", '{"job": "notyet"}')
    adopt_drops(sp.store, NOW)
    (sp.path / "spool.toml").write_text((sp.path / "spool.toml").read_text()
                                        + '\n[jobs.notyet]\ncommand = ["true"]\n')
    fresh = Spool(sp.path, host="h1", clock=lambda: NOW)
    fresh.retry("later")
    assert adopt_drops(fresh.store, NOW) == ["later"]
    assert fresh.get("later").state == "pending"
    assert not (sp.path / "dead" / "later.orig").exists()
