"""A planted or hand-made record in done/ never stops the cron daemon or `spool fire`: a
`finished_at` that is missing, null or not a time is skipped when looking for the last success."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_spool

from spool.api import Spool
from spool.cron import last_completed

CONFIG = """
[jobs.noop]
command = ["true"]

[schedules.tick]
every = "1h"
job = "noop"
"""


@pytest.mark.parametrize("finished", [None, 42, "not a time", {"a": 1}, "missing"])
def test_a_done_record_with_a_bad_finished_at_is_skipped(tmp_path: Path, finished: object):
    root = make_spool(tmp_path / "spool", CONFIG)
    good = {"id": "tick@20261201T000000Z", "job": "noop", "outcome": "completed",
            "finished_at": "2026-12-01T00:00:01Z"}
    bad = {"id": "tick@20261202T000000Z", "job": "noop", "outcome": "completed"}
    if finished != "missing":
        bad["finished_at"] = finished
    for body in (good, bad):
        (root / "done" / f"{body['id']}.json").write_text(json.dumps(body))
    sp = Spool(root, host="a")
    assert last_completed(sp.store, "tick") == "2026-12-01T00:00:01Z"
    job_id = sp.fire("tick")
    assert sp.get(job_id).meta["last_completed_at"] == "2026-12-01T00:00:01Z"
