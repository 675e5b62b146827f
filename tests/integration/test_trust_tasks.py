"""A task never outlives its worker's claim unnoticed: one whose worker died before recording
it is still found and stopped, a handler child dies with its worker, the reaper of the host
stops a dead worker's task before it requeues the job, and a claim never adopts a dead
worker's orphan as its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime

from conftest import alive, start_cli, state_files, wait_until
from spool import Spool
from spool.ledger import HostLedger, process_start
from spool.reaper import Reaper
from spool.timeutil import UTC


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def fake_task(spool_dir, job_id: str, attempt: int) -> subprocess.Popen:
    """A command task as a worker starts it: its own session, the attempt's environment."""
    env = dict(os.environ, SPOOL_DIR=str(spool_dir), SPOOL_JOB_ID=job_id,
               SPOOL_ATTEMPT=str(attempt))
    return subprocess.Popen(["sleep", "300"], env=env, start_new_session=True)


def claimed(sp: Spool, host: str) -> tuple[str, str]:
    job_id = sp.submit("noop")
    host_dir = sp.store.layout.host_processing(host)
    host_dir.mkdir(exist_ok=True)
    assert sp.store.claim(sp.store.pending_names()[0], job_id, 1, host_dir, datetime.now(UTC))
    return job_id, f"{job_id}.1.json"


def test_a_task_its_dead_worker_never_recorded_is_stopped(spool_dir):
    sp = Spool(spool_dir, host="h")
    job_id, _ = claimed(sp, "h")
    task = fake_task(spool_dir, job_id, 1)
    ledger = HostLedger(sp.store.layout, "h", False)
    worker = str(dead_pid())
    with ledger.locked(2) as book:  # the dead worker's claim, recorded before its task was
        book.workers[worker] = {"boot_id": ledger.boot}
        book.running[job_id] = {"slots": 1, "attempt": 1, "worker_pid": int(worker),
                                "task_pid": None, "started_at": "2026-01-01T00:00:00Z"}
    other = fake_task(spool_dir, job_id, 2)  # another attempt's task is left alone
    try:
        with ledger.locked() as book:  # found and stopped; its slots held until it is gone
            entry = book.running.get(job_id)
            assert entry is None or entry["task_pid"] == task.pid
        wait_until(lambda: task.poll() is not None, 10, "the unrecorded task to be stopped")
        assert other.poll() is None
        with ledger.locked() as book:
            assert job_id not in book.running
        assert job_id not in json.loads((spool_dir / "hosts" / "h.json").read_text())["running"]
    finally:
        for proc in (task, other):
            proc.kill()
            proc.wait()


def test_the_reaper_of_the_host_stops_a_dead_workers_task_before_requeueing(spool_dir):
    sp = Spool(spool_dir, host="h")
    job_id, name = claimed(sp, "h")
    task = fake_task(spool_dir, job_id, 1)
    ledger = HostLedger(sp.store.layout, "h", False)
    try:
        with ledger.locked(2) as book:
            worker = dead_pid()
            book.workers[str(worker)] = {"boot_id": ledger.boot}
            book.running[job_id] = {"slots": 1, "attempt": 1, "worker_pid": worker,
                                    "task_pid": task.pid, "task_start": process_start(task.pid),
                                    "started_at": "2026-11-22T11:00:00Z"}
        assert Reaper(Spool(spool_dir, host="h")).step(datetime.now(UTC)) == [name]
        assert task.wait(10) == -signal.SIGKILL
        assert state_files(spool_dir)["pending"] == [job_id]
        assert sp.get(job_id).history[-1]["started_at"] == "2026-11-22T11:00:00Z"
    finally:
        task.kill()
        task.wait()


def test_a_handler_child_dies_with_its_worker(spool_dir, tmp_path):
    marker = tmp_path / "started"
    Spool(spool_dir, host="s").submit("sleep", {"seconds": 300, "marker": str(marker)})
    worker = start_cli(spool_dir, "worker", "--capacity", "1", host="h")
    try:
        wait_until(marker.exists, 30, "the handler to start")
        children = [int(p) for p in os.listdir("/proc")
                    if p.isdigit() and _parent(int(p)) == worker.pid]
        assert children, "the worker has a handler child"
    finally:
        worker.kill()  # before or after it recorded its child: the child must not run on
        worker.wait()
    for pid in children:
        wait_until(lambda pid=pid: not alive(pid), 10, "the handler child to die with its worker")


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def test_a_claim_never_adopts_a_dead_workers_orphan_as_its_own(spool_dir):
    sp = Spool(spool_dir, host="h")
    job_id = sp.submit("noop")
    name = sp.store.pending_names()[0]
    path = spool_dir / "pending" / name
    old = 1_700_000_000
    os.utime(path, (old, old))
    seen = path.stat()  # what this claimer read before another worker of the host won
    host_dir = sp.store.layout.host_processing("h")
    host_dir.mkdir()
    orphan = host_dir / f"{job_id}.1.json"
    os.rename(path, orphan)  # the other worker's claim of the very same file ...
    os.utime(orphan)  # ... made its mtime fresh; then that worker died
    now = datetime.now(UTC)
    assert sp.store.claim(name, job_id, 1, host_dir, now, seen.st_ino, seen.st_mtime_ns) is None
    os.utime(orphan, ns=(seen.st_atime_ns, seen.st_mtime_ns))  # as our own rename leaves it,
    assert sp.store.claim(name, job_id, 1, host_dir, now,  # which NFS misreported: ours
                          seen.st_ino, seen.st_mtime_ns) == orphan


def test_a_claim_taken_before_its_start_is_never_started(spool_dir):
    from spool.claim import claim_due
    from spool.worker import Worker

    sp = Spool(spool_dir, host="h")
    job_id = sp.submit("noop")
    worker = Worker(sp, capacity=1)
    now = datetime.now(UTC)
    worker.start(now)
    try:
        with worker.ledger.locked() as ledger:
            [item] = claim_due(sp.store, worker.view, ledger, now, worker.pid, 1)
        # the worker stalls past the lease here; another host's reaper takes the job back
        os.rename(item.path, spool_dir / "pending" / f"{job_id}.json")
        worker.attempts.launch(item, now)
        assert job_id not in worker.running
        assert not (spool_dir / "logs" / f"{job_id}.log").exists()  # nothing was started
    finally:
        worker.shutdown(datetime.now(UTC))


def test_a_program_an_unrecorded_handler_started_is_stopped_after_its_child_died(spool_dir):
    # a handler attempt's child dies with its killed worker (PDEATHSIG) before the worker
    # recorded it, but a program it started lives on in the group: found by its environment
    sp = Spool(spool_dir, host="h")
    job_id, _ = claimed(sp, "h")
    env = dict(os.environ, SPOOL_DIR=str(spool_dir), SPOOL_JOB_ID=job_id, SPOOL_ATTEMPT="1")
    leader = subprocess.Popen(["sh", "-c", "sleep 300 & echo $!"], env=env,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    program = int(leader.stdout.readline())
    leader.wait()  # the group's leader is gone; the program is still in its group
    assert alive(program) and os.getpgid(program) == leader.pid
    ledger = HostLedger(sp.store.layout, "h", False)
    worker = str(dead_pid())
    with ledger.locked(2) as book:
        book.workers[worker] = {"boot_id": ledger.boot}
        book.running[job_id] = {"slots": 1, "attempt": 1, "worker_pid": int(worker),
                                "task_pid": None, "started_at": "2026-01-01T00:00:00Z"}
    try:
        with ledger.locked():
            pass
        wait_until(lambda: not alive(program), 10, "the program to be stopped")
    finally:
        try:
            os.kill(program, signal.SIGKILL)
        except ProcessLookupError:
            pass
