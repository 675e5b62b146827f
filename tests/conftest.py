"""Shared fixtures: a spool with test job types, the CLI as a subprocess, bounded waits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Callable

import pytest

TESTS = Path(__file__).parent

CONFIG = """
[defaults]
heartbeat = "1s"
lease = "3s"
poll = "0.2s"
durable = false
backoff = { base = "0.1s", factor = 2.0, max = "1s", jitter = 0 }
grace = "5s"
kill_grace = "1s"

[jobs.noop]
command = ["true"]

[jobs.echo]
command = ["echo", "{message}"]

[jobs.fail]
command = ["false"]
max_attempts = 3

[jobs.sh]
command = ["sh", "-c", "{script}"]

[jobs.record]
handler = "taskfns:record"

[jobs.add]
handler = "taskfns:add"

[jobs.sleep]
handler = "taskfns:sleep"

[jobs.cancel_self]
handler = "taskfns:cancel_self"

[jobs.big]
command = ["true"]
slots = 64
"""


def make_spool(root: Path, config: str = CONFIG) -> Path:
    """An initialised spool at `root` with the test job types."""
    from spool.layout import Layout

    Layout(root).create()
    (root / "spool.toml").write_text(config)
    return root


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return make_spool(tmp_path / "spool")


@pytest.fixture
def sp(spool_dir: Path):
    from spool import Spool

    return Spool(spool_dir, host="test")


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env.pop("SPOOL_DIR", None)
    env.pop("SPOOL_HOST", None)
    env.update(extra)
    return env


def spool_cli(spool: Path, *args: str, host: str = "test", input: str | None = None,
              timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the `spool` CLI in a subprocess."""
    return subprocess.run([sys.executable, "-m", "spool.cli", "--spool", str(spool),
                           "--host", host, *args], capture_output=True, text=True,
                          input=input, env=cli_env(), timeout=timeout)


def start_cli(spool: Path, *args: str, host: str = "test", log: Path | None = None,
              **env: str) -> subprocess.Popen:
    """Start a long-running `spool` command (a worker, cron, reaper)."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - the child keeps it
    return subprocess.Popen([sys.executable, "-m", "spool.cli", "--spool", str(spool),
                             "--host", host, *args], stdout=out, stderr=out,
                            env=cli_env(**env))


def wait_until(predicate: Callable[[], object], timeout: float = 30.0,
               message: str = "condition") -> object:
    """Poll `predicate` until it is truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    pause = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(pause)
        pause = min(pause * 1.5, 0.2)


def state_files(spool: Path) -> dict[str, list[str]]:
    """Job ids per state directory, from names alone."""
    from spool.layout import parse_pending_name, parse_processing_name

    result: dict[str, list[str]] = {"pending": [], "processing": [], "done": [], "dead": []}
    for name in os.listdir(spool / "pending"):
        if parsed := parse_pending_name(name):
            result["pending"].append(parsed.id)
    for host in os.listdir(spool / "processing"):
        for name in os.listdir(spool / "processing" / host):
            if parsed := parse_processing_name(name):
                result["processing"].append(parsed[0])
    for state in ("done", "dead"):
        result[state] = [n[:-5] for n in os.listdir(spool / state) if n.endswith(".json")]
    return result


def read_job(spool: Path, state: str, job_id: str) -> dict:
    return json.loads((spool / state / f"{job_id}.json").read_text())


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
