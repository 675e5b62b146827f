"""Flow control (DESIGN §12) with real workers, cron daemons and CLI processes: pause and resume
of a job type, a host and a schedule while jobs run; hold and release; run a schedule now."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import CONFIG, make_spool, read_job, spool_cli, start_cli, state_files, wait_until

from spool import Spool
from spool.cli import main
from spool.cron import Cron
from spool.layout import pending_name
from spool.recovery import recover_holds
from spool.store import MOVES
from spool.timeutil import UTC, parse_time

SCHEDULED = CONFIG + """
[schedules.tick]
every = "1s"
job = "noop"
overlap = "allow"

[schedules.slow]
every = "1d"
job = "sh"
args = {script = "true"}
"""


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return make_spool(tmp_path / "spool", SCHEDULED)


def gated(gate: Path) -> dict:
    """Args of an `sh` job that runs until `gate` exists."""
    return {"script": f"while [ ! -e {gate} ]; do sleep 0.05; done"}


def state_of(spool_dir: Path, job_id: str) -> str:
    return Spool(spool_dir, host="x").get(job_id).state


def stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    assert [proc.wait(30) for proc in procs] == [0] * len(procs)


# -- pause and resume ------------------------------------------------------------------------


def test_pause_a_job_type_while_it_runs(spool_dir, tmp_path):
    sp = Spool(spool_dir, host="cli")
    gate = tmp_path / "gate"
    running = sp.submit("sh", gated(gate))
    worker = start_cli(spool_dir, "worker", "--capacity", "4", host="a",
                       log=tmp_path / "worker.log")
    try:
        wait_until(lambda: state_of(spool_dir, running) == "processing", 30, "first sh runs")
        result = spool_cli(spool_dir, "pause", "sh")
        assert result.returncode == 0 and result.stdout.strip() == "job.sh paused"
        again = spool_cli(spool_dir, "pause", "sh")
        assert again.returncode == 0 and "job.sh was paused already" in again.stdout
        waiting = sp.submit("sh", {"script": "true"}, priority=0)  # first in claim order
        later = sp.submit("noop")
        wait_until(lambda: state_of(spool_dir, later) == "done", 30, "noop after the pause")
        assert state_of(spool_dir, waiting) == "pending"  # passed over, though first in order
        assert state_of(spool_dir, running) == "processing"  # running attempts go on
        listed = spool_cli(spool_dir, "ls", "pending").stdout
        assert any(waiting in ln and ln.split()[-1] == "paused" for ln in listed.splitlines())
        gates = {g["gate"]: g for g in sp.explain(waiting)["gates"]}
        assert gates["pause"]["verdict"] == "blocked" and "resume sh" in gates["pause"]["detail"]
        gate.touch()
        wait_until(lambda: state_of(spool_dir, running) == "done", 30, "running sh finishes")
        assert state_of(spool_dir, waiting) == "pending"
        assert spool_cli(spool_dir, "resume", "sh").stdout.strip() == "job.sh resumed"
        wait_until(lambda: state_of(spool_dir, waiting) == "done", 30, "claimed after resume")
        assert "was not paused" in spool_cli(spool_dir, "resume", "sh").stdout
    finally:
        stop(worker)
    events = json.loads(spool_cli(spool_dir, "events", "--json", "--job", "sh").stdout)
    kinds = [(e["event"], e["id"]) for e in events if e["event"] in ("pause", "resume")]
    assert kinds == [("pause", "job.sh"), ("resume", "job.sh")]


def test_pause_a_host_and_everything(spool_dir, tmp_path):
    sp = Spool(spool_dir, host="cli")
    gate = tmp_path / "gate"
    on_a = sp.submit("sh", gated(gate))
    worker_a = start_cli(spool_dir, "worker", "--capacity", "2", host="a")
    worker_b = None
    try:
        wait_until(lambda: state_of(spool_dir, on_a) == "processing", 30, "job runs on a")
        assert spool_cli(spool_dir, "pause", "--host", "a").stdout.strip() == "host.a paused"
        second = sp.submit("noop")
        worker_b = start_cli(spool_dir, "worker", "--capacity", "2", host="b")
        wait_until(lambda: state_of(spool_dir, second) == "done", 30, "b takes the new job")
        assert read_job(spool_dir, "done", second)["history"][-1]["host"] == "b"
        assert state_of(spool_dir, on_a) == "processing"
        gate.touch()
        wait_until(lambda: state_of(spool_dir, on_a) == "done", 30, "a's job goes on")
        assert read_job(spool_dir, "done", on_a)["history"][-1]["host"] == "a"
        assert spool_cli(spool_dir, "pause", "--all").returncode == 0
        held_back = sp.submit("noop")
        doc = json.loads(spool_cli(spool_dir, "status", "--json").stdout)
        assert doc["paused"] == ["all", "host.a"]
        assert "paused     all, host.a" in spool_cli(spool_dir, "status").stdout
        assert spool_cli(spool_dir, "resume", "--host", "a").returncode == 0
        stop(worker_b)
        worker_b = None
        probe = sp.submit("sh", {"script": f"touch {tmp_path / 'ran'}"}, priority=9)
        assert sp.explain(probe)["gates"][2]["verdict"] == "blocked"  # pause: all
        assert state_of(spool_dir, held_back) == "pending"
        assert spool_cli(spool_dir, "resume", "--all").returncode == 0
        wait_until(lambda: state_of(spool_dir, probe) == "done", 30, "a claims after resume")
        assert read_job(spool_dir, "done", held_back)["history"][-1]["host"] == "a"
    finally:
        stop(worker_a, *([worker_b] if worker_b else []))


def test_paused_host_burst_worker_exits_and_leaves_the_work(spool_dir):
    job_id = Spool(spool_dir, host="cli").submit("noop")
    spool_cli(spool_dir, "pause", "--host", "a")
    assert start_cli(spool_dir, "worker", "--burst", host="a").wait(60) == 0
    assert state_of(spool_dir, job_id) == "pending"
    assert start_cli(spool_dir, "worker", "--burst", host="b").wait(60) == 0
    assert state_of(spool_dir, job_id) == "done"


def test_pause_names_are_checked(spool_dir):
    for args, word in ((["nosuch"], "'nosuch'"), (["--schedule", "nosuch"], "'nosuch'"),
                       (["--host", "a/b"], "'a/b'"), ([], "nothing named")):
        for verb in ("pause", "resume"):
            result = spool_cli(spool_dir, verb, *args)
            assert result.returncode == 2, (verb, args, result.stderr)
            assert result.stderr.splitlines()[-1].startswith("Error:") and \
                word in result.stderr.splitlines()[-1]
    assert os.listdir(spool_dir / "paused") == []


def test_a_paused_schedule_skips_its_fires_and_does_not_catch_them_up(spool_dir, caplog):
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    sp = Spool(spool_dir, host="a", clock=lambda: t0)
    cron = Cron(sp)
    cron.step(t0)
    assert cron.step(t0 + timedelta(seconds=1)) == ["tick@20260101T000001Z"]
    sp.pause(schedule="tick")
    with caplog.at_level("INFO", logger="spool.cron"):
        assert cron.step(t0 + timedelta(seconds=3)) == []
    assert "tick@20260101T000003Z (fire time 2026-01-01T00:00:03Z)" in caplog.text
    assert "paused" in caplog.text
    marker = json.loads((spool_dir / "cron" / "tick@20260101T000003Z").read_text())
    assert marker["skipped"] == "schedule paused"
    late = Cron(Spool(spool_dir, host="b", clock=lambda: t0))  # a daemon lagging behind
    late.checked["tick"] = "2026-01-01T00:00:02Z"
    assert late.step(t0 + timedelta(seconds=3)) == []  # the skip holds for every daemon
    sp.resume(schedule=["tick"])
    assert cron.step(t0 + timedelta(seconds=5)) == ["tick@20260101T000005Z"]  # no catch-up
    assert sorted(state_files(spool_dir)["pending"]) == ["tick@20260101T000001Z",
                                                        "tick@20260101T000005Z"]


def test_cron_daemon_skips_while_paused_and_fires_after_resume(spool_dir, tmp_path):
    spool_cli(spool_dir, "pause", "--schedule", "tick")
    log = tmp_path / "cron.log"
    cron = start_cli(spool_dir, "cron", host="a", log=log)
    try:
        wait_until(lambda: any("@" in n for n in os.listdir(spool_dir / "cron")), 30,
                   "a skipped fire's marker")
        assert state_files(spool_dir)["pending"] == []
        assert spool_cli(spool_dir, "resume", "--schedule", "tick").returncode == 0
        wait_until(lambda: state_files(spool_dir)["pending"], 30, "a fire after resume")
    finally:
        stop(cron)
    skipped = [n for n in os.listdir(spool_dir / "cron") if "@" in n and
               json.loads((spool_dir / "cron" / n).read_text()).get("skipped")]
    assert skipped and not set(skipped) & set(state_files(spool_dir)["pending"])
    assert "schedule tick is paused" in log.read_text()


# -- hold and release ------------------------------------------------------------------------


def test_hold_and_release_keep_priority_due_time_and_unique_key(spool_dir):
    sp = Spool(spool_dir, host="cli")
    job_id = sp.submit("noop", priority=2, delay=3600, unique="k")
    [name] = os.listdir(spool_dir / "pending")
    result = spool_cli(spool_dir, "hold", job_id)
    assert result.returncode == 0 and result.stdout.strip() == f"{job_id} held"
    assert os.listdir(spool_dir / "pending") == []
    assert os.listdir(spool_dir / "held") == [f"{job_id}.json"]
    taken = spool_cli(spool_dir, "submit", "noop", "--unique", "k")
    assert taken.returncode == 4 and "(held)" in taken.stderr
    shown = json.loads(spool_cli(spool_dir, "show", job_id, "--json").stdout)
    assert shown["state"] == "held" and shown["path"] == str(spool_dir / "held" / f"{job_id}.json")
    assert [j["id"] for j in json.loads(spool_cli(spool_dir, "ls", "held", "--json").stdout)] \
        == [job_id]
    row = next(ln for ln in spool_cli(spool_dir, "ls", "all").stdout.splitlines()
               if ln.startswith(job_id))
    assert row.split()[1] == "held" and row.split()[-1] == "held"
    assert json.loads(spool_cli(spool_dir, "status", "--json").stdout)["held"] == 1
    doc = json.loads(spool_cli(spool_dir, "explain", job_id, "--json").stdout)
    assert doc["state"] == "held" and doc["gates"][-1]["verdict"] == "blocked"
    assert spool_cli(spool_dir, "wait", job_id, "--timeout", "0.2").returncode == 124
    again = spool_cli(spool_dir, "hold", job_id)
    assert again.returncode == 4 and "held" in again.stderr.splitlines()[-1]
    result = spool_cli(spool_dir, "release", job_id)
    assert result.returncode == 0 and result.stdout.strip() == f"{job_id} released"
    assert os.listdir(spool_dir / "pending") == [name]  # same priority, due time and id
    assert os.listdir(spool_dir / "held") == []
    again = spool_cli(spool_dir, "release", job_id)
    assert again.returncode == 4 and "is pending, not held" in again.stderr.splitlines()[-1]
    events = [e["event"] for e in json.loads(spool_cli(spool_dir, "events", "--json",
                                                       "--id", job_id).stdout)]
    assert events == ["submit", "hold", "release"]


def test_workers_never_claim_held_jobs_and_cancel_ends_them(spool_dir):
    sp = Spool(spool_dir, host="cli")
    held = sp.submit("noop", unique="k")
    other = sp.submit("noop")
    sp.hold(held)
    assert start_cli(spool_dir, "worker", "--burst", host="a").wait(60) == 0
    assert state_of(spool_dir, other) == "done" and state_of(spool_dir, held) == "held"
    result = spool_cli(spool_dir, "cancel", held)
    assert result.returncode == 0 and result.stdout.strip() == f"{held} cancelled"
    body = read_job(spool_dir, "done", held)
    assert body["outcome"] == "cancelled" and os.listdir(spool_dir / "held") == []
    assert spool_cli(spool_dir, "submit", "noop", "--unique", "k").returncode == 0  # released
    assert spool_cli(spool_dir, "wait", held).returncode == 5


def test_hold_of_a_running_or_finished_job_is_a_conflict(spool_dir, tmp_path):
    sp = Spool(spool_dir, host="cli")
    gate = tmp_path / "gate"
    running = sp.submit("sh", gated(gate))
    worker = start_cli(spool_dir, "worker", host="a")
    try:
        wait_until(lambda: state_of(spool_dir, running) == "processing", 30, "job runs")
        result = spool_cli(spool_dir, "hold", running)
        assert result.returncode == 4
        assert "running on host a" in result.stderr.splitlines()[-1]
        gate.touch()
        wait_until(lambda: state_of(spool_dir, running) == "done", 30, "job finishes")
    finally:
        stop(worker)
    result = spool_cli(spool_dir, "hold", running)
    assert result.returncode == 4 and "finished (done, completed)" in result.stderr
    assert spool_cli(spool_dir, "hold", "nosuch").returncode == 3
    assert spool_cli(spool_dir, "release", "nosuch").returncode == 3
    assert spool_cli(spool_dir, "hold", "../x").returncode == 2


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_hold_cut_short_is_finished_by_recovery(spool_dir):
    """A hold whose process died after taking the pending file into tmp/ (the state a SIGKILL
    between the arbiter rename and the move leaves) ends in held/, due time kept."""
    sp = Spool(spool_dir, host="a")
    job_id = sp.submit("noop", priority=1, delay=600)
    [name] = os.listdir(spool_dir / "pending")
    before = (spool_dir / "pending" / name).read_bytes()
    os.rename(spool_dir / "pending" / name,
              spool_dir / "tmp" / f"hold,a,{dead_pid()},0abc,{job_id}.0")
    assert start_cli(spool_dir, "worker", "--burst", host="a").wait(60) == 0  # recovers at start
    assert os.listdir(spool_dir / "held") == [f"{job_id}.json"]
    assert json.loads((spool_dir / "held" / f"{job_id}.json").read_bytes()) == json.loads(before)
    assert [n for n in os.listdir(spool_dir / "tmp") if job_id in n] == []
    sp.release(job_id)
    assert os.listdir(spool_dir / "pending") == [name]


def test_release_cut_short_returns_to_pending_with_its_due_time(spool_dir):
    sp = Spool(spool_dir, host="a")
    job_id = sp.submit("noop", priority=1, delay=600)
    [name] = os.listdir(spool_dir / "pending")
    sp.hold(job_id)
    os.rename(spool_dir / "held" / f"{job_id}.json",
              spool_dir / "tmp" / f"release,a,{dead_pid()},0abc,{job_id}.0")
    assert recover_holds(sp.store, datetime.now(UTC)) == 1
    assert os.listdir(spool_dir / "pending") == [name] and os.listdir(spool_dir / "held") == []


def test_hold_killed_at_any_point_leaves_the_job_in_exactly_one_place(spool_dir):
    """SIGKILL a `spool hold` process at random moments; after recovery the job is pending or
    held, once, with its pending name or held name intact."""
    sp = Spool(spool_dir, host="a")
    ids = [sp.submit("noop", delay=600) for _ in range(8)]
    for index, job_id in enumerate(ids):
        proc = subprocess.Popen([sys.executable, "-m", "spool.cli", "--spool", str(spool_dir),
                                 "--host", "a", "hold", job_id],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=0.05 + 0.03 * index)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    recover_holds(sp.store, datetime.now(UTC))
    files = state_files(spool_dir)
    held = [n[:-5] for n in os.listdir(spool_dir / "held")]
    assert sorted(files["pending"] + held) == sorted(ids)
    assert [n for n in os.listdir(spool_dir / "tmp") if n.startswith("hold,")] == []


# -- run a schedule now ----------------------------------------------------------------------


def test_fire_enqueues_a_manual_fire_under_overlap(spool_dir):
    result = spool_cli(spool_dir, "fire", "slow")
    assert result.returncode == 0
    first = result.stdout.strip()
    assert first.startswith("slow@manual.") and len(first) == len("slow@manual.20260101T000000Z")
    job = Spool(spool_dir, host="x").get(first)
    assert job.job == "sh" and job.schedule == "slow" and job.meta["manual"] is True
    assert job.meta["schedule"] == "slow" and "last_completed_at" in job.meta
    assert abs((parse_time(job.meta["fire_time"]) - job.created_at).total_seconds()) < 1
    skipped = spool_cli(spool_dir, "fire", "slow")
    assert skipped.returncode == 4 and first in skipped.stderr.splitlines()[-1]
    assert spool_cli(spool_dir, "fire", "nosuch").returncode == 3
    t1 = datetime(2030, 1, 1, tzinfo=UTC)
    forced = Spool(spool_dir, host="x", clock=lambda: t1).fire("slow", force=True)
    assert forced == "slow@manual.20300101T000000Z"
    assert sorted(state_files(spool_dir)["pending"]) == sorted([first, forced])
    events = json.loads(spool_cli(spool_dir, "events", "--json", "--id", forced).stdout)
    assert [e["event"] for e in events] == ["submit", "fire"] or \
        sorted(e["event"] for e in events) == ["fire", "submit"]


def test_fire_of_a_paused_schedule_needs_force(spool_dir):
    spool_cli(spool_dir, "pause", "--schedule", "tick")
    shown = spool_cli(spool_dir, "status").stdout.splitlines()
    assert any(ln.startswith("schedule   tick") and ln.endswith("(paused)") for ln in shown)
    assert not any(ln.startswith("schedule   slow") and "paused" in ln for ln in shown)
    refused = spool_cli(spool_dir, "fire", "tick")
    assert refused.returncode == 4 and "paused" in refused.stderr.splitlines()[-1]
    assert state_files(spool_dir)["pending"] == []
    forced = spool_cli(spool_dir, "fire", "tick", "--force")
    assert forced.returncode == 0 and forced.stdout.startswith("tick@manual.")


def test_store_moves_and_cli_verbs_agree():
    assert MOVES["hold"] == ("pending", "held") and MOVES["release"] == ("held", "pending")
    assert {"hold", "release", "pause", "resume", "fire"} <= set(main.commands)
    assert pending_name(5, datetime(2026, 1, 1, tzinfo=UTC), "x").startswith("5-")


def test_a_spool_made_before_held_and_paused_works_and_doctor_passes(spool_dir):
    for sub in ("held", "paused"):
        (spool_dir / sub).rmdir()
    sp = Spool(spool_dir, host="a")
    job_id = sp.submit("noop")
    assert sp.paused() == [] and sp.status()["held"] == 0
    layout = [ln for ln in spool_cli(spool_dir, "doctor").stdout.splitlines() if "layout" in ln]
    assert layout and all(ln.startswith("OK") for ln in layout)
    assert start_cli(spool_dir, "worker", "--burst", host="a").wait(60) == 0
    assert state_of(spool_dir, job_id) == "done"
    second = sp.submit("noop")
    assert spool_cli(spool_dir, "hold", second).returncode == 0
    assert spool_cli(spool_dir, "pause", "noop").returncode == 0
    assert (spool_dir / "held" / f"{second}.json").exists()
    assert (spool_dir / "paused" / "job.noop").exists()


def test_a_planted_link_in_paused_is_refused_not_followed(spool_dir, tmp_path):
    outside = tmp_path / "outside"
    os.symlink(outside, spool_dir / "paused" / "job.noop")
    result = spool_cli(spool_dir, "pause", "noop")
    assert result.returncode == 1 and "job.noop" in result.stderr.splitlines()[-1]
    assert not outside.exists()


def test_api_pause_takes_one_name_or_several(spool_dir):
    sp = Spool(spool_dir, host="a")
    assert sp.pause("noop", ["echo"], host="b", schedule=["tick", "slow"]) == {
        "job.noop": True, "job.echo": True, "host.b": True, "schedule.tick": True,
        "schedule.slow": True}
    assert sp.pause("noop") == {"job.noop": False}
    assert sp.paused() == ["host.b", "job.echo", "job.noop", "schedule.slow", "schedule.tick"]
    assert sp.resume("noop", "echo", host=["b"], schedule="tick", all=True) == {
        "job.noop": True, "job.echo": True, "host.b": True, "schedule.tick": True,
        "all": False}
    assert sp.paused() == ["schedule.slow"]


def test_hold_racing_two_workers_loses_or_wins_each_job_cleanly(spool_dir):
    """`spool hold` of every job while workers on two hosts claim them: each job is either
    held (never run) or ran, exactly once, and is in exactly one place."""
    sp = Spool(spool_dir, host="cli")
    ids = sp.submit_many([{"job": "noop"} for _ in range(60)])
    workers = [start_cli(spool_dir, "worker", "--capacity", "2", host=h) for h in ("a", "b")]
    try:
        result = spool_cli(spool_dir, "hold", *ids)
        assert result.returncode in (0, 4)
        held = {n[:-5] for n in os.listdir(spool_dir / "held")}
        conflicts = [ln for ln in result.stderr.splitlines() if ln.startswith("Error:")]
        assert len(held) + len(conflicts) == len(ids)
        assert all("not pending" in ln or "kept moving" in ln for ln in conflicts)
        wait_until(lambda: len(state_files(spool_dir)["done"]) == len(ids) - len(held), 60,
                   "every job that was not held to run")
        assert spool_cli(spool_dir, "release", *sorted(held)).returncode == 0
        wait_until(lambda: len(state_files(spool_dir)["done"]) == len(ids), 60, "the rest")
    finally:
        stop(*workers)
    for job_id in ids:
        body = read_job(spool_dir, "done", job_id)
        assert body["outcome"] == "completed" and len(body["history"]) == 1
    assert os.listdir(spool_dir / "held") == [] and state_files(spool_dir)["pending"] == []
