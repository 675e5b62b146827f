"""Adversarial review findings, with real processes: each reproduced a flaw before its fix."""

from __future__ import annotations

import json
import os
import subprocess


from conftest import make_spool, spool_cli


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def test_a_drop_whose_attempts_no_processing_name_can_carry_is_rejected(tmp_path):
    root = make_spool(tmp_path / "spool")
    (root / "pending" / "far.json").write_text(json.dumps(
        {"job": "sleep", "args": {"seconds": 60}, "attempts": 999999999}))
    burst = spool_cli(root, "worker", "--burst", host="h1")
    assert burst.returncode == 0, burst.stderr
    shown = json.loads(spool_cli(root, "show", "far", "--json").stdout)
    assert shown["state"] == "dead" and shown["outcome"] == "invalid"
    assert "attempts" in shown["error"]


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
