"""The reaper judges other hosts' heartbeats on its own clock that does not jump, forgets the
observations of another boot, and never requeues a job that already stands elsewhere."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta

from conftest import make_spool, state_files
from spool import Spool
from spool.reaper import Reaper
from spool.timeutil import UTC


class Clock:
    """A CLOCK_BOOTTIME stand-in the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def running_elsewhere(tmp_path, host: str = "busy") -> tuple[Spool, str]:
    """A job claimed by another host, its heartbeat fresh (as a live worker keeps it)."""
    sp = Spool(make_spool(tmp_path / "spool"), host="submitter")
    job_id = sp.submit("noop")
    name = sp.store.pending_names()[0]
    host_dir = sp.store.layout.host_processing(host)
    host_dir.mkdir()
    assert sp.store.claim(name, job_id, 1, host_dir, datetime.now(UTC))
    return sp, job_id


def test_a_wall_clock_jump_between_passes_does_not_reap_a_live_job(tmp_path):
    sp, job_id = running_elsewhere(tmp_path)
    clock = Clock()
    reaper = Reaper(Spool(sp.path, host="r"), clock=clock)
    wall = datetime.now(UTC)
    assert reaper.step(wall) == []
    clock.now += 0.2  # 200 ms later on a clock that does not jump ...
    assert reaper.step(wall + timedelta(hours=1)) == []  # ... while the wall clock leapt
    assert state_files(sp.path)["processing"] == [job_id]
    clock.now += 3.5  # the lease (3 s) really passed without a heartbeat
    assert reaper.step(wall + timedelta(hours=1)) != []
    assert state_files(sp.path)["pending"] == [job_id]


def test_observations_of_another_boot_are_discarded(tmp_path):
    sp, job_id = running_elsewhere(tmp_path)
    path = next(sp.store.processing_paths())
    obs = sp.path / "hosts" / "r.reaper.json"
    key = f"busy/{path.name}"
    obs.write_text(json.dumps({"boot": "another-boot", "files": {
        key: [os.stat(path).st_mtime_ns, -1e9]}}))
    reaper = Reaper(Spool(sp.path, host="r"), clock=Clock())
    assert reaper.step(datetime.now(UTC)) == []
    assert state_files(sp.path)["processing"] == [job_id]


def test_a_lost_attempt_names_the_host_that_ran_it(tmp_path):
    sp, job_id = running_elsewhere(tmp_path, "runner")
    (sp.path / "hosts" / "runner.json").write_text(json.dumps({"running": {
        job_id: {"attempt": 1, "started_at": "2026-11-22T11:59:00Z"}}}))
    clock = Clock()
    reaper = Reaper(Spool(sp.path, host="r"), clock=clock)
    reaper.step(datetime.now(UTC))
    clock.now += 10
    assert reaper.step(datetime.now(UTC))
    lost = sp.get(job_id).history[-1]
    assert lost["outcome"] == "lost" and lost["host"] == "runner"
    assert lost["started_at"] == "2026-11-22T11:59:00Z"
