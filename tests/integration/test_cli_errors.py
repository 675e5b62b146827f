"""The CLI never ends in a traceback on bad input or a filesystem fault: its last stderr line is
`Error: ...` naming the value or the path, with the exit code of DESIGN §8 (2 for input, 1 for a
filesystem fault); a real bug keeps its traceback. Daemons wait out start-up faults."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import CONFIG, cli_env, make_spool, spool_cli, state_files, wait_until

# Runs the CLI with os.open/os.write failing under the spool's tmp/ (a full disk, a read-only
# or broken filesystem, a directory of another user) — faults that root cannot cause by chmod.
FAULTY = """
import errno, os, sys
code = getattr(errno, os.environ["FAULT_ERRNO"])
where = os.environ["FAULT_UNDER"]
real_open, real_mkdir = os.open, os.mkdir
def faulty_open(path, flags, *args, **kwargs):
    if os.fsdecode(path).startswith(where) and flags & os.O_CREAT:
        raise OSError(code, os.strerror(code), os.fsdecode(path))
    return real_open(path, flags, *args, **kwargs)
def faulty_mkdir(path, *args, **kwargs):
    if os.fsdecode(path).startswith(where):
        raise OSError(code, os.strerror(code), os.fsdecode(path))
    return real_mkdir(path, *args, **kwargs)
os.open, os.mkdir = faulty_open, faulty_mkdir
from spool.cli import run
sys.argv[0] = "spool"
run()
"""


def faulty_cli(spool: Path, errno_name: str, *args: str, under: str = "tmp",
               input: str | None = None) -> subprocess.CompletedProcess:
    env = cli_env(FAULT_ERRNO=errno_name, FAULT_UNDER=str(spool / under))
    return subprocess.run([sys.executable, "-c", FAULTY, "--spool", str(spool), "--host", "t",
                           *args], capture_output=True, text=True, input=input, env=env,
                          timeout=60)


def error_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("Error: "), result.stderr
    return lines[-1]


def nothing_written(spool: Path) -> bool:
    return not any(state_files(spool).values()) and not os.listdir(spool / "tmp")


# -- bad input: exit 2, nothing written ------------------------------------------------------


@pytest.mark.parametrize("args, needle", [
    (["noop", "--at", "9999-12-31T23:59:59-01:00"], "9999-12-31T23:59:59-01:00"),
    (["noop", "--at", "0001-01-01T00:00:00+05:00"], "out of range"),
    (["noop", "--delay", "999999999999d"], "999999999999d"),
    (["echo", '{"message": "\\ud800"}'], "not encodable as UTF-8"),
    (["echo", "-a", "message:=\"\\udfff\""], "not encodable as UTF-8"),
    (["noop", "[" * 50000 + "]" * 50000], "nested deeper"),
    (["noop", "--timeout", "٣s"], "--timeout"),
    (["noop", "--slots", str(2**40)], "out of range"),
    (["noop", "--id", "abc\n"], "invalid"),
])
def test_hostile_submit_input_is_an_error_line_and_exit_2(spool_dir, args, needle):
    result = spool_cli(spool_dir, "submit", *args)
    assert result.returncode == 2, result.stderr
    assert needle in error_line(result)
    assert nothing_written(spool_dir)


@pytest.mark.parametrize("data, needle", [
    ("[" * 200000 + "]" * 200000, "nested deeper"),
    ('{"x": ' * 150 + "1" + "}" * 150, "nested deeper"),
    ('{"message": "\\udc80"}', "not encodable as UTF-8"),
])
def test_hostile_stdin_is_an_error_line_and_exit_2(spool_dir, data, needle):
    result = spool_cli(spool_dir, "submit", "echo", "-", input=data)
    assert result.returncode == 2 and needle in error_line(result)
    assert nothing_written(spool_dir)


def test_stdin_that_is_not_utf8_is_an_error_line(spool_dir):
    result = subprocess.run([sys.executable, "-m", "spool.cli", "--spool", str(spool_dir),
                             "submit", "echo", "-"], input=b'{"message": "\xff"}',
                            capture_output=True, env=cli_env(), timeout=60)
    assert result.returncode == 2 and b"Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(b"Error: ARGS_JSON")


def test_argv_that_is_not_utf8_is_an_error_line(spool_dir):
    result = subprocess.run([sys.executable, "-m", "spool.cli", "--spool", str(spool_dir),
                             "submit", "echo", "-a", b"message=\xff\xfe"],
                            capture_output=True, env=cli_env(), timeout=60)
    assert result.returncode == 2 and b"Traceback" not in result.stderr, result.stderr
    assert b"not encodable as UTF-8" in result.stderr.splitlines()[-1]
    assert nothing_written(spool_dir)


# -- filesystem faults: exit 1, the path and the problem named -----------------------------


@pytest.mark.parametrize("code", ["ENOSPC", "EDQUOT", "EACCES", "EROFS", "EIO"])
def test_submit_on_a_failing_filesystem_names_path_and_problem(spool_dir, code):
    result = faulty_cli(spool_dir, code, "submit", "noop")
    assert result.returncode == 1, result.stderr
    line = error_line(result)
    assert str(spool_dir / "tmp") in line and f"({code})" in line
    assert os.strerror(getattr(__import__("errno"), code)) in line
    assert not any(state_files(spool_dir).values())


def test_any_command_names_the_path_of_a_fault(tmp_path):
    fresh = tmp_path / "fresh"
    result = faulty_cli(fresh, "EACCES", "init", under=str(fresh))
    assert result.returncode == 1
    assert error_line(result) == f"Error: {fresh}: Permission denied (EACCES)"


def test_a_real_bug_keeps_its_traceback(spool_dir):
    result = faulty_cli(spool_dir, "EBADF", "submit", "noop")
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert "Bad file descriptor" in result.stderr


# -- big results and unreadable files are never hidden -------------------------------------


def write_done(spool: Path, job_id: str, result: object) -> None:
    body = {"id": job_id, "job": "noop", "args": {}, "priority": 5, "attempts": 1,
            "max_attempts": 3, "run_at": "2026-01-01T00:00:00Z", "outcome": "completed",
            "result": result, "finished_at": "2026-01-01T00:00:01Z", "history": []}
    (spool / "done" / f"{job_id}.json").write_text(json.dumps(body))


def test_a_job_with_a_5mb_result_can_be_shown_listed_and_waited_for(tmp_path):
    spool = make_spool(tmp_path / "spool", CONFIG.replace(
        "[defaults]", "[defaults]\nmax_result_bytes = 8388608"))
    write_done(spool, "big", "x" * 5_000_000)
    shown = spool_cli(spool, "show", "big", "--json")
    assert shown.returncode == 0, shown.stderr
    assert len(json.loads(shown.stdout)["result"]) == 5_000_000
    listed = spool_cli(spool, "ls", "done", "--json")
    assert [job["id"] for job in json.loads(listed.stdout)] == ["big"]
    assert spool_cli(spool, "wait", "big", "--timeout", "5").returncode == 0


def test_an_unreadable_job_file_is_listed_with_a_warning(spool_dir):
    write_done(spool_dir, "fine", 1)
    (spool_dir / "done" / "broken.json").write_text('{"id": "broken", "job": ')
    (spool_dir / "dead" / "huge.json").write_text(json.dumps({"x": "y" * 5_000_000}))
    listed = spool_cli(spool_dir, "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    found = {job["id"]: job for job in json.loads(listed.stdout)}
    assert set(found) == {"fine", "broken", "huge"}
    assert found["broken"]["unreadable"] and "not valid JSON" in found["broken"]["error"]
    assert found["huge"]["unreadable"] and found["huge"]["state"] == "dead"
    human = spool_cli(spool_dir, "ls", "--job", "noop")
    assert "broken" in human.stdout and "unreadable" in human.stdout
    assert f"Warning: cannot read {spool_dir / 'dead' / 'huge.json'}" in human.stderr


# -- daemons wait out start-up faults --------------------------------------------------------

START_FAULT = """
import errno, os, sys
from spool import cron, reaper, worker
tries = {"n": 0}
def failing(cls):
    real = cls.__init__
    def init(self, *args, **kwargs):
        tries["n"] += 1
        if tries["n"] <= int(os.environ["FAULT_TIMES"]):
            code = getattr(errno, os.environ["FAULT_ERRNO"])
            raise OSError(code, os.strerror(code), os.environ["FAULT_PATH"])
        real(self, *args, **kwargs)
    cls.__init__ = init
failing(cron.Cron)
failing(reaper.Reaper)
failing(worker.Worker)
from spool.cli import run
sys.argv[0] = "spool"
run()
"""


FIRST_WRITES = {"cron": "cron/state.t.json", "reap": "hosts/t.reaper.json",
                "worker": "hosts/t.json"}


@pytest.mark.parametrize("command", ["cron", "reap", "worker"])
@pytest.mark.parametrize("code", ["ENOSPC", "EACCES"])
def test_daemon_retries_a_fault_at_start_then_runs(spool_dir, tmp_path, command, code):
    log = tmp_path / "daemon.log"
    path = str(spool_dir / "hosts" / "t.lock")
    env = cli_env(FAULT_TIMES="1", FAULT_ERRNO=code, FAULT_PATH=path)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", START_FAULT, "--spool", str(spool_dir),
                                 "--host", "t", command], stdout=out, stderr=out, env=env)
    try:
        wait_until(lambda: "cannot start (retry in 2s)" in log.read_text(), 20,
                   "the start-up fault to be logged")
        text = log.read_text()
        assert path in text and f"({code})" in text and "Traceback" not in text
        assert proc.poll() is None
        wait_until(lambda: (spool_dir / FIRST_WRITES[command]).exists(), 20,
                   f"the first pass of {command} after the retry")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


@pytest.mark.parametrize("command", ["cron", "reap", "worker"])
def test_daemon_stops_on_sigterm_while_waiting_out_a_fault(spool_dir, tmp_path, command):
    log = tmp_path / "daemon.log"
    env = cli_env(FAULT_TIMES="1000", FAULT_ERRNO="ENOSPC", FAULT_PATH=str(spool_dir / "cron"))
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", START_FAULT, "--spool", str(spool_dir),
                                 "--host", "t", command], stdout=out, stderr=out, env=env)
    wait_until(lambda: "cannot start" in log.read_text(), 20, "the start-up fault")
    time.sleep(0.2)
    proc.send_signal(signal.SIGHUP)  # retries at once, never kills
    wait_until(lambda: log.read_text().count("cannot start") >= 2, 20, "a retry on SIGHUP")
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to run as another user")
@pytest.mark.parametrize("command", ["cron", "reap"])
def test_daemon_of_another_user_waits_for_access(tmp_path, command):
    base = Path(tempfile.mkdtemp(dir="/tmp"))  # tmp_path's parents are closed to others
    os.chmod(base, 0o755)
    spool = make_spool(base / "spool")
    os.chmod(spool / "spool.toml", 0o600)  # root's: EACCES for nobody
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                 sys.executable, "-m", "spool.cli", "--spool", str(spool),
                                 "--host", "t", command], stdout=out, stderr=out, env=cli_env())
    try:
        wait_until(lambda: "cannot start" in log.read_text(), 20, "the EACCES to be logged")
        assert "Permission denied" in log.read_text() and str(spool / "spool.toml") in \
            log.read_text()
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        shutil.rmtree(base)


def test_hand_placed_hostile_files_can_be_listed_and_shown(spool_dir):
    body = {"id": "odd", "job": "noop\ud800", "after": 5, "history": ["x", {"error": "\udcff"}],
            "run_at": 7, "error": "bad \ud800", "outcome": "invalid"}
    (spool_dir / "dead" / "odd.json").write_text(json.dumps(body))
    (spool_dir / "pending" / "5-20260101T000000.000000Z-hand.json").write_text(
        json.dumps({"id": "hand", "job": 3, "meta": [], "created_at": "9999-12-31T23:59:59-01:00"}))
    for args in (["ls"], ["ls", "--json"], ["show", "odd"], ["show", "odd", "--json"],
                 ["show", "hand"], ["status"]):
        result = spool_cli(spool_dir, *args)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (args, result.stderr)
    assert "bad \ufffd" in spool_cli(spool_dir, "show", "odd").stdout


@pytest.mark.parametrize("content, needle", [
    ("[" * 100000 + "]" * 100000, "nested deeper"),
    ('{"job": "noop", "args": {"s": "\\ud800"}}', "not encodable as UTF-8"),
])
def test_validate_of_a_hostile_job_file_is_exit_2(spool_dir, tmp_path, content, needle):
    path = tmp_path / "job.json"
    path.write_text(content)
    result = spool_cli(spool_dir, "validate", str(path))
    assert result.returncode == 2 and needle in error_line(result)


def test_a_burst_worker_gets_through_every_hostile_drop(spool_dir):
    stamp = "20260101T000000.000000Z"
    pending = os.fsencode(spool_dir / "pending")
    drops = {
        f"²-{stamp}-sup.json".encode(): b'{"job": "noop"}',
        f"٣-{stamp}-arabic.json".encode(): b'{"job": "noop"}',
        f"5-{stamp.replace('2026', '٢٠٢٦')}-due.json".encode(): b'{"job": "noop"}',
        b"latin1-\xe9.json": b'{"job": "noop"}',
        b"garbage-\xff.json": b"not json at all",
        b"deep.json": b'{"job": "noop", "args": ' + b"[" * 50000 + b"]" * 50000 + b"}",
        b"surrogate.json": rb'{"job": "noop", "args": {"s": "\ud800"}}',
        b"far.json": b'{"job": "noop", "run_at": "9999-12-31T23:59:59-01:00"}',
    }
    for name, content in drops.items():
        path = os.path.join(pending, name)
        with open(path, "wb") as out:
            out.write(content)
        os.utime(path, (time.time() - 60,) * 2)
    result = spool_cli(spool_dir, "worker", "--burst", timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    states = state_files(spool_dir)
    assert len(states["done"]) == 4 and len(states["dead"]) == 4, states
    assert os.listdir(spool_dir / "pending") == [] and states["processing"] == []
    errors = " ".join(json.loads((spool_dir / "dead" / f"{i}.json").read_text())["error"]
                      for i in states["dead"])
    for needle in ("not valid JSON", "nested deeper", "not encodable", "out of range"):
        assert needle in errors
