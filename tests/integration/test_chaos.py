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
    assert figures["jobs"]["accepted"] > 100 and figures["jobs"]["cron_fires"] > 10
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
