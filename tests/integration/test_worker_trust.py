"""The worker on a bad day, with real processes: fresh at claim, heartbeats that a burst of drops
cannot starve, slots held by processes when a file is taken away, two workers of one host,
errors between claim and start, full disks, FIFOs and links under job names, bounded outputs,
a linked processing directory, lost attempts' start times, start-up faults."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import (
    CONFIG,
    TESTS,
    make_spool,
    read_job,
    spool_cli,
    start_cli,
    state_files,
    wait_until,
)

from spool import Spool
from spool.layout import pending_name
from spool.timeutil import UTC, format_time

HANDLERS = '''
import os


def big(n):
    return "x" * n


def plant(target, value):
    os.symlink(target, os.environ["SPOOL_RESULT"])  # a planted link where the result goes
    return value


def stdin():
    return os.read(0, 100).decode()
'''
BAD_IMPORT = 'raise RuntimeError("deploy half done")\n'
TRUST_JOBS = """
[jobs.bigresult]
handler = "trust_handlers:big"
max_attempts = 1

[jobs.plant]
handler = "trust_handlers:plant"
max_attempts = 1

[jobs.stdin]
handler = "trust_handlers:stdin"

[jobs.badimport]
handler = "trust_badimport:run"
max_attempts = 2
"""


@pytest.fixture
def mods(tmp_path: Path) -> Path:
    """Handler modules for the workers of these tests (PYTHONPATH)."""
    where = tmp_path / "mods"
    where.mkdir()
    (where / "trust_handlers.py").write_text(HANDLERS)
    (where / "trust_badimport.py").write_text(BAD_IMPORT)
    return where


def worker(spool: Path, host: str, log: Path, *args: str, mods: Path | None = None,
           capacity: int = 1) -> subprocess.Popen:
    path = os.pathsep.join(str(p) for p in (TESTS, mods) if p)
    return start_cli(spool, "worker", "--capacity", str(capacity), *args, host=host, log=log,
                     PYTHONPATH=path)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)


def text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def submit(spool: Path, job: str, args=None, **options) -> str:
    return Spool(spool, host="submitter").submit(job, args, **options)


def plant_job(spool: Path, job_id: str, body: dict) -> Path:
    """A hand-made job file under a canonical pending name, due now."""
    path = spool / "pending" / pending_name(5, datetime.now(UTC) - timedelta(seconds=1), job_id)
    path.write_text(json.dumps({"id": job_id, **body}))
    return path


def processing_file(spool: Path, host: str, job_id: str) -> Path | None:
    for name in os.listdir(spool / "processing" / host):
        if name.startswith(f"{job_id}."):
            return spool / "processing" / host / name
    return None


def wait_state(spool: Path, job_id: str, state: str, timeout: float = 60) -> dict:
    wait_until(lambda: job_id in state_files(spool)[state], timeout, f"{job_id} in {state}/")
    return read_job(spool, state, job_id) if state in ("done", "dead") else {}


# -- 1. fresh at claim -------------------------------------------------------------------------

def test_a_just_claimed_job_with_an_old_file_is_not_reaped_by_another_host(tmp_path):
    # a long heartbeat: nothing but the claim itself can make the file fresh in this window
    config = CONFIG.replace('heartbeat = "1s"', 'heartbeat = "5s"').replace(
        'lease = "3s"', 'lease = "15s"')
    spool = make_spool(tmp_path / "spool", config)
    marker = tmp_path / "task.pid"
    job_id = submit(spool, "sleep", {"seconds": 60, "marker": str(marker)})
    [name] = os.listdir(spool / "pending")
    old = time.time() - 3600  # waited an hour (a delay, a backlog): far beyond two leases
    os.utime(spool / "pending" / name, (old, old))
    proc = worker(spool, "a", tmp_path / "a.log")
    try:
        wait_until(marker.exists, 30, "the task to start")
        proc.send_signal(signal.SIGSTOP)  # no heartbeat can help from here on
        reap = spool_cli(spool, "reap", "--once", host="b")
        assert reap.returncode == 0 and "reaped" not in reap.stdout, reap.stdout + reap.stderr
        assert processing_file(spool, "a", job_id) is not None
        proc.send_signal(signal.SIGCONT)
        assert spool_cli(spool, "cancel", job_id).returncode == 0
        assert wait_state(spool, job_id, "done")["outcome"] == "cancelled"
        assert proc.poll() is None  # SIGSTOP/SIGCONT never stop a worker
    finally:
        stop(proc)


# -- 2. heartbeats never starve --------------------------------------------------------------

def test_a_burst_of_drops_never_delays_the_heartbeat_of_a_running_job(tmp_path):
    spool = make_spool(tmp_path / "spool")
    marker = tmp_path / "task.pid"
    job_id = submit(spool, "sleep", {"seconds": 300, "marker": str(marker)})
    proc = worker(spool, "a", tmp_path / "a.log")
    reaper = start_cli(spool, "reap", host="b", log=tmp_path / "b.log")
    try:
        wait_until(marker.exists, 30, "the task to start")
        running = processing_file(spool, "a", job_id)
        assert running is not None
        staging = tmp_path / "staging"
        staging.mkdir()
        for i in range(3000):
            (staging / f"drop{i}.json").write_text('{"job": "noop", "args": {}}')
        for name in os.listdir(staging):  # dropped at once
            os.rename(staging / name, spool / "pending" / name)
        ages: list[float] = []

        def adopted() -> bool:
            try:
                ages.append(time.time() - os.stat(running).st_mtime)
            except FileNotFoundError:
                raise AssertionError(
                    f"the running job was reaped:\n{text(tmp_path / 'b.log')}") from None
            return not any(n.startswith("drop") for n in os.listdir(spool / "pending"))

        wait_until(adopted, 120, "every drop adopted")
        for _ in range(20):  # and a little after, while the worker claims the noops
            adopted()
        heartbeat, margin = 1.0, 1.5
        assert max(ages) <= heartbeat + margin, f"heartbeat aged {max(ages):.2f}s"
        assert running.exists() and "reap" not in text(tmp_path / "b.log")
        assert proc.poll() is None and reaper.poll() is None
    finally:
        stop(reaper)
        stop(proc)


# -- 3. slots are held by processes ----------------------------------------------------------

def overlap_script(lock: Path, out: Path) -> str:
    """A task that notes its start, and notes an overlap when another run of it is alive."""
    return (f'exec 9>>"{lock}"; flock -n 9 || echo overlap >> "{out}"; '
            f'echo "start $$" >> "{out}"; exec sleep 120')


def starts(out: Path) -> list[int]:
    return [int(line.split()[1]) for line in text(out).splitlines() if line.startswith("start")]


@pytest.mark.parametrize("taker", ["hand", "reaper"])
def test_a_taken_attempt_is_stopped_before_the_host_runs_the_job_again(tmp_path, taker):
    spool = make_spool(tmp_path / "spool")
    out, lock = tmp_path / "runs.txt", tmp_path / "task.lock"
    job_id = submit(spool, "sh", {"script": overlap_script(lock, out)})
    proc = worker(spool, "a", tmp_path / "a.log")
    try:
        wait_until(lambda: len(starts(out)) == 1, 30, "the first run")
        first = starts(out)[0]
        path = processing_file(spool, "a", job_id)
        assert path is not None
        if taker == "hand":  # put back in pending/ by hand, the worker still running it
            os.rename(path, spool / "pending" / pending_name(5, datetime.now(UTC), job_id))
        else:  # the worker stalls past the lease and a reaper on host b takes the job back
            proc.send_signal(signal.SIGSTOP)
            wait_until(lambda: "reaped" in spool_cli(spool, "reap", "--once", host="b").stdout,
                       60, "host b to reap the job")
            proc.send_signal(signal.SIGCONT)
        wait_until(lambda: not alive(first), 30, "the first run to be stopped")
        wait_until(lambda: len(starts(out)) == 2, 30, "the job to run again")
        assert "overlap" not in text(out), text(out)
        assert proc.poll() is None
    finally:
        stop(proc)
    assert "overlap" not in text(out), text(out)


# -- 4. two workers of one host --------------------------------------------------------------

def test_two_workers_of_one_host_run_many_small_jobs_each_once(tmp_path):
    spool = make_spool(tmp_path / "spool")
    out = tmp_path / "runs.jsonl"
    # jobs of one and two slots: a worker remembers what it saw of a job that did not fit, so
    # its view goes stale while the other worker claims that job
    ids = Spool(spool, host="s").submit_many(
        [{"job": "record", "args": {"path": str(out), "tag": str(i), "seconds": 0.02},
          "slots": 1 + i % 2} for i in range(300)])
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    procs = [worker(spool, "a", log, "--burst", capacity=4) for log in logs]
    try:
        assert [p.wait(120) for p in procs] == [0, 0]
    finally:
        for proc in procs:
            stop(proc)
    runs = [json.loads(line)["job"] for line in out.read_text().splitlines()]
    assert sorted(runs) == sorted(ids)
    files = state_files(spool)
    assert sorted(files["done"]) == sorted(ids) and files["processing"] == []
    for job_id in ids:  # no claim was lost or leaked on the way
        assert [h["outcome"] for h in read_job(spool, "done", job_id)["history"]] == ["completed"]
    for log in logs:
        assert not [line for line in text(log).splitlines()
                    if "error" in line.lower() or "failed" in line], text(log)


# -- 5. errors between claim and start -------------------------------------------------------

def test_errors_between_claim_and_start_end_the_attempt_and_the_worker_goes_on(tmp_path, mods):
    spool = make_spool(tmp_path / "spool", CONFIG + TRUST_JOBS)
    nul = "nul-arg"
    plant_job(spool, nul, {"job": "echo", "args": {"message": "a\0b"}})
    badimport = submit(spool, "badimport")
    fifo_log, link_log, dir_log = "log-fifo", "log-link", "log-dir"
    outside = tmp_path / "outside.txt"
    outside.write_text("not the spool's\n")
    for job_id in (fifo_log, link_log, dir_log):
        submit(spool, "noop", id=job_id, max_attempts=1)
    os.mkfifo(spool / "logs" / f"{fifo_log}.log")
    os.symlink(outside, spool / "logs" / f"{link_log}.log")
    (spool / "logs" / f"{dir_log}.log").mkdir()
    good = submit(spool, "noop", priority=9)
    proc = worker(spool, "a", tmp_path / "a.log", mods=mods)
    try:
        assert wait_state(spool, good, "done")["outcome"] == "completed"
        body = wait_state(spool, nul, "dead")
        assert body["outcome"] == "invalid" and "NUL" in body["error"]
        body = wait_state(spool, badimport, "dead")
        assert [h["outcome"] for h in body["history"]] == ["failed", "failed"]  # retried
        assert "trust_badimport" in body["error"] and "deploy half done" in body["error"]
        for job_id in (fifo_log, link_log, dir_log):
            body = wait_state(spool, job_id, "dead")
            assert body["outcome"] == "failed" and "cannot open the log" in body["error"]
            assert f"{job_id}.log" in body["error"]
        assert outside.read_text() == "not the spool's\n"
        assert state_files(spool)["processing"] == [] and proc.poll() is None
        assert not list(os.listdir(spool / "processing" / "a"))
    finally:
        stop(proc)


# -- 7. FIFOs and links under canonical pending names ----------------------------------------

def test_a_fifo_or_link_with_a_canonical_name_is_rejected_and_never_blocks(tmp_path):
    spool = make_spool(tmp_path / "spool")
    due = format_time(datetime.now(UTC) - timedelta(seconds=5))
    fifo = spool / "pending" / pending_name(0, datetime.now(UTC) - timedelta(seconds=5), "fifo")
    os.mkfifo(fifo)
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"id": "link", "job": "noop", "run_at": due}))
    os.symlink(outside, spool / "pending" / pending_name(0, datetime.now(UTC), "link"))
    good = submit(spool, "noop", priority=9)
    proc = worker(spool, "a", tmp_path / "a.log", "--burst")
    try:
        assert proc.wait(60) == 0
    finally:
        stop(proc)
    assert good in state_files(spool)["done"]
    for job_id, what in (("fifo", "not a regular file"), ("link", "symbolic link")):
        body = read_job(spool, "dead", job_id)
        assert body["outcome"] == "invalid" and what in body["error"], body
        assert f"{job_id}.1.json" in body["error"]
    assert stat.S_ISFIFO(os.lstat(spool / "dead" / "fifo.orig").st_mode)
    assert json.loads(outside.read_text())["id"] == "link"  # untouched


# -- 8. bounded outputs ----------------------------------------------------------------------

def test_results_and_logs_are_bounded_and_never_go_through_links(tmp_path, mods):
    config = CONFIG.replace("[defaults]", "[defaults]\nmax_result_bytes = 1000\n"
                            "max_log_bytes = 4096") + TRUST_JOBS
    spool = make_spool(tmp_path / "spool", config)
    secret = tmp_path / "secret.json"
    secret.write_text('"the secret"')
    big = submit(spool, "bigresult", {"n": 5000})
    small = submit(spool, "bigresult", {"n": 10})
    cmd_big = submit(spool, "sh", {"script": 'head -c 5000 /dev/zero | tr "\\0" x '
                                             '> "$SPOOL_RESULT"'}, max_attempts=1)
    cmd_link = submit(spool, "sh", {"script": f'ln -s "{secret}" "$SPOOL_RESULT"'},
                      max_attempts=1)
    planted = submit(spool, "plant", {"target": str(secret), "value": "mine"})
    chatty = submit(spool, "sh", {"script": 'head -c 100000 /dev/zero | tr "\\0" y; '
                                            'echo the-end'})
    quiet = submit(spool, "stdin")
    proc = worker(spool, "a", tmp_path / "a.log", "--burst", mods=mods)
    try:
        assert proc.wait(60) == 0
    finally:
        stop(proc)
    for job_id in (big, cmd_big):
        body = read_job(spool, "dead", job_id)
        assert body["outcome"] == "failed" and "max_result_bytes" in body["error"], body
    assert read_job(spool, "done", small)["result"] == "x" * 10
    body = read_job(spool, "dead", cmd_link)
    assert body["outcome"] == "failed" and "result file" in body["error"], body
    assert read_job(spool, "done", planted)["result"] == "mine"
    assert secret.read_text() == '"the secret"'
    log = (spool / "logs" / f"{chatty}.log").read_text()
    assert read_job(spool, "done", chatty)["outcome"] == "completed"
    assert len(log) <= 4096 + 200 and "the-end" not in log
    assert "output cut:" in log and "bytes dropped past max_log_bytes (4096)" in log
    dropped = int(log.split("output cut: ")[1].split()[0])
    assert dropped == 100000 + len("the-end\n") - (4096 - len(log.split("\n")[0]) - 1)
    assert read_job(spool, "done", quiet)["result"] == ""


def test_handler_children_read_dev_null_not_the_workers_stdin(tmp_path, mods):
    spool = make_spool(tmp_path / "spool", CONFIG + TRUST_JOBS)
    job_id = submit(spool, "stdin")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(mods)]))
    proc = subprocess.Popen([sys.executable, "-m", "spool.cli", "--spool", str(spool), "--host",
                             "a", "worker", "--burst"], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        proc.stdin.write(b"the worker's own stdin")
        proc.stdin.flush()
        assert proc.wait(60) == 0
    finally:
        proc.stdin.close()
        stop(proc)
    assert read_job(spool, "done", job_id)["result"] == ""


def test_logs_of_a_group_spool_are_group_writable(tmp_path):
    spool = make_spool(tmp_path / "spool")
    for directory in [spool, *spool.iterdir()]:
        if directory.is_dir():
            os.chmod(directory, 0o2775)
    job_id = submit(spool, "echo", {"message": "hi"})
    proc = subprocess.Popen([sys.executable, "-m", "spool.cli", "--spool", str(spool), "--host",
                             "a", "worker", "--burst"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(TESTS)),
                            umask=0o022)
    try:
        assert proc.wait(60) == 0
    finally:
        stop(proc)
    assert stat.S_IMODE(os.stat(spool / "logs" / f"{job_id}.log").st_mode) == 0o664


# -- 9. processing/<host> must be a real directory -------------------------------------------

@pytest.mark.parametrize("where", ["processing/a", "logs"])
def test_a_linked_directory_is_refused_until_it_is_real(tmp_path, where):
    spool = make_spool(tmp_path / "spool")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if where == "logs":
        os.rmdir(spool / where)
    os.symlink(elsewhere, spool / where)
    job_id = submit(spool, "echo", {"message": "hello"})
    log = tmp_path / "a.log"
    proc = worker(spool, "a", log)
    try:
        link = str(spool / where)
        wait_until(lambda: text(log).count(f"{link} is a symbolic link") >= 2, 30,
                   "the link refused at start and at a heartbeat")
        assert state_files(spool)["pending"] == [job_id] and os.listdir(elsewhere) == []
        os.unlink(spool / where)
        os.mkdir(spool / where)
        assert wait_state(spool, job_id, "done")["outcome"] == "completed"
        assert proc.poll() is None and os.listdir(elsewhere) == []
    finally:
        stop(proc)


# -- 10. lost attempts keep their start time ---------------------------------------------------

def test_a_lost_attempt_recovered_by_the_restarted_worker_has_its_start_time(tmp_path):
    spool = make_spool(tmp_path / "spool")
    marker = tmp_path / "task.pid"
    job_id = submit(spool, "sh", {"script": f"echo $$ > {marker}; exec sleep 120"})
    ledger = spool / "hosts" / "h.json"
    proc = worker(spool, "h", tmp_path / "h1.log")
    try:
        wait_until(marker.exists, 30, "the task to start")
        wait_until(lambda: json.loads(ledger.read_text())["running"][job_id].get("task_pid"),
                   30, "the task in the ledger")
        started = json.loads(ledger.read_text())["running"][job_id]["started_at"]
    finally:
        proc.kill()
        proc.wait()
    restarted = worker(spool, "h", tmp_path / "h2.log")
    try:
        wait_until(lambda: processing_file(spool, "h", job_id) and
                   processing_file(spool, "h", job_id).name.endswith(".2.json"), 30,
                   "the job to run again")
        lost = Spool(spool, host="x").get(job_id).history[-1]
        assert lost["outcome"] == "lost" and lost["started_at"] == started
    finally:
        stop(restarted)


# -- 11. start-up faults ---------------------------------------------------------------------

def test_a_worker_that_cannot_take_the_host_lock_waits_and_starts_later(tmp_path):
    if os.geteuid() != 0 or subprocess.run(["setpriv", "--version"], capture_output=True,
                                           check=False).returncode != 0:
        pytest.skip("needs root and setpriv to drop the DAC override")
    spool = make_spool(tmp_path / "spool")
    lock = spool / "hosts" / "a.lock"
    lock.touch()
    os.chown(lock, 65534, 65534)  # owned by another user (nobody)
    os.chmod(lock, 0o600)
    job_id = submit(spool, "noop")
    log = tmp_path / "a.log"
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    with open(log, "ab") as out:  # the child keeps its own copy
        proc = subprocess.Popen(["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                                 sys.executable, "-m", "spool.cli", "--spool", str(spool),
                                 "--host", "a", "worker"], stdout=out, stderr=subprocess.STDOUT,
                                env=env)
    try:
        wait_until(lambda: text(log).count("a.lock") >= 2 or proc.poll() is not None, 30,
                   "the worker to meet the lock twice")
        assert proc.poll() is None, text(log)
        assert "Permission denied" in text(log) and job_id in state_files(spool)["pending"]
        os.chown(lock, 0, 0)
        assert wait_state(spool, job_id, "done")["outcome"] == "completed"
        assert proc.poll() is None
    finally:
        stop(proc)


# -- 5, 6. full disks, in process (no tmpfs needed) ------------------------------------------

def in_process_worker(spool: Path):
    from spool.worker import Worker

    sp = Spool(spool, host="a")
    worker = Worker(sp, capacity=1)
    worker.start(sp.clock())
    return sp, worker


def steps_until(worker, predicate, message: str, timeout: float = 30):
    def stepped():
        worker.step(worker.spool.clock())
        return predicate()
    return wait_until(stepped, timeout, message)


def files_held(needle: str) -> list[str]:
    """Targets of this process's descriptors that contain `needle`."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if needle in target:
            held.append(target)
    return held


def test_a_claim_the_ledger_cannot_record_ends_the_attempt_at_once(tmp_path, monkeypatch):
    from spool import ledger as ledger_module

    spool = make_spool(tmp_path / "spool")
    sp, worker = in_process_worker(spool)
    job_id = submit(spool, "noop")
    worker.view.refresh(time.monotonic())

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ledger_module, "replace_file", full)
    worker.claim_and_start(sp.clock())
    monkeypatch.undo()
    job = sp.get(job_id)
    assert job.state == "pending" and worker.running == {} and files_held(job_id) == []
    assert job.history[-1]["outcome"] == "failed"
    assert "cannot record the claim" in job.history[-1]["error"]
    steps_until(worker, lambda: job_id in state_files(spool)["done"], "the job to run later")
    worker.shutdown(sp.clock())


def test_an_outcome_that_cannot_be_staged_keeps_the_job_held_until_space_returns(tmp_path,
                                                                                monkeypatch):
    from spool import store as store_module
    from spool.claim import try_lock_orphan

    spool = make_spool(tmp_path / "spool")
    sp, worker = in_process_worker(spool)
    job_id = submit(spool, "noop")
    real_stage = store_module.stage

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module, "stage", full)
    steps_until(worker, lambda: worker.attempts.unsettled, "the outcome to meet the full disk")
    path = processing_file(spool, "a", job_id)
    assert path is not None and try_lock_orphan(path) is None  # still held by its worker
    beat = os.stat(path).st_mtime_ns
    steps_until(worker, lambda: os.stat(path).st_mtime_ns > beat, "a heartbeat meanwhile")
    assert processing_file(spool, "a", job_id) == path and try_lock_orphan(path) is None
    monkeypatch.setattr(store_module, "stage", real_stage)
    steps_until(worker, lambda: job_id in state_files(spool)["done"], "the job to finish")
    assert [h["outcome"] for h in read_job(spool, "done", job_id)["history"]] == ["completed"]
    assert worker.attempts.unsettled == {} and state_files(spool)["processing"] == []
    worker.shutdown(sp.clock())
