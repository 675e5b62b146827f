"""`spool fsck` through the CLI: exit codes, the --json document, read-only without --repair,
a broken spool.toml, and --repair never losing a job body."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import spool_cli, start_cli, state_files, wait_until
from spool import Spool
from spool.layout import tmp_name

DEAD_PID = 999_999_999
OLD = 1_000_000_000  # 2001: every hand-made file below looks settled


def job(job_id: str, **fields: object) -> dict:
    body = {"id": job_id, "job": "noop", "args": {}, "priority": 5,
            "run_at": "2026-01-01T00:00:00Z", "created_at": "2026-01-01T00:00:00Z",
            "attempts": 0, "max_attempts": 3, "timeout": 60, "slots": 1, "unique": None,
            "after": [], "schedule": None, "meta": {}, "history": []}
    body.update(fields)
    return body


def put(path: Path, content: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    os.utime(path, (OLD, OLD))
    return path


def damage(spool: Path) -> None:
    """One spool with many kinds of damage at once."""
    put(spool / "pending" / "5-20260101T000000.000000Z-A1.json", job("A1"))       # fine
    put(spool / "pending" / "7-20260101T000000.000000Z-A2.json", job("A2"))       # misnamed
    put(spool / "pending" / "5-20260101T000000.000000Z-A3.json", b"")             # empty
    put(spool / "done" / "A4.json", job("A4", outcome="failed"))                  # wrong dir
    put(spool / "done" / "A5.json", job("A5", outcome="completed"))               # two states
    put(spool / "pending" / "5-20260101T000000.000000Z-A5.json", job("A5"))
    put(spool / "dead" / "A6.json", b"{\"id\": \"A6\", \"outc")                   # cut short
    put(spool / "tmp" / tmp_name("requeue", "test", DEAD_PID, "A7.1"), job("A7"))  # stale hold
    put(spool / "tmp" / tmp_name("stage", "test", DEAD_PID), job("A8"))            # scratch
    put(spool / "cancel" / "A4", b"")                                              # stale cancel


def bodies(spool: Path) -> tuple[set[str], set[bytes]]:
    """Ids of every job body anywhere in the spool, and the bytes of every state-dir file."""
    ids, raw = set(), set()
    for path in spool.rglob("*"):
        rel = path.relative_to(spool).parts
        if not path.is_file() or rel[0] not in ("pending", "processing", "done", "dead", "held",
                                                "tmp"):
            continue
        data = path.read_bytes()
        if rel[0] != "tmp":
            raw.add(data)
        try:
            body = json.loads(data)
        except ValueError:
            continue
        if isinstance(body, dict) and body.get("job") and body.get("id"):
            ids.add(body["id"])
    return ids, raw


def test_clean_spool_exits_0(spool_dir):
    spool_cli(spool_dir, "submit", "noop")
    result = spool_cli(spool_dir, "fsck")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("OK 1 job file checked")


def test_problems_exit_1_and_json_has_the_documented_shape(spool_dir):
    damage(spool_dir)
    result = spool_cli(spool_dir, "fsck", "--json")
    assert result.returncode == 1, result.stderr
    doc = json.loads(result.stdout)
    assert doc["spool"] == str(spool_dir) and doc["checked"] >= 9
    kinds = {p["kind"] for p in doc["problems"]}
    assert {"name-mismatch", "unreadable", "wrong-state", "duplicate", "stale-hold",
            "stale-scratch", "stale-cancel"} <= kinds
    for problem in doc["problems"]:
        assert set(problem) == {"path", "kind", "detail", "repaired", "action"}
        assert os.path.isabs(problem["path"]) and problem["repaired"] is False
        assert problem["action"].startswith("would ")


def test_human_output_is_one_line_per_problem(spool_dir):
    damage(spool_dir)
    result = spool_cli(spool_dir, "fsck")
    problems = [line for line in result.stdout.splitlines() if line.startswith("PROBLEM ")]
    assert len(problems) == 8, result.stdout
    assert "PROBLEM done/A4.json: its outcome 'failed' belongs in dead/" in result.stdout


def test_check_without_repair_changes_nothing(spool_dir):
    damage(spool_dir)
    before = {p: p.read_bytes() for p in spool_dir.rglob("*") if p.is_file()
              and "events" not in p.parts}
    spool_cli(spool_dir, "fsck")
    after = {p: p.read_bytes() for p in spool_dir.rglob("*") if p.is_file()
             and "events" not in p.parts}
    assert after == before


def test_repair_fixes_everything_and_loses_no_body(spool_dir):
    damage(spool_dir)
    ids_before, raw_before = bodies(spool_dir)
    repaired = spool_cli(spool_dir, "fsck", "--repair", "--json")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    doc = json.loads(repaired.stdout)
    assert doc["problems"] and all(p["repaired"] for p in doc["problems"])
    ids_after, _ = bodies(spool_dir)
    assert ids_before <= ids_after                      # every job still has a body somewhere
    everything = {p.read_bytes() for p in spool_dir.rglob("*") if p.is_file()}
    assert all(data in everything for data in raw_before)  # unreadable ones kept byte for byte
    again = spool_cli(spool_dir, "fsck")
    assert again.returncode == 0 and "no problems" in again.stdout, again.stdout
    assert "INFO tmp/aside," in again.stdout           # what was set aside is listed
    states = state_files(spool_dir)
    assert sorted(states["pending"]) == ["A1", "A2", "A7"] and states["done"] == ["A5"]
    assert sorted(states["dead"]) == ["A3", "A4", "A6"]


def test_repaired_spool_runs_its_jobs(spool_dir):
    damage(spool_dir)
    assert spool_cli(spool_dir, "fsck", "--repair").returncode == 0

    def drained() -> bool:  # A7's interrupted attempt counts: it is due after its backoff
        burst = spool_cli(spool_dir, "worker", "--burst", timeout=120)
        assert burst.returncode == 0, burst.stderr
        return sorted(state_files(spool_dir)["done"]) == ["A1", "A2", "A5", "A7"]

    wait_until(drained, 30, "every repaired job to run")


def test_problem_left_unrepaired_exits_1(spool_dir):
    put(spool_dir / "processing" / "h2" / "B1.3.json", job("B1", attempts=0))
    result = spool_cli(spool_dir, "fsck", "--repair")
    assert result.returncode == 1
    assert "PROBLEM processing/h2/B1.3.json" in result.stdout and "left alone" in result.stdout


def test_hold_of_a_killed_writer_is_recovered(spool_dir):
    """A real process takes a job out of pending/ into a hold and dies before finishing."""
    src = put(spool_dir / "pending" / "5-20260101T000000.000000Z-C1.json", job("C1"))
    script = ("import os, sys; from spool.layout import tmp_name; "
              "os.rename(sys.argv[1], os.path.join(sys.argv[2], "
              "tmp_name('retry', 'test', os.getpid(), 'C1.0')))")
    subprocess.run([sys.executable, "-c", script, str(src), str(spool_dir / "tmp")],
                   check=True)
    assert state_files(spool_dir)["pending"] == []
    result = spool_cli(spool_dir, "fsck", "--repair")
    assert result.returncode == 0, result.stdout
    assert "REPAIRED tmp/retry,test," in result.stdout
    assert state_files(spool_dir)["pending"] == ["C1"]


def test_broken_config_checks_with_defaults_and_refuses_repair(spool_dir):
    damage(spool_dir)
    (spool_dir / "spool.toml").write_text("[defaults\nbroken")
    check = spool_cli(spool_dir, "fsck")
    assert check.returncode == 1 and check.stderr.count("spool.toml is broken") == 1
    assert "PROBLEM" in check.stdout
    repair = spool_cli(spool_dir, "fsck", "--repair")
    assert repair.returncode == 2 and "Error:" in repair.stderr
    assert (spool_dir / "dead" / "A6.json").exists()   # nothing was moved


def test_usage_errors_exit_2(spool_dir, tmp_path):
    assert spool_cli(spool_dir, "fsck", "--bogus").returncode == 2
    missing = spool_cli(tmp_path / "nowhere", "fsck")
    assert missing.returncode == 2 and "init" in missing.stderr


def test_a_busy_spool_has_no_false_problems(spool_dir):
    """fsck while a worker claims and finishes jobs: moves in flight are not problems."""
    sp = Spool(spool_dir, host="test")
    ids = [sp.submit("sh", {"script": f"sleep 0.0{i % 5}"}) for i in range(40)]
    worker = start_cli(spool_dir, "worker", "--capacity", "4")
    try:
        for _ in range(4):
            result = spool_cli(spool_dir, "fsck", "--json")
            doc = json.loads(result.stdout)
            assert doc["problems"] == [] and result.returncode == 0, doc["problems"]
        wait_until(lambda: len(state_files(spool_dir)["done"]) == len(ids), timeout=60,
                   message="all jobs done")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert spool_cli(spool_dir, "fsck").returncode == 0
