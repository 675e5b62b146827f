"""Liveness across two NFS mounts (DESIGN §3 rules 3 and 8, §4 Liveness, §6): host b's reaper
takes back the jobs of a dead or stalled worker of host a, never a live one; a stalled worker
that wakes up finishes nothing and stops its stale attempt."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from spool.layout import parse_pending_name

from .cluster import wait_gone

pytestmark = pytest.mark.nfs
LEASE = 4.0


def _outcomes(body: dict) -> list[tuple[int, str]]:
    return [(entry["attempt"], entry["outcome"]) for entry in body["history"]]


def _finishes(cluster, job_id: str) -> list[str]:
    """The journals (hosts) that recorded a finish of `job_id`: done/ID.json written once."""
    return [e["journal"] for e in cluster.events() if e.get("event") == "finish"
            and e.get("id") == job_id]


def test_sigkilled_workers_jobs_return_through_the_other_hosts_reaper(cluster):
    cluster.create()
    cluster.start("b", "reap")
    worker_a = cluster.start("a", "worker", "--capacity", "2")
    sp = cluster.api("a")
    ids = [sp.submit("stall", {"tag": cluster.tag(f"kill{n}"), "seconds": "8"})
           for n in range(2)]
    cluster.wait(lambda: len([r for r in cluster.starts() if r.job in ids]) == 2, 30,
                 "both jobs to start on host a")
    cluster.kill(worker_a)
    cluster.start("b", "worker", "--capacity", "2")
    cluster.wait(lambda: set(ids) <= cluster.done_ids(), 45,
                 "both jobs to be reaped by b and completed on b")
    cluster.stop_all()

    for job_id in ids:
        body = cluster.job("done", job_id)
        assert body["outcome"] == "completed"
        # each attempt's entry names the host it ran on, the reaped one too
        assert [(h["attempt"], h["host"], h["outcome"]) for h in body["history"]] == [
            (1, "a", "lost"), (2, "b", "completed")]
        assert [(r.attempt, r.host) for r in cluster.starts(job_id)] == [(1, "a"), (2, "b")]
        assert _finishes(cluster, job_id) == ["b"]
    assert cluster.states()["processing"] == []


def test_stalled_worker_finishes_nothing_and_stops_its_reaped_attempt(cluster):
    cluster.create()
    cluster.start("b", "reap")
    worker_a = cluster.start("a", "worker", "--capacity", "1")
    job_id = cluster.api("a").submit("stall", {"tag": cluster.tag("stop"), "seconds": "60"})
    [first] = cluster.wait(lambda: cluster.starts(job_id), 30, "the job to start on host a")
    assert (first.host, first.attempt) == ("a", 1)
    worker_a.send_signal(signal.SIGSTOP)  # its task runs on, but no heartbeat any more
    cluster.start("b", "worker", "--capacity", "1")
    done = cluster.path("a") / "done" / f"{job_id}.json"
    cluster.wait(lambda: done.exists() and json.loads(done.read_text()).get("outcome"), 45,
                 "b to reap the job and run it again")
    finished = done.read_bytes()
    worker_a.send_signal(signal.SIGCONT)

    problems = []
    if not wait_gone(first.pid, 5):  # the worker must stop the reaped attempt at once
        problems.append(f"attempt 1 (task pid {first.pid}) still runs 5 s after SIGCONT: "
                        "host a's worker did not stop its reaped attempt (DESIGN §4)")
        os.killpg(first.pid, signal.SIGKILL)  # rather than wait for its natural end
    if worker_a.poll() is not None:
        problems.append(f"host a's worker exited ({worker_a.returncode}) after SIGSTOP/SIGCONT")
    # a worker that stops settles every attempt it ran: any second finish happens before exit
    if cluster.stop(worker_a) != 0:
        problems.append(f"host a's worker exited {worker_a.returncode} on SIGTERM")
    cluster.stop_all()

    if done.read_bytes() != finished:
        problems.append("done/ID.json was rewritten after b finished the job")
    finishes = _finishes(cluster, job_id)
    if finishes != ["b"]:
        problems.append(f"finish events of the job (by journal): {finishes}, expected ['b']")
    body = json.loads(finished)
    if _outcomes(body) != [(1, "lost"), (2, "completed")]:
        problems.append(f"history {_outcomes(body)}")
    ends = [(r.attempt, r.host) for r in cluster.runs() if r.what == "end" and r.job == job_id]
    if ends != [(2, "b")]:
        problems.append(f"attempts that ran to their end: {ends}, expected [(2, 'b')]")
    states = cluster.states()
    if job_id in states["pending"] + states["processing"] + states["dead"]:
        problems.append(f"the job is also elsewhere: {states}")
    assert not problems, "\n".join(problems)


def test_job_that_waited_past_two_leases_is_not_reaped_right_after_its_claim(cluster):
    cluster.create()
    job_id = cluster.api("a").submit("mark", {"tag": cluster.tag("old"), "seconds": "3"})
    [name] = [n for n in os.listdir(cluster.path("a") / "pending") if job_id in n]
    pending = cluster.path("a") / "pending" / name
    waited = time.time() - 10 * LEASE
    os.utime(pending, (waited, waited))  # as if it had waited in pending/ for 40 s
    assert cluster.server_time("a") - pending.stat().st_mtime > 2 * LEASE
    worker_a = cluster.start("a", "worker", "--capacity", "1")
    cluster.wait(lambda: cluster.starts(job_id), 30, "the job to start on host a")
    worker_a.send_signal(signal.SIGSTOP)  # from here no heartbeat can refresh the file
    processing = cluster.path("b") / "processing" / "a" / f"{job_id}.1.json"
    try:
        # what b sees of the claimed file: its age by the file server's clock
        age = cluster.server_time("b") - processing.stat().st_mtime
        reap = cluster.cli("b", "reap", "--once")
    finally:
        worker_a.send_signal(signal.SIGCONT)
    assert reap.returncode == 0, reap.stderr
    assert "reaped" not in reap.stdout, (
        f"b's reaper took a job claimed a moment ago (its processing file was {age:.0f}s old "
        f"by the server's clock; DESIGN §3 rule 8): {reap.stdout.strip()}")
    cluster.wait(lambda: job_id in cluster.done_ids(), 30, "the job to complete")
    cluster.stop_all()
    body = cluster.job("done", job_id)
    assert _outcomes(body) == [(1, "completed")] and body["history"][0]["host"] == "a"
    assert len(cluster.starts(job_id)) == 1
    assert age < LEASE, f"the claimed file was {age:.1f}s old: its mtime was not made fresh"


BURST = 1200


def test_burst_of_drops_does_not_starve_the_heartbeat_of_a_running_job(cluster):
    cluster.create()
    reaper = cluster.start("b", "reap")
    cluster.start("a", "worker", "--capacity", "2")
    flag = cluster.work / "release"
    job_id = cluster.api("a").submit("gate", {"tag": cluster.tag("gate"), "flag": str(flag)})
    cluster.wait(lambda: cluster.starts(job_id), 30, "the long job to start on host a")
    pending = cluster.path("a") / "pending"
    body = {"job": "mark", "args": {"tag": cluster.tag("burst"), "seconds": "0"},
            "run_at": "2099-01-01T00:00:00Z"}
    started = time.monotonic()
    for n in range(BURST):
        (pending / f"{cluster.tag('burst')}-{n:04d}.json").write_text(json.dumps(body))
    written = time.monotonic() - started

    # meanwhile host b judges the job's heartbeat: its age by the file server's clock
    processing = cluster.path("b") / "processing" / "a" / f"{job_id}.1.json"
    ages = []
    deadline = time.monotonic() + 180
    try:
        while _drops(pending) and time.monotonic() < deadline:
            try:
                ages.append(cluster.server_time("b") - processing.stat().st_mtime)
            except FileNotFoundError:
                ages.append(float("inf"))  # gone: reaped
            time.sleep(0.25)  # sampling, not synchronisation
    finally:
        flag.touch()
    adopted_after = time.monotonic() - started
    assert not _drops(pending), f"drops still not adopted after {adopted_after:.0f}s"
    cluster.wait(lambda: job_id in cluster.done_ids(), 60, "the long job to complete")
    assert reaper.poll() is None
    cluster.stop_all()

    alive = [age for age in ages if age != float("inf")]
    print(f"\n{BURST} drops written in {written:.1f}s, adopted after {adopted_after:.1f}s; "
          f"heartbeat age seen from b: max {max(alive, default=0):.1f}s"
          f"{' before the file was reaped' if len(alive) < len(ages) else ''}")
    body = cluster.job("done", job_id)
    assert _outcomes(body) == [(1, "completed")], (
        f"the live job was reaped while host a adopted {BURST} drops (history "
        f"{_outcomes(body)}; heartbeat age seen from b reached {max(alive, default=0):.1f}s)")
    assert len(cluster.starts(job_id)) == 1
    assert max(ages, default=0) < LEASE, (
        f"heartbeat aged {max(alive, default=0):.1f}s, lease {LEASE}s")
    canonical = [n for n in os.listdir(pending) if parse_pending_name(n)]
    assert len(canonical) == BURST and cluster.states()["dead"] == []


def _drops(pending) -> list[str]:
    return [n for n in os.listdir(pending) if n[:1] != "." and not parse_pending_name(n)]
