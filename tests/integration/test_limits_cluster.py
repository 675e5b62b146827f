"""Concurrency limits across a simulated cluster (DESIGN §12), with real worker processes:
never more holders than `max`, partitioned pools, tokens that return with a killed worker's
job, tokens a dead claimer left, and a lowered `max` that drains."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import CONFIG, make_spool, spool_cli, start_cli, state_files, wait_until
from limitkit import LIMIT_TYPES, max_overlap, records, tokens

from spool import Spool
from spool.api import utc_now
from spool.limits import Limits, all_pools, holders
from spool.limitspec import PoolRef

LIMITS = CONFIG + LIMIT_TYPES


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return make_spool(tmp_path / "spool", LIMITS)


def start_workers(spool: Path, hosts: list[str], per_host: int, capacity: int,
                  logs: Path) -> list:
    return [start_cli(spool, "worker", "--capacity", str(capacity), host=host,
                      log=logs / f"worker-{host}-{n}.log")
            for host in hosts for n in range(per_host)]


def stop(procs: list) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except Exception:
            proc.kill()
            proc.wait()


def test_a_cluster_never_runs_more_than_max(spool_dir, tmp_path):
    out = tmp_path / "runs.jsonl"
    sp = Spool(spool_dir, host="submitter")
    ids = sp.submit_many([{"job": "limited", "args": {"path": str(out), "seconds": 0.01}}
                          for _ in range(200)])
    workers = start_workers(spool_dir, ["a", "b", "c"], 2, 4, tmp_path)
    try:
        wait_until(lambda: len(state_files(spool_dir)["done"]) == 200, 50, "200 jobs done")
    finally:
        stop(workers)
    runs = records(out)
    assert sorted(r["job"] for r in runs) == sorted(ids)
    assert max_overlap([(r["start"], r["end"]) for r in runs]) <= 2
    assert tokens(spool_dir) == []  # every token went with its attempt


def test_a_partitioned_limit_serialises_each_key_only(spool_dir, tmp_path):
    out = tmp_path / "runs.jsonl"
    sp = Spool(spool_dir, host="submitter")
    accounts = [f"acct{n}" for n in range(5)]
    sp.submit_many([{"job": "per_account",
                     "args": {"path": str(out), "tag": acct, "seconds": 0.1}}
                    for _ in range(4) for acct in accounts])
    workers = start_workers(spool_dir, ["a", "b"], 1, 4, tmp_path)
    try:
        wait_until(lambda: len(state_files(spool_dir)["done"]) == 20, 50, "20 jobs done")
    finally:
        stop(workers)
    runs = records(out)
    assert len(runs) == 20
    for acct in accounts:
        assert max_overlap([(r["start"], r["end"]) for r in runs if r["tag"] == acct]) == 1
    assert max_overlap([(r["start"], r["end"]) for r in runs]) > 1  # other keys ran at once
    assert tokens(spool_dir) == []


def test_a_killed_workers_token_returns_with_its_job_not_before(spool_dir, tmp_path):
    marker = tmp_path / "started"
    job_id = Spool(spool_dir, host="submitter").submit(
        "slow_limited", {"seconds": 60, "marker": str(marker)})
    worker = start_workers(spool_dir, ["a"], 1, 4, tmp_path)[0]
    try:
        wait_until(marker.exists, 20, "the task to start")
        held = tokens(spool_dir)
        assert held == ["pair/_/0"]
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        # a reaper on another host judges by heartbeat: the token stays while the job is in
        # processing/, and leaves with it
        reaper = start_cli(spool_dir, "reap", host="b", log=tmp_path / "reaper.log")
        try:
            def moved() -> bool:
                in_processing = bool(state_files(spool_dir)["processing"])
                if in_processing:
                    assert tokens(spool_dir) == held, "token freed while its attempt runs"
                return not in_processing
            wait_until(moved, 30, "the reaper to take the job back")
            wait_until(lambda: tokens(spool_dir) == [], 10, "the token to go")
        finally:
            stop([reaper])
    finally:
        stop([worker])
    assert state_files(spool_dir)["dead"] == [job_id]  # max_attempts 1: lost, buried


def test_a_restarted_worker_releases_the_token_of_its_orphan_at_once(spool_dir, tmp_path):
    marker = tmp_path / "started"
    Spool(spool_dir, host="submitter").submit("slow_limited",
                                              {"seconds": 60, "marker": str(marker)})
    worker = start_workers(spool_dir, ["a"], 1, 4, tmp_path)[0]
    try:
        wait_until(marker.exists, 20, "the task to start")
        token = spool_dir / "limits" / "pair" / "_" / "0"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        worker = start_workers(spool_dir, ["a"], 1, 4, tmp_path)[0]
        wait_until(lambda: state_files(spool_dir)["dead"], 20, "recovery to bury the orphan")
        # no reaper runs at all: the mover (recovery) released it, not the sweep
        wait_until(lambda: not token.exists(), 2, "the token to go with its attempt")
    finally:
        stop([worker])


def test_a_token_of_a_claimer_that_died_before_its_rename_is_freed_after_the_lease(
        spool_dir, tmp_path):
    sp = Spool(spool_dir, host="ghost")
    limits = Limits(sp.store)
    orphan, _ = limits.take([PoolRef("pair")], "never-claimed", 1, utc_now(), set())
    running, _ = limits.take([PoolRef("pair")], "still-running", 1, utc_now(), set())
    ghost = spool_dir / "processing" / "ghost"
    ghost.mkdir()
    beat = ghost / "still-running.1.json"
    beat.write_text(json.dumps({"id": "still-running", "job": "slow_limited"}))
    made = orphan[0].path.stat().st_mtime

    def reap_once() -> bool:
        os.utime(beat)  # the ghost host's worker is alive: its heartbeat moves
        assert spool_cli(spool_dir, "reap", "--once", host="r").returncode == 0
        if orphan[0].path.exists():
            return False
        assert time.time() - made > 3.0, "freed before the lease (3 s) was over"
        return True

    assert not reap_once()  # young: a claim between its token and its rename, maybe
    wait_until(reap_once, 30, "the reaper to free the orphan token")
    assert running[0].path.exists()  # its attempt is in processing/: never freed by a timer
    assert [(h.job_id, h.attempt) for h in holders(all_pools(sp.store))] == \
        [("still-running", 1)]


def test_lowering_max_with_sighup_drains_to_the_new_limit(spool_dir, tmp_path):
    (spool_dir / "spool.toml").write_text(LIMITS.replace("max = 2", "max = 4", 1))
    out = tmp_path / "runs.jsonl"
    Spool(spool_dir, host="submitter").submit_many(
        [{"job": "limited", "args": {"path": str(out), "seconds": 0.4}} for _ in range(30)])
    logs = tmp_path / "logs"
    logs.mkdir()
    workers = start_workers(spool_dir, ["a", "b"], 1, 4, logs)
    try:  # SIGHUP before the handler is set would kill a worker still starting
        wait_until(lambda: all("capacity" in p.read_text() for p in logs.iterdir()), 20,
                   "both workers to start")
        wait_until(lambda: len(tokens(spool_dir)) >= 3, 20, "more than one token held")
        (spool_dir / "spool.toml").write_text(LIMITS.replace("max = 2", "max = 1", 1))
        for proc in workers:
            proc.send_signal(signal.SIGHUP)
        wait_until(lambda: all("reloaded" in p.read_text() for p in logs.iterdir()), 20,
                   "both workers to reload")
        wait_until(lambda: len(tokens(spool_dir)) <= 1, 20, "the pool to drain to 1")
        drained = time.time()
        while len(state_files(spool_dir)["done"]) < 30:
            assert len(tokens(spool_dir)) <= 1, "a claim went past the lowered max"
            assert time.time() - drained < 40, "jobs stopped running"
            time.sleep(0.02)
    finally:
        stop(workers)
    late = [(r["start"], r["end"]) for r in records(out) if r["start"] > drained]
    assert late and max_overlap(late) == 1


def test_cli_rejects_unknown_limits_and_validate_names_them(spool_dir, tmp_path):
    result = spool_cli(spool_dir, "submit", "noop", "--limit", "nope")
    assert result.returncode == 2 and "Error: unknown limit 'nope'" in result.stderr
    result = spool_cli(spool_dir, "submit", "per_account", "-a", "path=/dev/null")
    assert result.returncode == 2 and "needs argument 'tag'" in result.stderr.splitlines()[-1]
    result = spool_cli(spool_dir, "submit", "noop", "--limit", "account:x", "--limit", "pair")
    assert result.returncode == 0
    body = json.loads(spool_cli(spool_dir, "show", result.stdout.strip(), "--json").stdout)
    assert body["limits"] == ["account:x", "pair"]
    assert "per_account: limits: account:{tag}" in spool_cli(spool_dir, "validate").stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[jobs.x]\ncommand = ["true"]\nlimits = ["smtp"]\n')
    result = spool_cli(spool_dir, "validate", str(bad))
    assert result.returncode == 2 and "smtp" in result.stderr.splitlines()[-1]


def test_a_drop_naming_an_unknown_limit_becomes_invalid(spool_dir, tmp_path):
    (spool_dir / "pending" / "d1.json").write_text(json.dumps({"job": "noop",
                                                               "limits": ["nope"]}))
    assert spool_cli(spool_dir, "worker", "--burst").returncode == 0
    dead = json.loads((spool_dir / "dead" / "d1.json").read_text())
    assert dead["outcome"] == "invalid" and "nope" in dead["error"]


def test_status_and_explain_name_the_holders(spool_dir, tmp_path):
    sp = Spool(spool_dir, host="h")
    Limits(sp.store).take([PoolRef("pair")], "holder-1", 1, utc_now(), set())
    Limits(sp.store).take([PoolRef("pair")], "holder-2", 3, utc_now(), set())
    waiting = sp.submit("noop", limits=["pair"])
    doc = json.loads(spool_cli(spool_dir, "status", "--json").stdout)
    pair = next(p for p in doc["limits"] if p["name"] == "pair")
    assert (pair["key"], pair["max"], pair["used"]) == ("_", 2, 2)
    assert pair["holders"] == ["holder-1", "holder-2"]
    assert "limit      pair" in spool_cli(spool_dir, "status").stdout
    text = spool_cli(spool_dir, "explain", waiting).stdout
    assert "limit pair is full" in text and "holder-2 attempt 3" in text
    assert "limit pair" in spool_cli(spool_dir, "ls", "pending").stdout
