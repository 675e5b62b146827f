"""Two hosts' `spool reap --once`, taking turns on one spool, each resuming its own sweeps:
retention removes every file past it and nothing else, a key left by a finished job is
released, live keys stay (docs/protocol.md, The reaper's sweeps)."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta

from conftest import make_spool, spool_cli, state_files
from spool import Spool, sweep
from spool.layout import new_id
from spool.timeutil import UTC


def test_two_hosts_reapers_share_the_sweeps_of_one_spool(tmp_path):
    sp = Spool(make_spool(tmp_path / "spool"), host="submitter")
    stamp = time.time() - 40 * 86400
    expired = set()
    for i in range(2 * sweep.BUDGET + 20):  # more than two passes' budget
        job_id = new_id(datetime.now(UTC)) if i % 2 else f"report-{i}"
        path = sp.path / ("dead" if i % 7 == 0 else "done") / f"{job_id}.json"
        path.write_text(json.dumps({"id": job_id, "job": "noop", "outcome": "completed"}))
        os.utime(path, (stamp, stamp))
        expired.add(job_id)
    kept = {sp.submit("noop") for _ in range(5)}
    for job_id in kept:
        sp.cancel(job_id)
    later = datetime.now(UTC) + timedelta(days=1)
    live = {sp.submit("noop", unique=f"key-{i}", at=later) for i in range(5)}
    ended = sp.submit("noop", unique="ended", at=later)
    marker = sp.store.markers.marker_path("key", "ended")
    body = marker.read_bytes()
    sp.cancel(ended)
    marker.write_bytes(body)  # a crash left the finished job's key behind
    for turn in range(8):
        done = spool_cli(sp.path, "reap", "--once", host="ab"[turn % 2])
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        files = state_files(sp.path)
        if not expired & set(files["done"] + files["dead"]) and not marker.exists():
            break
    files = state_files(sp.path)
    assert not expired & set(files["done"] + files["dead"])
    assert set(files["done"]) == kept | {ended}
    assert set(files["pending"]) == live
    assert not marker.exists()
    assert len(os.listdir(sp.path / "unique")) == len(live)
    assert turn >= 2  # a pass did a bounded share: it took several
