"""Cron daemons on several hosts enqueue each fire once; the reaper returns dead workers' jobs
and never a live one."""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime, timedelta

from conftest import CONFIG, make_spool, read_job, spool_cli, start_cli, state_files, wait_until
from spool import Spool
from spool.cron import Cron
from spool.reaper import Reaper
from spool.timeutil import UTC

EVERY = CONFIG + """
[schedules.tick]
every = "1s"
job = "noop"
args = {n = 1}
overlap = "allow"
"""


def test_three_cron_daemons_enqueue_each_fire_exactly_once(tmp_path):
    spool_dir = make_spool(tmp_path / "s", EVERY)
    daemons = [start_cli(spool_dir, "cron", host=h) for h in ("a", "b", "c")]
    try:
        wait_until(lambda: len([n for n in os.listdir(spool_dir / "cron") if "@" in n]) >= 5,
                   30, "five fires")
    finally:
        for daemon in daemons:
            daemon.send_signal(signal.SIGTERM)
        assert [d.wait(30) for d in daemons] == [0, 0, 0]
    fires = sorted(n for n in os.listdir(spool_dir / "cron") if "@" in n)
    pending = state_files(spool_dir)["pending"]
    assert sorted(pending) == fires  # one job per fire, no fire twice
    job = Spool(spool_dir, host="x").get(fires[0])
    assert job.meta["schedule"] == "tick" and job.meta["fire_time"]
    assert "last_completed_at" in job.meta and job.args == {"n": 1}


def test_fire_already_run_and_purged_is_not_enqueued_again(tmp_path):
    spool_dir = make_spool(tmp_path / "s", EVERY)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    sp = Spool(spool_dir, host="a", clock=lambda: t0)
    cron = Cron(sp)
    cron.step(t0)
    [first] = cron.step(t0 + timedelta(seconds=1))
    sp.cancel(first)
    sp.purge("done")
    late = Cron(Spool(spool_dir, host="b", clock=lambda: t0))  # a daemon lagging behind
    late.checked["tick"] = "2025-12-31T23:59:59Z"
    assert first not in late.step(t0 + timedelta(seconds=1))
    assert state_files(spool_dir)["pending"] == []


def test_overlap_skip_and_last_completed_at(tmp_path):
    spool_dir = make_spool(tmp_path / "s", EVERY.replace('"allow"', '"skip"'))
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    sp = Spool(spool_dir, host="a", clock=lambda: t0)
    cron = Cron(sp)
    cron.step(t0)
    [first] = cron.step(t0 + timedelta(seconds=1))
    assert cron.step(t0 + timedelta(seconds=2)) == []  # first is still pending: skipped
    run_burst(spool_dir)
    completed_at = read_job(spool_dir, "done", first)["finished_at"]
    [third] = cron.step(t0 + timedelta(seconds=3))
    assert Spool(spool_dir, host="x").get(third).meta["last_completed_at"] == completed_at


def run_burst(spool_dir):
    proc = start_cli(spool_dir, "worker", "--burst", "--capacity", "2")
    assert proc.wait(60) == 0


def test_after_schedule_chains_on_completion(tmp_path):
    spool_dir = make_spool(tmp_path / "s", EVERY + """
[schedules.then]
after = "tick"
job = "echo"
args = {message = "after tick"}
""")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    sp = Spool(spool_dir, host="a", clock=lambda: t0)
    cron = Cron(sp)
    cron.step(t0)
    [first] = cron.step(t0 + timedelta(seconds=1))
    run_burst(spool_dir)
    chained = cron.step(datetime.now(UTC))
    assert f"then@after.{first}" in chained
    again = Cron(Spool(spool_dir, host="b"))  # another daemon, same completed upstream
    again.checked["then"] = "2000-01-01T00:00:00Z"
    assert all(not c.startswith("then@") for c in again.step(datetime.now(UTC)))


def test_catchup_all_with_injected_clock(tmp_path):
    spool_dir = make_spool(tmp_path / "s", EVERY.replace("args", 'catchup = "all"\nargs'))
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    cron = Cron(Spool(spool_dir, host="a", clock=lambda: t0))
    cron.step(t0)
    assert len(cron.step(t0 + timedelta(seconds=10))) == 10


def test_reaper_returns_a_killed_workers_job_from_another_host(spool_dir, tmp_path):
    marker = tmp_path / "task"
    job_id = Spool(spool_dir, host="s").submit("sh", {"script": f"echo $$ > {marker}; sleep 300"})
    worker = start_cli(spool_dir, "worker", "--capacity", "1", host="dying")
    wait_until(marker.exists, 30, "task start")
    worker.kill()
    worker.wait()
    os.kill(int(marker.read_text()), signal.SIGKILL)
    reaper = Reaper(Spool(spool_dir, host="survivor"))
    assert reaper.step(datetime.now(UTC)) == []  # first look: only observed
    wait_until(lambda: reaper.step(datetime.now(UTC)), 30, "reap after the lease (3s)")
    job = Spool(spool_dir, host="x").get(job_id)
    assert job.state == "pending" and job.attempts == 1
    assert job.history[-1]["outcome"] == "lost"


def test_reaper_never_reaps_a_live_job_under_clock_skew(spool_dir, tmp_path):
    marker = tmp_path / "task"
    job_id = Spool(spool_dir, host="s").submit("sleep", {"seconds": 300, "marker": str(marker)})
    worker = start_cli(spool_dir, "worker", "--capacity", "1", host="alive")
    try:
        wait_until(marker.exists, 30, "task start")
        skewed = Reaper(Spool(spool_dir, host="skewed"))
        real = time.time()
        for offset in range(12):  # the reaper's clock runs 10 minutes ahead
            skewed.step(datetime.fromtimestamp(real + 600 + offset * 0.5, UTC)
                        + timedelta(seconds=time.time() - real))
            time.sleep(0.5)
        assert state_files(spool_dir)["processing"] == [job_id]
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)


def test_stopped_worker_does_not_resurrect_or_refinish_a_reaped_job(spool_dir, tmp_path):
    out = tmp_path / "runs.jsonl"
    job_id = Spool(spool_dir, host="s").submit("record", {"path": str(out), "seconds": 4})
    frozen = start_cli(spool_dir, "worker", "--capacity", "1", host="frozen")
    wait_until(lambda: state_files(spool_dir)["processing"], 30, "claim")
    time.sleep(0.2)
    frozen.send_signal(signal.SIGSTOP)
    try:
        reaper = Reaper(Spool(spool_dir, host="r"))
        wait_until(lambda: reaper.step(datetime.now(UTC)), 30, "reap of the frozen job")
        rescuer = start_cli(spool_dir, "worker", "--capacity", "1", host="rescuer")
        try:
            assert spool_cli(spool_dir, "wait", job_id, "--timeout", "60").returncode == 0
        finally:
            rescuer.send_signal(signal.SIGTERM)
            rescuer.wait(30)
    finally:
        frozen.send_signal(signal.SIGCONT)
    wait_until(lambda: len(out.read_text().splitlines()) >= 2 if out.exists() else False, 30,
               "the frozen attempt's task to end")
    time.sleep(1.5)  # let the woken worker take its turn at finishing (it must not)
    frozen.send_signal(signal.SIGTERM)
    frozen.wait(30)
    files = state_files(spool_dir)
    assert files["done"] == [job_id] and files["pending"] == [] and files["processing"] == []
    body = read_job(spool_dir, "done", job_id)
    assert [h["outcome"] for h in body["history"]] == ["lost", "completed"]
    assert body["history"][-1]["host"] == "rescuer"
