"""A burst worker over a crafted pending/ (review of the worker's packed view): names across
block boundaries, generated and caller-given ids of one priority and due time, due times at the
ends of the calendar, names that almost look canonical. Every due job runs once, in name order;
a job due in the future does not run."""

from __future__ import annotations

import json
from datetime import datetime

from conftest import CONFIG, make_spool, spool_cli

from spool import Spool
from spool.layout import pending_name
from spool.timeutil import UTC, due_stamp


def test_a_burst_worker_runs_a_crafted_pending_dir_in_name_order(tmp_path):
    root = make_spool(tmp_path / "spool", CONFIG)
    sp = Spool(root, host="h1")
    log = tmp_path / "ran.jsonl"
    at = datetime(2026, 1, 1, tzinfo=UTC)
    stamp = due_stamp(at)[:-1]
    args = {"path": str(log)}
    specs = [{"job": "record", "args": args, "at": at, "priority": 5,
              "id": f"{stamp}-{i:012x}"} for i in range(1030)]  # past two blocks of 512
    specs += [{"job": "record", "args": args, "at": at, "priority": 5, "id": job_id}
              for job_id in ("aaa", "zzz", "AAA", "0000", f"{stamp}-ABCDEF012345",
                             f"{stamp}-abcdef01234", f"{stamp}-00000000000a.x")]
    specs += [{"job": "record", "args": args, "at": datetime(1, 1, 1, tzinfo=UTC),
               "priority": 9, "id": "ancient"},
              {"job": "record", "args": args, "at": datetime(1969, 12, 31, 23, 59, 59, 999999,
                                                            tzinfo=UTC), "priority": 0,
               "id": "before-1970"}]
    future = {"job": "record", "args": args, "priority": 0, "id": "future",
              "at": datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)}
    sp.submit_many([*specs, future])
    # dropped by hand: a leap second, and a name without .json (ignored)
    leap = "5-20261231T235960.000000Z-leap.json"
    (root / "pending" / leap).write_text(json.dumps({"job": "record", "args": args,
                                                     "id": "leap"}))
    (root / "pending" / "5-20260101T000000.000000Z-nosuffix").write_text("{}")
    expected = sorted(pending_name(spec["priority"], spec["at"], spec["id"]) for spec in specs)
    result = spool_cli(root, "worker", "--burst", "--capacity", "1", host="h1", timeout=300)
    assert result.returncode == 0, result.stderr
    ran = [json.loads(line)["job"] for line in log.read_text().splitlines()]
    done_in_order = [name[26:-5] for name in expected]
    assert [job_id for job_id in ran if job_id != "leap"] == done_in_order
    assert ran.count("leap") == 1  # adopted under its own id, run once
    assert sorted(p.name for p in (root / "pending").iterdir()) == [
        "0-99991231T235959.999999Z-future.json", "5-20260101T000000.000000Z-nosuffix"]
    assert not list((root / "dead").iterdir())
