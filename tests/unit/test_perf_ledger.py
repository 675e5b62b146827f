"""The ledger written once per claim pass, not once more per started task: a task's pid is
recorded by the next ledger pass, or RECORD_DELAY after its start; until then a worker's death
is covered by the search for unrecorded tasks, which stops the task and keeps its slots held
while it lives (DESIGN §4)."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime

import pytest
from conftest import make_spool, wait_until

from spool import Spool
from spool.ledger import HostLedger, task_alive
from spool.timeutil import UTC
from spool.worker import RECORD_DELAY, Worker

CONFIG = """
[defaults]
heartbeat = "30s"
lease = "90s"
durable = false

[jobs.noop]
command = ["true"]

[jobs.sleep]
command = ["sleep", "{seconds}"]
"""


@pytest.fixture
def sp(tmp_path):
    return Spool(make_spool(tmp_path / "spool", CONFIG), host="h1")


def ledger_file(sp: Spool) -> dict:
    return json.loads((sp.store.layout.hosts / "h1.json").read_text())


def test_one_ledger_write_per_job_of_a_burst(sp, monkeypatch):
    jobs = 12
    sp.submit_many([{"job": "noop"} for _ in range(jobs)])
    writes = []
    import spool.ledger

    real = spool.ledger.replace_file
    monkeypatch.setattr(spool.ledger, "replace_file",
                        lambda *a, **k: (writes.append(1), real(*a, **k)))
    monkeypatch.setattr("spool.worker.RECORD_DELAY", 60.0)  # however slow `true` is today
    Worker(sp, capacity=1, burst=True).run()
    assert len(list(sp.store.layout.state_dir("done").iterdir())) == jobs
    # start, one per claim pass, the last pass's forget and the exit: before, two per job
    assert len(writes) <= jobs + 4


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_task_whose_worker_died_before_recording_it_is_stopped_and_holds_its_slots(sp):
    job_id = sp.submit("sleep", {"seconds": 60})
    worker = Worker(sp, capacity=1)
    now = datetime.now(UTC)
    worker.start(now)
    worker.claim_and_start(now)
    run = worker.running[job_id]
    entry = ledger_file(sp)["running"][job_id]
    assert entry["task_pid"] is None  # not written yet: the task may end before it matters
    # the worker dies here (kill -9): its pid is gone from the ledger's point of view
    gone = str(dead_pid())
    data = ledger_file(sp)
    data["workers"] = {gone: data["workers"].pop(str(worker.pid))}
    data["running"][job_id]["worker_pid"] = int(gone)
    (sp.store.layout.hosts / "h1.json").write_text(json.dumps(data))
    successor = HostLedger(sp.store.layout, "h1", False)
    with successor.locked() as ledger:  # the next process of the host to take the lock
        # found by its environment and killed; its slots stay held unless it is gone already
        kept = ledger.running.get(job_id)
        assert (kept is None and run.attempt.poll() is not None) or (
            kept is not None and kept["task_pid"] == run.attempt.pid and ledger.free == 0)
    assert wait_until(lambda: run.attempt.poll() is not None, timeout=10)  # stopped
    with successor.locked() as ledger:
        assert job_id not in ledger.running and ledger.free == 1  # released once it is gone
    run.output.close()


def test_a_long_task_is_recorded_soon_after_its_start(sp):
    job_id = sp.submit("sleep", {"seconds": 60})
    worker = Worker(sp, capacity=1)
    worker.start(datetime.now(UTC))
    worker.beat_at = time.monotonic()  # the first step's heartbeat would record it
    try:
        worker.step(datetime.now(UTC))
        assert ledger_file(sp)["running"][job_id]["task_pid"] is None
        assert worker.next_wake(datetime.now(UTC)) <= RECORD_DELAY
        time.sleep(RECORD_DELAY)
        worker.step(datetime.now(UTC))
        entry = ledger_file(sp)["running"][job_id]
        assert entry["task_pid"] == worker.running[job_id].attempt.pid
        assert task_alive(entry, worker.ledger.boot)
    finally:
        worker.shutdown(datetime.now(UTC))
