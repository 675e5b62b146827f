"""Workers as real processes on a real spool: slots, hosts, timeouts, cancel, retries,
shutdown, crash recovery, bad files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from datetime import datetime, timedelta
from pathlib import Path


from conftest import (CONFIG, make_spool, read_job, spool_cli, start_cli, state_files,
                      wait_until)
from spool import Spool


def submit(spool_dir: Path, job: str, args=None, **options) -> str:
    return Spool(spool_dir, host="submitter").submit(job, args, **options)


def burst(spool_dir: Path, host: str = "test", capacity: int = 2) -> subprocess.Popen:
    return start_cli(spool_dir, "worker", "--burst", "--capacity", str(capacity), host=host)


def finish(proc: subprocess.Popen, timeout: float = 120) -> int:
    return proc.wait(timeout=timeout)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_capacity_is_never_exceeded_by_two_workers(spool_dir, tmp_path):
    out = tmp_path / "runs.jsonl"
    ids = [submit(spool_dir, "record", {"path": str(out), "tag": str(i), "seconds": 0.2})
           for i in range(10)]
    workers = [burst(spool_dir, "a", capacity=2), burst(spool_dir, "a", capacity=2)]
    assert [finish(w) for w in workers] == [0, 0]
    runs = records(out)
    assert sorted(r["job"] for r in runs) == sorted(ids)
    events = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    assert peak <= 2


def test_job_bigger_than_capacity_is_never_claimed_and_reported(spool_dir):
    big = submit(spool_dir, "big")
    small = submit(spool_dir, "noop")
    assert finish(burst(spool_dir, "a", capacity=2)) == 0
    files = state_files(spool_dir)
    assert files["pending"] == [big] and files["done"] == [small]
    status = json.loads(spool_cli(spool_dir, "status", "--json").stdout)
    assert status["unclaimable"] == [big]
    assert "unclaimable" in spool_cli(spool_dir, "status").stdout


def test_three_hosts_run_300_jobs_each_exactly_once(spool_dir, tmp_path):
    out = tmp_path / "runs.jsonl"
    ids = Spool(spool_dir, host="s").submit_many(
        [{"job": "record", "args": {"path": str(out), "tag": str(i)}} for i in range(300)])
    workers = [burst(spool_dir, host, capacity=2) for host in ("a", "b", "c")]
    assert [finish(w) for w in workers] == [0, 0, 0]
    runs = records(out)
    assert sorted(r["job"] for r in runs) == sorted(ids)  # each ran once, none twice
    assert sorted(state_files(spool_dir)["done"]) == sorted(ids)
    hosts = {read_job(spool_dir, "done", i)["history"][0]["host"] for i in ids}
    assert hosts <= {"a", "b", "c"} and len(hosts) >= 2


def test_timeout_kills_the_grandchild(spool_dir, tmp_path):
    marker = tmp_path / "grandchild.pid"
    job_id = submit(spool_dir, "sh", {"script": f"sleep 300 & echo $! > {marker}; wait"},
                    timeout=1, max_attempts=1)
    assert finish(burst(spool_dir)) == 0
    body = read_job(spool_dir, "dead", job_id)
    assert body["outcome"] == "timeout" and "timed out" in body["history"][-1]["error"]
    grandchild = int(marker.read_text())
    wait_until(lambda: not _alive(grandchild), 10, "grandchild to be killed")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of an unrelated parent counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return False


def test_cancel_a_running_job(spool_dir, tmp_path):
    marker = tmp_path / "task.pid"
    job_id = submit(spool_dir, "sleep", {"seconds": 300, "marker": str(marker)})
    worker = start_cli(spool_dir, "worker", "--capacity", "1")
    try:
        wait_until(marker.exists, 30, "task to start")
        result = spool_cli(spool_dir, "cancel", job_id)
        assert result.returncode == 0 and "requested" in result.stdout
        assert spool_cli(spool_dir, "wait", job_id, "--timeout", "30").returncode == 5
        assert read_job(spool_dir, "done", job_id)["outcome"] == "cancelled"
        wait_until(lambda: not _alive(int(marker.read_text())), 10, "task to stop")
        assert not (spool_dir / "cancel" / job_id).exists()
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)


def test_exit_100_and_spool_cancel_mean_cancelled(spool_dir):
    by_code = submit(spool_dir, "sh", {"script": "exit 100"})
    by_handler = submit(spool_dir, "cancel_self")
    assert finish(burst(spool_dir)) == 0
    for job_id in (by_code, by_handler):
        body = read_job(spool_dir, "done", job_id)
        assert body["outcome"] == "cancelled" and body["attempts"] == 1


def test_handler_result_and_command_output(spool_dir):
    added = submit(spool_dir, "add", {"a": 2, "b": 40})
    echoed = submit(spool_dir, "echo", {"message": "two words; $(rm -rf /)"})
    via_file = submit(spool_dir, "sh", {"script": 'echo "{\\"n\\": 7}" > "$SPOOL_RESULT"'})
    assert finish(burst(spool_dir)) == 0
    assert read_job(spool_dir, "done", added)["result"] == 42
    assert read_job(spool_dir, "done", via_file)["result"] == {"n": 7}
    log = (spool_dir / "logs" / f"{echoed}.log").read_text()
    assert "attempt 1" in log and "two words; $(rm -rf /)\n" in log


def test_retries_with_growing_due_then_dead_with_full_history(spool_dir):
    job_id = submit(spool_dir, "fail")
    worker = start_cli(spool_dir, "worker", "--capacity", "1")
    try:  # a burst worker would stop at the first retry: it is due later
        assert spool_cli(spool_dir, "wait", job_id, "--timeout", "60").returncode == 1
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    body = read_job(spool_dir, "dead", job_id)
    assert body["outcome"] == "failed" and body["attempts"] == 3
    assert [h["outcome"] for h in body["history"]] == ["failed"] * 3
    assert [h["attempt"] for h in body["history"]] == [1, 2, 3]
    events = [json.loads(line) for f in (spool_dir / "events").rglob("*.jsonl")
              for line in f.read_text().splitlines()]
    requeues = [e for e in events if e["id"] == job_id and e["event"] == "requeue"]
    delays = [_seconds(e["due"]) - _seconds(e["time"]) for e in requeues]
    assert len(delays) == 2 and 0.05 < delays[0] < delays[1]
    log = (spool_dir / "logs" / f"{job_id}.log").read_text()
    assert [f"attempt {n} " in log for n in (1, 2, 3)] == [True] * 3


def _seconds(text: str) -> float:
    from spool.timeutil import parse_time

    return parse_time(text).timestamp()


def test_sigterm_returns_running_job_as_interrupted(tmp_path):
    spool_dir = make_spool(tmp_path / "s", CONFIG.replace('grace = "5s"', 'grace = "0.3s"'))
    marker = tmp_path / "task.pid"
    job_id = submit(spool_dir, "sleep", {"seconds": 300, "marker": str(marker)})
    worker = start_cli(spool_dir, "worker", "--capacity", "1")
    wait_until(marker.exists, 30, "task to start")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    job = Spool(spool_dir, host="x").get(job_id)
    assert job.state == "pending" and job.attempts == 0
    assert job.history[-1]["outcome"] == "interrupted"
    assert not _alive(int(marker.read_text()))


def test_kill_9_then_restart_recovers_the_job(spool_dir, tmp_path):
    marker = tmp_path / "task.pid"
    job_id = submit(spool_dir, "sh", {"script": f"echo $$ > {marker}; sleep 300"})
    worker = start_cli(spool_dir, "worker", "--capacity", "1", host="h")
    wait_until(marker.exists, 30, "task to start")
    ledger = spool_dir / "hosts" / "h.json"
    wait_until(lambda: json.loads(ledger.read_text())["running"][job_id].get("task_pid"), 30,
               "the task's pid in the ledger")
    worker.kill()
    worker.wait()
    old_task = int(marker.read_text())
    assert _alive(old_task)  # the task outlived its worker
    marker.unlink()
    assert state_files(spool_dir)["processing"] == [job_id]
    restarted = start_cli(spool_dir, "worker", "--capacity", "1", host="h")
    try:
        wait_until(marker.exists, 30, "job to run again")
        job = Spool(spool_dir, host="x").get(job_id)
        assert job.state == "processing" and job.history[-1]["outcome"] == "lost"
        assert (spool_dir / "processing" / "h" / f"{job_id}.2.json").exists()
        wait_until(lambda: not _alive(old_task), 10, "the orphaned task to be stopped")
    finally:
        restarted.send_signal(signal.SIGINT)
        restarted.send_signal(signal.SIGINT)
        restarted.wait(30)


def test_bad_files_never_block_the_good_job(spool_dir):
    pending = spool_dir / "pending"
    for i in range(20):
        (pending / f"bad{i}.json").write_text("{not json")
        os.utime(pending / f"bad{i}.json", (1, 1))
        (pending / f"unknown{i}.json").write_text('{"job": "nosuch"}')
    (pending / "dir.json").mkdir()
    os.symlink("/etc/passwd", pending / "link.json")
    canonical = "0-20000101T000000.000000Z-handmade.json"  # canonical name, bad content
    (pending / canonical).write_text('{"job": "noop", "timeout": "whenever"}')
    good = submit(spool_dir, "noop")
    assert finish(burst(spool_dir)) == 0
    files = state_files(spool_dir)
    assert files["done"] == [good]
    assert len(files["dead"]) == 43 and files["pending"] == []
    assert "whenever" in read_job(spool_dir, "dead", "handmade")["error"]
    assert os.listdir(pending) == []


def test_unknown_type_in_canonical_file_is_buried_with_original(spool_dir):
    job_id = submit(spool_dir, "noop")
    (spool_dir / "spool.toml").write_text(CONFIG.replace('[jobs.noop]\ncommand = ["true"]\n', ""))
    assert finish(burst(spool_dir)) == 0
    body = read_job(spool_dir, "dead", job_id)
    assert body["outcome"] == "invalid" and "noop" in body["error"]
    assert json.loads((spool_dir / "dead" / f"{job_id}.orig").read_text())["job"] == "noop"


def test_after_dependency_waits_for_completion(spool_dir, tmp_path):
    out = tmp_path / "order.jsonl"
    first = submit(spool_dir, "record", {"path": str(out), "tag": "first", "seconds": 0.3})
    second = submit(spool_dir, "record", {"path": str(out), "tag": "second"}, after=[first],
                    priority=0)
    assert finish(burst(spool_dir, capacity=4)) == 0
    runs = {r["tag"]: r for r in records(out)}
    assert runs["second"]["start"] >= runs["first"]["end"]
    assert {first, second} <= set(state_files(spool_dir)["done"])


def test_submit_wait_from_a_pipeline(spool_dir):
    worker = start_cli(spool_dir, "worker", "--capacity", "1")
    try:
        result = spool_cli(spool_dir, "submit", "add", "-", "--wait", input='{"a": 1, "b": 1}')
        assert result.returncode == 0
        job_id = result.stdout.split()[0]
        assert read_job(spool_dir, "done", job_id)["result"] == 2
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)


def test_missing_argv_argument_is_invalid_not_retried(spool_dir):
    import pytest

    from spool.errors import InvalidInput
    from spool.layout import pending_name
    from spool.timeutil import UTC

    with pytest.raises(InvalidInput, match="'message'"):  # submit refuses it (DESIGN §5)
        submit(spool_dir, "echo", {"other": 1})
    job_id = "handmade-1"  # a canonical file placed by hand reaches the worker unchecked
    due = datetime.now(UTC) - timedelta(seconds=1)
    (spool_dir / "pending" / pending_name(5, due, job_id)).write_text(json.dumps(
        {"id": job_id, "job": "echo", "args": {"other": 1}}))
    assert finish(burst(spool_dir)) == 0
    body = read_job(spool_dir, "dead", job_id)
    assert body["outcome"] == "invalid" and state_files(spool_dir)["pending"] == []  # not retried
    assert "'message'" in body["error"]
