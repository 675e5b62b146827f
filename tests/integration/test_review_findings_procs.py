"""Adversarial review: reproductions with real processes (each xfail until fixed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import make_spool, spool_cli, start_cli, wait_until


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


@pytest.mark.xfail(strict=True, reason="review finding 5: a drop with attempts=999999999 is "
                   "claimed as processing/<host>/ID.1000000000.json, a name parse_processing_name "
                   "refuses (> 9 digits): once its worker dies nothing recovers, lists or finds it")
def test_a_job_whose_worker_dies_is_recovered_whatever_its_attempts_field(tmp_path):
    root = make_spool(tmp_path / "spool")
    marker = tmp_path / "started"
    (root / "pending" / "far.json").write_text(json.dumps(
        {"job": "sleep", "args": {"seconds": 60, "marker": str(marker)},
         "attempts": 999999999}))
    worker = start_cli(root, "worker", host="h1", log=tmp_path / "worker.log")
    try:
        wait_until(marker.exists, 30, "the task to start")
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        stop(worker)
    reap = spool_cli(root, "reap", "--once", host="h1")
    assert reap.returncode == 0, reap.stderr
    shown = spool_cli(root, "show", "far", "--json")
    assert shown.returncode == 0, f"job lost: {shown.stderr} {list((root / 'processing' / 'h1').iterdir())}"
    assert json.loads(shown.stdout)["state"] in ("pending", "done", "dead")


@pytest.mark.xfail(strict=True, reason="review finding 7: open_append refuses symlinks and "
                   "special files but not a hard link: a group member who plants "
                   "logs/<id>.log as a hard link makes the worker append (and fchmod, when "
                   "empty) a file outside the spool")
def test_a_log_planted_as_a_hard_link_is_never_written(tmp_path):
    root = make_spool(tmp_path / "spool")
    victim = tmp_path / "outside.txt"
    victim.write_text("precious\n")
    os.link(victim, root / "logs" / "j1.log")  # a group member can predict or choose the id
    sub = spool_cli(root, "submit", "echo", '{"message": "written by the worker"}', "--id", "j1")
    assert sub.returncode == 0, sub.stderr
    run = spool_cli(root, "worker", "--burst", host="h1")
    assert run.returncode == 0, run.stderr
    assert victim.read_text() == "precious\n"
