"""submit_many checks a job type and its options once per batch and each job's own args, id
and unique key every time: a batch accepts and refuses exactly what submits one by one do, and
writes the same fields."""

from __future__ import annotations

import math

import pytest

from conftest import make_spool
from spool import Spool
from spool.errors import Conflict, InvalidInput, SpoolError
from spool.jsonvalues import MAX_DEPTH

VARYING = ("id", "created_at", "run_at")


def deep(levels: int) -> list:
    value: list = []
    for _ in range(levels):
        value = [value]
    return value


def spool(tmp_path) -> Spool:
    return Spool(make_spool(tmp_path / "spool"), host="a")


def same_fields(sp: Spool, one: str, other: str) -> None:
    a, b = (sp.store.read(sp.get(job_id).path) for job_id in (one, other))
    assert {k: v for k, v in a.items() if k not in VARYING} == \
        {k: v for k, v in b.items() if k not in VARYING}


def test_a_batch_writes_what_single_submits_write(tmp_path):
    sp = spool(tmp_path)
    specs = [{"job": "echo", "args": {"message": "hi"}, "priority": 3, "timeout": 5},
             {"job": "echo", "args": {"message": "there"}, "priority": 3, "timeout": 5,
              "unique": "k1"},
             {"job": "echo", "args": {"message": "x"}, "priority": 3, "timeout": 5,
              "at": "2030-01-01T00:00:00Z"},
             {"job": "echo", "args": {"message": "x"}, "priority": 3, "timeout": 5,
              "at": "2030-01-01T00:00:00Z", "id": "chosen-1"}]
    batch = sp.submit_many([*specs, *specs[:1]])
    assert batch[3] == "chosen-1"
    for spec, job_id in zip(specs[:3], batch, strict=False):
        single = sp.submit(**{**spec, "unique": "k2" if spec.get("unique") else None})
        body = sp.store.read(sp.get(single).path)
        body["unique"] = spec.get("unique")
        batch_body = sp.store.read(sp.get(job_id).path)
        assert {k: v for k, v in body.items() if k not in VARYING} == \
            {k: v for k, v in batch_body.items() if k not in VARYING}
    assert sp.get(batch[2]).run_at.year == 2030 and sp.get(batch[3]).run_at.year == 2030
    assert sp.get(batch[4]).run_at.year != 2030
    same_fields(sp, batch[0], batch[4])


@pytest.mark.parametrize("bad, error", [
    ({"job": "echo", "args": {}}, "needs argument 'message'"),
    ({"job": "echo", "args": ["no", "object"]}, "args must be an object"),
    ({"job": "echo", "args": {"message": math.nan}}, "not a JSON value"),
    ({"job": "echo", "args": {"message": "\udc80"}}, "not encodable as UTF-8"),
    ({"job": "echo", "args": {"message": deep(MAX_DEPTH + 5)}}, "deeper than"),
    ({"job": "echo", "args": {"message": "m"}, "unique": ""}, "field 'unique'"),
    ({"job": "echo", "args": {"message": "m"}, "unique": 7}, "field 'unique'"),
    ({"job": "echo", "args": {"message": "m"}, "id": "-bad"}, "id"),
])
def test_a_job_after_the_first_of_its_kind_is_checked_all_the_same(tmp_path, bad, error):
    sp = spool(tmp_path)
    good = {"job": "echo", "args": {"message": "fine"}}
    with pytest.raises(InvalidInput, match=error):
        sp.submit(**bad)
    with pytest.raises(InvalidInput, match=error):
        sp.submit_many([good, bad])
    assert sp.list("pending") == []


def test_options_of_another_type_are_not_taken_for_equal_ones(tmp_path):
    sp = spool(tmp_path)
    with pytest.raises(InvalidInput, match="priority"):
        sp.submit_many([{"job": "noop", "priority": 1}, {"job": "noop", "priority": True}])
    with pytest.raises(InvalidInput, match="slots"):
        sp.submit_many([{"job": "noop", "slots": 1}, {"job": "noop", "slots": 1.0}])


def test_unique_keys_in_a_batch_conflict_as_single_submits_do(tmp_path):
    sp = spool(tmp_path)
    sp.submit("noop", unique="taken")
    with pytest.raises(Conflict, match="taken"):
        sp.submit_many([{"job": "noop", "unique": "free"}, {"job": "noop", "unique": "taken"}])
    with pytest.raises(SpoolError):
        sp.submit_many([{"job": "noop", "unique": "twice"}, {"job": "noop", "unique": "twice"}])
