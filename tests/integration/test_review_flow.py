"""Review of flow control (DESIGN §12) from the CLI, with real processes: planted files must
not make spool touch anything outside the spool."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONFIG, make_spool, spool_cli


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return make_spool(tmp_path / "spool", CONFIG)


def test_resume_never_unlinks_through_a_link_planted_as_paused(spool_dir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "all").write_text("")
    (outside / "job.noop").write_text("")
    os.rmdir(spool_dir / "paused")
    os.symlink(outside, spool_dir / "paused")
    result = spool_cli(spool_dir, "resume", "--all")
    assert result.returncode != 0
    assert "paused" in result.stderr.splitlines()[-1] and "not a directory" in result.stderr
    assert spool_cli(spool_dir, "resume", "noop").returncode != 0
    assert sorted(os.listdir(outside)) == ["all", "job.noop"]
    # nor is what lies behind it obeyed: the link is not the spool's paused/
    assert "paused" not in spool_cli(spool_dir, "status").stdout
    spool_cli(spool_dir, "submit", "noop")
    assert spool_cli(spool_dir, "worker", "--burst").returncode == 0
    assert len(os.listdir(spool_dir / "done")) == 1


def places(spool_dir: Path, job_id: str) -> list[str]:
    """Every place a job's file stands, tmp/ holds included."""
    found = [state for state in ("held", "done", "dead")
             if (spool_dir / state / f"{job_id}.json").exists()]
    found += ["pending" for name in os.listdir(spool_dir / "pending")
              if name.endswith(f"-{job_id}.json")]
    found += ["tmp" for name in os.listdir(spool_dir / "tmp") if job_id in name]
    return found


def test_release_racing_cancel_and_sigkill_leaves_each_job_in_one_place(spool_dir):
    from datetime import datetime

    from spool import Spool
    from spool.recovery import recover_holds
    from spool.timeutil import UTC

    sp = Spool(spool_dir, host="a")
    ids = [sp.submit("noop", delay=600) for _ in range(12)]
    for job_id in ids:
        sp.hold(job_id)
    procs = []
    for index, job_id in enumerate(ids):
        for verb in ("release", "cancel"):
            procs.append((index, subprocess.Popen(
                [sys.executable, "-m", "spool.cli", "--spool", str(spool_dir), "--host", "a",
                 verb, job_id], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    for index, proc in procs:
        if index % 3 == 0:  # a third of them killed at some moment
            try:
                proc.wait(timeout=0.02 * index)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait()
    recover_holds(sp.store, datetime.now(UTC))
    for job_id in ids:
        where = places(spool_dir, job_id)
        assert len(where) == 1 and where[0] in ("held", "pending", "done"), (job_id, where)
