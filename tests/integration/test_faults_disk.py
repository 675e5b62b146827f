"""A full disk loses nothing (DESIGN §3 rules 1 and 6, §4, §7): on a tiny tmpfs filled to the
last page (`space`) or the last inode (`inodes`), a submit succeeds whole or fails with one
`Error:` line and leaves nothing behind; a worker whose finish cannot be written keeps its jobs
(heartbeats on, no reaper steals them) and finishes each exactly once when space returns; a
daemon started on a full disk waits, retries, and works once space returns.

Root only (mount); every test skips cleanly elsewhere.
"""

# ruff: noqa: F811  (fixtures imported from faultkit are parameters here)
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from conftest import make_spool, spool_cli, state_files, wait_until
from faultkit import (  # noqa: F401
    FAULT_CONFIG,
    Filler,
    daemons,
    describe,
    last_line,
    lines_with,
    read_log,
    tmpfs_factory,
    traceback_free,
)

KINDS = ["space", "inodes"]
LEASE = 3.0  # conftest CONFIG: heartbeat 1s, lease 3s
SCHEDULE = """
[schedules.tick]
every = "1s"
job = "noop"
"""
ENOSPC_TEXT = "No space left on device"


def tiny_spool(tmpfs_factory, kind: str, config: str = FAULT_CONFIG) -> tuple[Path, Filler]:
    """A spool alone on a small tmpfs, and the filler that exhausts it."""
    if kind == "space":
        mount = tmpfs_factory("fs", size="2m", nr_inodes=4096)
    else:
        mount = tmpfs_factory("fs", size="16m", nr_inodes=200)
    spool = make_spool(mount / "spool", config)
    return spool, Filler(mount, kind)


def job_files_parse(spool: Path) -> list[str]:
    """Problems with job files in pending/, done/ and dead/: each must be a whole JSON body
    (a finished one with its outcome)."""
    problems = []
    for state in ("pending", "done", "dead"):
        for name in os.listdir(spool / state):
            if not name.endswith(".json"):
                continue
            path = spool / state / name
            try:
                body = json.loads(path.read_bytes())
            except ValueError as exc:
                problems.append(f"{state}/{name} does not parse ({path.stat().st_size} "
                                f"bytes): {exc}")
                continue
            if state != "pending" and "outcome" not in body:
                problems.append(f"{state}/{name} has no outcome (an unfilled record)")
    return problems


def pending_body(spool: Path, job_id: str) -> dict | None:
    for name in os.listdir(spool / "pending"):
        if name.endswith(f"-{job_id}.json"):
            return json.loads((spool / "pending" / name).read_bytes())
    return None


def everywhere(spool: Path, job_id: str) -> list[str]:
    return [state for state, ids in state_files(spool).items() if job_id in ids]


# -- (a) submits while the disk fills --------------------------------------------------------

ROOM = {"space": [0, 0, 1, 1, 2, 3, 0, 4, 6], "inodes": [0, 1, 2, 3, 4, 5, 0, 6, 8]}
SIZES = [10, 9000]  # a one-page body, and one that needs three pages (a short write)


@pytest.mark.parametrize("kind", KINDS)
def test_each_submit_on_a_filling_disk_succeeds_whole_or_fails_cleanly(tmpfs_factory, kind):
    spool, filler = tiny_spool(tmpfs_factory, kind)
    before = spool_cli(spool, "submit", "echo", '{"message": "before the disk filled"}')
    assert before.returncode == 0, describe(before)
    problems: list[str] = []
    succeeded, failed = [], []
    for step, room in enumerate(ROOM[kind]):
        for size in SIZES:
            job_id = f"edge-{step}-{size}"
            args = {"message": "x" * size}
            filler.leave(room)
            result = spool_cli(spool, "submit", "echo", json.dumps(args), "--id", job_id,
                               "--unique", f"key-{job_id}")
            where = f"{job_id} ({room} {'pages' if kind == 'space' else 'inodes'} free)"
            if result.returncode == 0:
                succeeded.append(job_id)
                body = pending_body(spool, job_id)
                if result.stdout.strip() != job_id or body is None or body["args"] != args:
                    problems.append(f"{where}: exit 0 but the job is not whole in pending/: "
                                    f"{describe(result)}")
            else:
                failed.append(job_id)
                if not traceback_free(result) or not last_line(result.stderr).startswith(
                        "Error:"):
                    problems.append(f"{where}: not one clean Error: line: {describe(result)}")
                if everywhere(spool, job_id):
                    problems.append(f"{where}: failed, yet stands in {everywhere(spool, job_id)}")
            left = sorted(os.listdir(spool / "tmp"))
            if left:
                problems.append(f"{where}: exit {result.returncode} left staging in tmp/: {left}")
            problems += [f"{where}: {p}" for p in job_files_parse(spool)]
    filler.free()
    assert succeeded and failed, f"the edge was not hit: ok {succeeded}, failed {failed}"
    for job_id in failed:  # a failed submit holds neither its id nor its unique key
        again = spool_cli(spool, "submit", "echo", '{"message": "again"}', "--id", job_id,
                          "--unique", f"key-{job_id}")
        if again.returncode != 0:
            problems.append(f"{job_id}: resubmitted on a free disk: {describe(again)}")
    assert not problems, "\n".join(problems)
    assert len(state_files(spool)["pending"]) == 1 + len(succeeded) + len(failed)


# -- (b, c) a worker's finish hits the full disk ---------------------------------------------

ENDINGS = {  # job type -> where its jobs end and the outcomes of their attempts
    "wait": ("done", ["completed"]),  # the finish (move, then fill) meets the full disk
    "wait_fail": ("dead", ["failed", "failed"]),  # the requeue (stage, then move) meets it
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("job", list(ENDINGS))
def test_a_worker_whose_settling_hits_a_full_disk_keeps_its_jobs_then_settles_each_once(
        tmpfs_factory, daemons, tmp_path, kind, job):
    spool, filler = tiny_spool(tmpfs_factory, kind)
    state, outcomes = ENDINGS[job]
    marker = tmp_path / "go"
    ids = [spool_cli(spool, "submit", job, json.dumps({"marker": str(marker)})).stdout.strip()
           for _ in range(3)]
    log = tmp_path / "worker.log"
    worker = daemons.start(spool, "worker", "--capacity", "4", host="test", log=log)
    try:
        wait_until(lambda: sorted(state_files(spool)["processing"]) == sorted(ids), 30,
                   "three claimed jobs")
        # a claimed job starts only once its log is open, which needs an inode of its own
        wait_until(lambda: len(lines_with(read_log(log), "attempt 1 pid")) == 3, 30,
                   "three started tasks")
        filler.fill()
        marker.touch()  # the tasks end now; their outcome cannot be written
        wait_until(lambda: ENOSPC_TEXT in read_log(log) or worker.poll() is not None, 30,
                   "the worker to meet the full disk")
        assert worker.poll() is None, f"the worker exited:\n{read_log(log)}"
        assert sorted(state_files(spool)["processing"]) == sorted(ids), state_files(spool)
        processing = spool / "processing" / "test"
        beats = {name: os.stat(processing / name).st_mtime_ns
                 for name in os.listdir(processing)}

        def all_beat_again() -> bool:
            try:
                return all(os.stat(processing / n).st_mtime_ns > m for n, m in beats.items())
            except FileNotFoundError:
                return True  # the assertion below names what went missing

        wait_until(all_beat_again, 3 * LEASE, "heartbeats of the unsettled jobs")
        assert sorted(state_files(spool)["processing"]) == sorted(ids), (
            f"{state_files(spool)}, tmp/ {sorted(os.listdir(spool / 'tmp'))}")
        # a reaper on another host watches them for longer than the lease: none is stale
        start = time.monotonic()
        while time.monotonic() - start < 1.5 * LEASE:
            reap = spool_cli(spool, "reap", "--once", host="other")
            assert "reaped" not in reap.stdout and traceback_free(reap), describe(reap)
        assert sorted(state_files(spool)["processing"]) == sorted(ids), state_files(spool)
        assert worker.poll() is None, f"the worker exited:\n{read_log(log)}"
        logged = lines_with(read_log(log), ENOSPC_TEXT)
        assert any(str(spool) in line for line in logged), (
            "the full disk is logged without the path:\n" + "\n".join(logged[:5]))

        filler.free()
        wait_until(lambda: set(ids) <= set(state_files(spool)[state]), 60,
                   f"every job in {state}/ once space returned")
    finally:
        marker.touch()
    files = state_files(spool)
    for job_id in ids:
        assert files[state].count(job_id) == 1 and everywhere(spool, job_id) == [state], files
        record = json.loads((spool / state / f"{job_id}.json").read_bytes())
        assert record["outcome"] == outcomes[-1] and record["attempts"] == len(outcomes), (
            json.dumps(record, indent=1) + "\n" + read_log(log))
        assert [h["outcome"] for h in record["history"]] == outcomes, record["history"]
    assert not job_files_parse(spool)
    assert worker.poll() is None, read_log(log)


# -- (d) daemons started on a full disk ------------------------------------------------------

def plant_ghost_job(spool: Path) -> str:
    """A job claimed an hour ago by host `ghost`, which died: the reaper's to return."""
    job_id = spool_cli(spool, "submit", "noop", host="setup").stdout.strip()
    name = next(n for n in os.listdir(spool / "pending") if n.endswith(f"-{job_id}.json"))
    ghost = spool / "processing" / "ghost"
    ghost.mkdir()
    path = ghost / f"{job_id}.1.json"
    os.rename(spool / "pending" / name, path)
    old = time.time() - 3600
    os.utime(path, (old, old))
    return job_id


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("daemon", ["worker", "cron", "reap"])
def test_a_daemon_started_on_a_full_disk_waits_and_works_once_space_returns(
        tmpfs_factory, daemons, tmp_path, kind, daemon):
    spool, filler = tiny_spool(tmpfs_factory, kind, FAULT_CONFIG + SCHEDULE)
    job_id = None
    if daemon == "worker":
        job_id = spool_cli(spool, "submit", "noop", host="setup").stdout.strip()
    elif daemon == "reap":
        job_id = plant_ghost_job(spool)
    filler.fill()
    log = tmp_path / f"{daemon}.log"
    host = "other" if daemon == "reap" else "test"
    proc = daemons.start(spool, daemon, host=host, log=log)

    def retried() -> bool:
        return len(lines_with(read_log(log), ENOSPC_TEXT)) >= 2 or proc.poll() is not None

    wait_until(retried, 30, f"the {daemon} to meet the full disk twice")
    assert proc.poll() is None, f"the {daemon} exited ({proc.returncode}):\n{read_log(log)}"
    logged = lines_with(read_log(log), ENOSPC_TEXT)
    filler.free()

    def worked() -> bool:
        files = state_files(spool)
        if daemon == "worker":
            return job_id in files["done"]
        if daemon == "cron":
            return any(i.startswith("tick@") for i in files["pending"] + files["done"])
        return job_id in files["pending"]

    try:
        wait_until(lambda: worked() or proc.poll() is not None, 30,
                   f"the {daemon} to work once space returned")
    except AssertionError:
        raise AssertionError(f"the {daemon} did nothing once space returned: "
                             f"{state_files(spool)}, tmp/ {sorted(os.listdir(spool / 'tmp'))}"
                             f"\n{read_log(log)[-3000:]}") from None
    assert proc.poll() is None, f"the {daemon} exited ({proc.returncode}):\n{read_log(log)}"
    assert worked()
    assert any(str(spool) in line for line in logged), (
        "the full disk is logged without the path:\n" + "\n".join(logged[:5]))
    assert not job_files_parse(spool)
