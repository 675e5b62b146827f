"""A command task gets stdin, stdout and stderr and nothing else of its worker: not the flocked
processing files (a task must not keep its worker's locks alive after the worker died), not
the log, the ledger lock or the pipes of other attempts, and not what the worker itself
inherited when it was started (DESIGN §4, Liveness; docs/protocol.md, Slots and Liveness)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import CONFIG, cli_env, make_spool, spool_cli, wait_until

HOLD = CONFIG + """
[jobs.hold]
command = ["sleep", "60"]
"""


def task_pids(spool: Path, host: str) -> dict[str, int]:
    try:
        running = json.loads((spool / "hosts" / f"{host}.json").read_text())["running"]
    except (OSError, ValueError, KeyError):
        return {}
    return {job_id: entry["task_pid"] for job_id, entry in running.items()
            if entry.get("task_pid")}


def descriptors(pid: int) -> dict[int, str]:
    found = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            found[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            pass
    return found


def test_a_task_holds_no_descriptor_of_its_worker(tmp_path):
    spool = make_spool(tmp_path / "spool", HOLD)
    for _ in range(2):  # two running at once: neither gets the other's files or pipes
        assert spool_cli(spool, "submit", "hold").returncode == 0
    # an inheritable descriptor the worker got from whoever started it
    planted = os.open(tmp_path / "inherited", os.O_WRONLY | os.O_CREAT, 0o600)
    os.set_inheritable(planted, True)
    try:
        worker = subprocess.Popen([sys.executable, "-m", "spool.cli", "--spool", str(spool),
                                   "--host", "h", "worker", "--capacity", "2"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env=cli_env(), pass_fds=(planted,))
    finally:
        os.close(planted)
    try:
        pids = wait_until(lambda: len(task_pids(spool, "h")) == 2 and task_pids(spool, "h"),
                          30, "both tasks in the ledger")
        assert isinstance(pids, dict)
        worker_fds = descriptors(worker.pid)
        assert any(str(tmp_path / "inherited") in target for target in worker_fds.values())
        assert any("/processing/h/" in target for target in worker_fds.values())
        for pid in pids.values():
            held = descriptors(pid)
            assert sorted(held) == [0, 1, 2], held
            assert all(target.startswith("pipe:") for target in held.values()), held
            assert held[1] == held[2] and held[0] != held[1]
    finally:
        worker.send_signal(signal.SIGINT)
        worker.send_signal(signal.SIGINT)
        worker.wait(30)
