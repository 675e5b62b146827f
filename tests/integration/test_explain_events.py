"""`explain`, `events`, jobs that can never run, handler errors: the CLI on real spools."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from conftest import read_job, spool_cli, start_cli, state_files, wait_until

from spool import Spool
from spool.errors import JobNotFound
from spool.explain import blocked_ids, require_dependencies

GATES = ["due", "after", "pause", "limits", "slots", "hold"]


def submit(spool_dir: Path, job: str, args=None, **options) -> str:
    return Spool(spool_dir, host="submitter").submit(job, args, **options)


def burst(spool_dir: Path, host: str = "a", capacity: int = 2) -> int:
    return start_cli(spool_dir, "worker", "--burst", "--capacity", str(capacity),
                     host=host).wait(timeout=120)


def explain(spool_dir: Path, job_id: str) -> dict:
    out = spool_cli(spool_dir, "explain", job_id, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def verdicts(doc: dict) -> dict[str, str]:
    return {g["gate"] if g["gate"] != "after" else f"after {g['subject']}": g["verdict"]
            for g in doc["gates"]}


# -- explain ---------------------------------------------------------------------------------


def test_explain_pending_lists_every_gate_in_order(spool_dir):
    first = submit(spool_dir, "noop", delay=3600)
    later = submit(spool_dir, "noop", after=[first], slots=3)
    doc = explain(spool_dir, later)
    assert [g["gate"] for g in doc["gates"]] == GATES
    assert verdicts(doc) == {"due": "ok", f"after {first}": "waiting", "pause": "ok",
                             "limits": "ok", "slots": "waiting", "hold": "ok"}
    assert doc["state"] == "pending" and doc["summary"].startswith("waiting")
    assert verdicts(explain(spool_dir, first))["due"] == "waiting"
    text = spool_cli(spool_dir, "explain", first).stdout.splitlines()
    assert text[0].startswith(f"{first} (noop) is pending: waiting: due in 59m")
    due_line = next(line for line in text[1:] if line.split()[0] == "due")
    assert due_line.split()[1] == "waiting"
    assert re.search(r"at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d", due_line)  # offset shown
    assert [line.split()[0] for line in text[1:]] == GATES


def test_explain_slots_against_each_host(spool_dir):
    big = submit(spool_dir, "noop", slots=3)
    assert burst(spool_dir, "a", capacity=2) == 0  # a ledger of capacity 2, nothing fits
    slots = next(g for g in explain(spool_dir, big)["gates"] if g["gate"] == "slots")
    assert slots["verdict"] == "blocked" and "a: 2 of 2 free" in slots["detail"]
    assert "unclaimable" in spool_cli(spool_dir, "explain", big).stdout
    assert burst(spool_dir, "b", capacity=4) == 0  # host b can take it: it ran there
    assert explain(spool_dir, big)["finished"]["outcome"] == "completed"


def test_explain_finished_and_unknown(spool_dir):
    failed = submit(spool_dir, "fail", max_attempts=1)
    assert burst(spool_dir) == 0
    doc = explain(spool_dir, failed)
    assert doc["state"] == "dead" and doc["finished"]["outcome"] == "failed"
    assert doc["finished"]["error"] == "exit code 1" and doc["attempts"] == 1
    text = spool_cli(spool_dir, "explain", failed).stdout
    assert "outcome   failed" in text and "attempts  1/1" in text
    missing = spool_cli(spool_dir, "explain", "nosuchid")
    assert missing.returncode == 3 and "nosuchid" in missing.stderr


def test_explain_running_job(spool_dir, tmp_path):
    marker = tmp_path / "started"
    job_id = submit(spool_dir, "sleep", {"seconds": 30, "marker": str(marker)})
    worker = start_cli(spool_dir, "worker", "--capacity", "1", host="h1")
    try:
        wait_until(marker.exists, message="the job to start")
        doc = wait_until(lambda: (d := explain(spool_dir, job_id))["running"]["worker_pid"]
                         and d)
        run = doc["running"]
        assert run["host"] == "h1" and run["attempt"] == 1 and run["worker_pid"] == worker.pid
        assert run["runtime"] >= 0 and 0 <= run["heartbeat_age"] < 30
        text = spool_cli(spool_dir, "explain", job_id).stdout
        assert f"pid {worker.pid}" in text and "attempt    1/3" in text
    finally:
        worker.terminate()
        worker.wait(timeout=60)


# -- jobs that can never run -----------------------------------------------------------------


def test_dependency_that_died_cancels_the_dependent(spool_dir):
    doomed = submit(spool_dir, "fail", max_attempts=1)
    waiting = submit(spool_dir, "noop", after=[doomed])
    assert burst(spool_dir) == 0
    files = state_files(spool_dir)
    assert files["dead"] == [doomed] and files["done"] == [waiting]
    body = read_job(spool_dir, "done", waiting)
    assert body["outcome"] == "cancelled"
    assert doomed in body["error"] and "dead (failed)" in body["error"]
    assert explain(spool_dir, waiting)["finished"]["outcome"] == "cancelled"


def test_dependency_that_was_cancelled_cancels_the_dependent(spool_dir):
    first = submit(spool_dir, "noop", delay=3600)
    second = submit(spool_dir, "noop", after=[first])
    assert spool_cli(spool_dir, "cancel", first).returncode == 0
    assert verdicts(explain(spool_dir, second))[f"after {first}"] == "never"
    assert burst(spool_dir) == 0
    body = read_job(spool_dir, "done", second)
    assert body["outcome"] == "cancelled" and "cancelled" in body["error"]


def test_purged_dependency_blocks_and_is_explained(spool_dir):
    first = submit(spool_dir, "noop")
    assert burst(spool_dir) == 0
    second = submit(spool_dir, "noop", after=[first], delay=0)
    assert spool_cli(spool_dir, "purge", "done", "--yes").returncode == 0
    assert burst(spool_dir) == 0  # the blocked job does not keep a burst worker
    assert state_files(spool_dir)["pending"] == [second]
    doc = explain(spool_dir, second)
    assert verdicts(doc)[f"after {first}"] == "blocked"
    assert "missing" in doc["summary"]
    sp = Spool(spool_dir, host="x")
    assert blocked_ids(sp.store) == [second]


def test_require_dependencies(spool_dir):
    sp = Spool(spool_dir, host="x")
    known = submit(spool_dir, "noop", delay=60)
    require_dependencies(sp.store, [known])
    require_dependencies(sp.store, ["batchmate"], also=["batchmate"])
    with pytest.raises(JobNotFound, match="nosuchid"):
        require_dependencies(sp.store, [known, "nosuchid"])


def test_submit_rejects_an_unknown_dependency(spool_dir):
    out = spool_cli(spool_dir, "submit", "noop", "--after", "nosuchid")
    assert out.returncode == 3 and "nosuchid" in out.stderr
    with pytest.raises(JobNotFound):
        Spool(spool_dir).submit("noop", after=["nosuchid"])
    assert state_files(spool_dir)["pending"] == []


# -- handlers --------------------------------------------------------------------------------


def test_handler_exception_is_the_error_and_the_traceback_starts_at_user_code(spool_dir):
    job_id = submit(spool_dir, "add", {"a": "x", "b": 1}, max_attempts=1)
    assert burst(spool_dir) == 0
    body = read_job(spool_dir, "dead", job_id)
    assert body["error"].startswith("TypeError: ") and "str" in body["error"]
    assert body["history"][-1]["error"] == body["error"]
    log = (spool_dir / "logs" / f"{job_id}.log").read_text().splitlines()
    tb = log.index("Traceback (most recent call last):")
    assert "taskfns.py" in log[tb + 1]  # the first frame is the user's
    assert not any("spool/execution.py" in line for line in log)


def test_handler_that_cannot_be_imported_names_the_module(tmp_path):
    from conftest import CONFIG, make_spool

    spool_dir = make_spool(tmp_path / "s", CONFIG + '\n[jobs.ghost]\nhandler = "nosuch_mod:f"\n'
                                                    "max_attempts = 1\n")
    job_id = submit(spool_dir, "ghost")
    assert burst(spool_dir) == 0
    body = read_job(spool_dir, "dead", job_id)
    assert body["outcome"] == "failed" and "nosuch_mod" in body["error"]


# -- events ----------------------------------------------------------------------------------


def write_events(spool_dir: Path, host: str, day: str, lines: list[dict]) -> Path:
    directory = spool_dir / "events" / host
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{day}.jsonl"
    with open(path, "a") as out:
        out.writelines(json.dumps(line) + "\n" for line in lines)
    return path


def test_events_merges_hosts_in_time_order_and_filters(spool_dir):
    echo = submit(spool_dir, "echo", {"message": "hi"}, id="echo-1")
    noop = submit(spool_dir, "noop", id="noop-1")
    write_events(spool_dir, "zed", "2020-01-01", [
        {"time": "2020-01-01T00:00:02Z", "event": "claim", "id": noop, "attempt": 1}])
    write_events(spool_dir, "amy", "2020-01-01", [
        {"time": "2020-01-01T00:00:01Z", "event": "claim", "id": echo, "attempt": 1},
        {"time": "2020-01-01T00:00:03.5Z", "event": "finish", "id": echo,
         "outcome": "completed"}])
    write_events(spool_dir, "amy", "2020-01-02", [{"time": "bad"}, "not json"])  # skipped
    (spool_dir / "events" / "amy" / "2020-01-02.jsonl").open("a").write("{half a line")
    out = spool_cli(spool_dir, "events", "--json")
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found[0]["time"] == "bad"  # a line without a readable time is kept, first
    old = [e for e in found if e["time"].startswith("2020")]
    assert [(e["host"], e["event"], e["id"]) for e in old] == [
        ("amy", "claim", echo), ("zed", "claim", noop), ("amy", "finish", echo)]
    assert [e["event"] for e in found if e["time"] > "2021" and e["time"][0] == "2"] == \
        ["submit", "submit"]
    assert [e["id"] for e in json.loads(spool_cli(spool_dir, "events", "--json", "--job",
                                                  "echo").stdout)] == [echo, echo, echo]
    assert {e["id"] for e in json.loads(spool_cli(spool_dir, "events", "--json", "--id",
                                                  noop).stdout)} == {noop}
    recent = json.loads(spool_cli(spool_dir, "events", "--json", "--since", "1d").stdout)
    assert [e["event"] for e in recent] == ["submit", "submit"]
    text = spool_cli(spool_dir, "events", "--since", "2020-01-01T00:00:02Z").stdout.splitlines()
    assert len(text) == 4 and text[0].split()[2:5] == ["zed", "claim", noop]
    columns = {line.index(job) for line, job in zip(text, [noop, echo, echo, noop], strict=False)}
    assert len(columns) == 1  # aligned


def test_events_follow_sees_new_lines_days_and_hosts(spool_dir, tmp_path):
    log = tmp_path / "follow.out"
    write_events(spool_dir, "one", "2030-01-01", [
        {"time": "2030-01-01T00:00:00Z", "event": "claim", "id": "j1"}])
    follower = start_cli(spool_dir, "events", "-f", "--json", log=log)
    try:
        def ids() -> list[str]:
            return [json.loads(line)["id"] for line in log.read_text().splitlines() if line]
        wait_until(lambda: ids() == ["j1"], message="the first event")
        write_events(spool_dir, "one", "2030-01-01", [
            {"time": "2030-01-01T00:00:01Z", "event": "finish", "id": "j2"}])
        write_events(spool_dir, "one", "2030-01-02", [
            {"time": "2030-01-02T00:00:00Z", "event": "claim", "id": "j3"}])
        write_events(spool_dir, "two", "2030-01-02", [
            {"time": "2030-01-02T00:00:01Z", "event": "claim", "id": "j4"}])
        wait_until(lambda: ids() == ["j1", "j2", "j3", "j4"], message="followed events")
        path = spool_dir / "events" / "two" / "2030-01-02.jsonl"
        with open(path, "a") as out:  # a line written in two parts is read once, whole
            out.write('{"time":"2030-01-02T00:00:02Z","event":"finish",')
            out.flush()
            time.sleep(1.2)
            out.write('"id":"j5"}\n')
        wait_until(lambda: ids()[-1:] == ["j5"], message="the completed line")
        assert ids() == ["j1", "j2", "j3", "j4", "j5"]
    finally:
        follower.terminate()
        follower.wait(timeout=30)


def test_events_since_rejects_nonsense(spool_dir):
    out = spool_cli(spool_dir, "events", "--since", "yesterday-ish")
    assert out.returncode == 2 and "--since" in out.stderr


def test_explain_and_events_in_help():
    out = subprocess.run([os.sys.executable, "-m", "spool.cli", "--help"], capture_output=True,
                         text=True, env={**os.environ}, timeout=60, check=False)
    assert " explain " in out.stdout and " events " in out.stdout


# -- argv placeholders at the entry points -----------------------------------------------------


def test_submit_and_drops_refuse_args_lacking_a_placeholder(spool_dir):
    out = spool_cli(spool_dir, "submit", "echo", "-a", "other=1")
    assert out.returncode == 2 and "'message'" in out.stderr
    assert spool_cli(spool_dir, "submit", "echo", "-a", "message={print $1}").returncode == 0
    (spool_dir / "pending" / "dropped-1.json").write_text('{"job": "echo", "args": {}}')
    assert burst(spool_dir) == 0
    rejected = read_job(spool_dir, "dead", "dropped-1")
    assert rejected["outcome"] == "invalid" and "'message'" in rejected["error"]
    done = state_files(spool_dir)["done"]
    assert len(done) == 1
    log = (spool_dir / "logs" / f"{done[0]}.log").read_text()
    assert log.splitlines()[-1] == "{print $1}"  # an expanded value is taken as it is
