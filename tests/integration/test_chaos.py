"""Chaos: 3 hosts x 2 workers, 2 cron daemons, a reaper per host and 2 submitters (API, CLI and
hand drops) share one spool while every kind of process is SIGKILLed (and restarted) or frozen
(SIGSTOP/SIGCONT, sometimes past the lease) at random; then the cluster drains and the harness
(tests/chaos_harness.py) audits it: nothing lost, nothing run twice at once unless a worker was
frozen past its lease, no host over its capacity, exactly one job per cron fire.

`SPOOL_CHAOS_SECONDS` (default 75) sets the length of the chaos, `SPOOL_CHAOS_SEED` the seed.
"""

from __future__ import annotations

import os

import pytest
from chaos_harness import Settings, render, run

CHAOS_SECONDS = float(os.environ.get("SPOOL_CHAOS_SECONDS", "75"))
SEED = int(os.environ.get("SPOOL_CHAOS_SEED", "20261122"))


@pytest.mark.slow
def test_cluster_survives_random_kills_and_freezes(tmp_path):
    report = run(Settings(minutes=CHAOS_SECONDS / 60, seed=SEED, work=tmp_path,
                          drain_timeout=150.0))
    print("\n" + render(report))
    checks = {check["name"]: check for check in report["checks"]}
    figures = report["figures"]

    def verdict(name: str) -> str:
        check = checks[name]
        return f"{check['summary']}; evidence: {check['evidence'][:3]} (seed {SEED})"

    # the chaos really happened: kills and freezes of every kind of process, jobs of every kind
    assert set(figures["kills"]) | set(figures["freezes"]) == {"worker", "cron", "reaper",
                                                                "submitter"}
    assert figures["jobs"]["accepted"] > 2 * CHAOS_SECONDS  # ~4.5 a second are submitted
    assert figures["jobs"]["cron_fires"] > CHAOS_SECONDS / 4  # one fire every 2 s
    assert {"api", "cli"} <= set(figures["jobs"]["accepted_by_how"])

    # the checks of the first chaos test: no job in two states, every submitted job and every
    # cron fire finished as expected (only jobs meant to fail are in dead/), no job ran more
    # often than its attempts
    assert checks["drained"]["ok"], verdict("drained")
    assert checks["one_state_per_job"]["ok"], verdict("one_state_per_job")
    assert checks["accepted_jobs_terminal_once"]["ok"], verdict("accepted_jobs_terminal_once")
    assert checks["runs_within_attempts"]["ok"], verdict("runs_within_attempts")
    # and the harness's
    assert checks["job_files_parse"]["ok"], verdict("job_files_parse")
    assert checks["no_dead_job_completed"]["ok"], verdict("no_dead_job_completed")
    assert checks["host_capacity"]["ok"], verdict("host_capacity")
    assert checks["overlaps_explained"]["ok"], verdict("overlaps_explained")
    assert checks["one_job_per_cron_fire"]["ok"], verdict("one_job_per_cron_fire")
    assert checks["tmp_holds_no_job_body"]["ok"], verdict("tmp_holds_no_job_body")
    assert checks["daemons_behave"]["ok"], verdict("daemons_behave")
    assert report["ok"]


# -- the audit itself can fail: synthetic runs, no processes ---------------------------------


def _context(runs, freezes=(), bodies=None, capacity=2):
    from collections import defaultdict

    from chaos_harness import Context, RunRecord

    by_job = defaultdict(list)
    for each in runs:
        by_job[each.job].append(each)
    record = RunRecord(settings={}, spool="", capacity={"a": capacity, "b": capacity,
                                                        "c": capacity},
                       times={"t0": 0.0}, drained=True, freezes=[], kills=[], exits=[],
                       not_stopped=[], worker_pids={"100": "a", "200": "b"}, deaths=[],
                       alive_after=[], cleanup=[], sample_problems=[], sample_reads=0)
    return Context(Settings(minutes=1, lease=3.0), 0.0, list(runs), by_job, {}, bodies or {},
                   [], {}, [], record, list(freezes), [], {})


def _run(job, start, end, *, host="a", worker=100, attempt=1, kind="end", slots=1):
    from chaos_harness import Execution

    return Execution(job, "chaos1", attempt, host, 1000 + int(start * 10), worker, start, end,
                     kind, True, slots)


def test_audit_finds_a_host_over_capacity():
    from chaos_harness import check_capacity

    over = _context([_run("x", 0, 2), _run("y", 1, 3, slots=2)])
    assert not check_capacity(over).ok
    assert check_capacity(over).figures["hosts"]["a"]["max_slots_hard"] == 3
    # a killed task's end is known to the watcher's latency only: within the slack, no finding
    bounded = _context([_run("x", 0, 1.1, kind="killed"), _run("y", 1.0, 3, slots=1),
                        _run("z", 1.05, 2)])
    assert check_capacity(bounded).ok
    assert check_capacity(_context([_run("x", 0, 1), _run("y", 1, 2, slots=2)])).ok


def test_audit_explains_overlaps_only_by_a_freeze_past_the_lease():
    from chaos_harness import Freeze, check_overlaps

    runs = [_run("x", 0, 6, worker=100), _run("x", 4, 5, host="b", worker=200, attempt=2)]
    assert not check_overlaps(_context(runs)).ok
    long = Freeze("worker-a-0", "worker", "a", 100, start=0.5, end=5.5)
    assert check_overlaps(_context(runs, [long])).ok
    short = Freeze("worker-a-0", "worker", "a", 100, start=0.5, end=1.0)
    assert not check_overlaps(_context(runs, [short])).ok
    other = Freeze("worker-b-0", "worker", "b", 200, start=0.5, end=5.5)
    assert not check_overlaps(_context(runs, [other])).ok


def test_audit_finds_more_runs_than_attempts():
    from chaos_harness import check_runs_vs_attempts

    body = {"id": "x", "outcome": "completed",
            "history": [{"attempt": 1, "outcome": "completed"}]}
    twice = _context([_run("x", 0, 1, kind="killed"), _run("x", 1.2, 2)], bodies={"x": body})
    assert not check_runs_vs_attempts(twice).ok
    once = _context([_run("x", 1.2, 2)], bodies={"x": body})
    assert check_runs_vs_attempts(once).ok
    never_finished = _context([_run("x", 0, 1, kind="killed")], bodies={"x": body})
    assert not check_runs_vs_attempts(never_finished).ok
