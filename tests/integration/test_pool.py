"""The handler pool (`isolation = "pool"`, the default): warm children run handler attempts one
after another, and every guarantee of an attempt in a fresh fork holds — a crash, a timeout or a
cancel kills the child's group and the pool replaces it, a child is replaced after
`max_jobs_per_child` attempts, past `max_child_rss_bytes`, or when an attempt leaves a process
or a thread behind, a child holds none of its worker's descriptors, and children go with their
worker, whether it drains on SIGTERM or is killed."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from conftest import CONFIG, alive, make_spool, read_job, spool_cli, start_cli, wait_until

POOL = CONFIG + """
[jobs.whoami]
handler = "poolfns:whoami"

[jobs.descriptors]
handler = "poolfns:descriptors"

[jobs.crash]
handler = "poolfns:crash"
max_attempts = 1

[jobs.kill_self]
handler = "poolfns:kill_self"
max_attempts = 1

[jobs.exits]
handler = "poolfns:exits"
max_attempts = 1

[jobs.nap]
handler = "poolfns:nap"
max_attempts = 1
timeout = "1s"

[jobs.leave_process]
handler = "poolfns:leave_process"

[jobs.leave_thread]
handler = "poolfns:leave_thread"

[jobs.chdir_away]
handler = "poolfns:chdir_away"

[jobs.disturb_signals]
handler = "poolfns:disturb_signals"

[jobs.signal_state]
handler = "poolfns:signal_state"

[jobs.close_descriptors]
handler = "poolfns:close_descriptors"
max_attempts = 1

[jobs.leave_raw_thread]
handler = "poolfns:leave_raw_thread"

[jobs.lower_limits]
handler = "poolfns:lower_limits"

[jobs.close_stdout]
handler = "poolfns:close_stdout"
max_attempts = 1

[jobs.fork_returns]
handler = "poolfns:fork_returns"

[jobs.joined_thread]
handler = "poolfns:joined_thread"

[jobs.c_printf]
handler = "poolfns:c_printf"

[jobs.overlap]
handler = "poolfns:overlap"
timeout = "300s"

[jobs.nap_with_grandchild]
handler = "poolfns:nap_with_grandchild"
timeout = "300s"
"""


def pool_spool(tmp_path: Path, extra_defaults: str = "", config: str = POOL) -> Path:
    return make_spool(tmp_path / "spool", config.replace(
        "[defaults]\n", "[defaults]\n" + extra_defaults, 1))


def submit(spool: Path, job: str, args: dict | None = None) -> str:
    result = spool_cli(spool, "submit", job, json.dumps(args or {}))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def drain(spool: Path, capacity: int = 1) -> None:
    result = spool_cli(spool, "worker", "--burst", "--capacity", str(capacity), timeout=120)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr


def outcome(spool: Path, job_id: str) -> dict:
    for state in ("done", "dead"):
        if (spool / state / f"{job_id}.json").exists():
            return read_job(spool, state, job_id)
    raise AssertionError(f"{job_id} is not finished")


def pids(spool: Path, ids: list[str]) -> list[int]:
    return [outcome(spool, job_id)["result"]["pid"] for job_id in ids]


def children_of(pid: int) -> set[int]:
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as listing:
            found.update(int(child) for child in listing.read().split())
    return found


def test_one_child_runs_attempt_after_attempt_each_with_its_own_environment_and_log(tmp_path):
    spool = pool_spool(tmp_path)
    ids = [submit(spool, "whoami") for _ in range(4)]
    drain(spool)
    results = [outcome(spool, job_id)["result"] for job_id in ids]
    assert len({r["pid"] for r in results}) == 1, results  # one warm child, no fork per job
    assert [r["job"] for r in results] == ids  # SPOOL_JOB_ID is each attempt's own
    assert [r["count"] for r in results] == [1, 2, 3, 4]  # module state lives on (documented)
    assert {r["stdin"] for r in results} == {"/dev/null"}
    for job_id, result in zip(ids, results, strict=True):
        log = (spool / "logs" / f"{job_id}.log").read_text()
        assert log.startswith(f"=== spool: attempt 1 of job {job_id} (whoami)"), log
        assert log.count("=== spool: attempt") == 1
        assert f"attempt of {job_id} in {result['pid']}\n" in log


def test_isolation_fork_gives_each_attempt_a_fresh_fork(tmp_path):
    spool = pool_spool(tmp_path, 'isolation = "fork"\n')
    ids = [submit(spool, "whoami") for _ in range(3)]
    drain(spool)
    results = [outcome(spool, job_id)["result"] for job_id in ids]
    assert len({r["pid"] for r in results}) == 3
    assert [r["count"] for r in results] == [1, 1, 1]


def test_a_child_is_replaced_after_max_jobs_per_child_attempts(tmp_path):
    spool = pool_spool(tmp_path, "max_jobs_per_child = 2\n")
    ids = [submit(spool, "whoami") for _ in range(5)]
    drain(spool)
    found = pids(spool, ids)
    assert found[0] == found[1] != found[2] == found[3] != found[4], found
    assert len(set(found)) == 3


def test_a_child_past_max_child_rss_bytes_is_replaced(tmp_path):
    spool = pool_spool(tmp_path, "max_child_rss_bytes = 1048576\n")  # any Python is past it
    ids = [submit(spool, "whoami") for _ in range(3)]
    drain(spool)
    assert len(set(pids(spool, ids))) == 3


@pytest.mark.parametrize("job, error", [("crash", "exit code 7"), ("kill_self", "exit code 137"),
                                        ("exits", "exit code 1")])
def test_a_child_that_dies_or_exits_fails_its_attempt_and_is_replaced(tmp_path, job, error):
    spool = pool_spool(tmp_path)
    first = submit(spool, "whoami")
    failing = submit(spool, job)
    after = submit(spool, "whoami")
    drain(spool)
    dead = read_job(spool, "dead", failing)
    assert dead["outcome"] == "failed" and dead["error"] == error, dead
    before, later = pids(spool, [first, after])
    assert before != later and not alive(before)
    if job == "exits":  # its traceback is in the job's log, as with a fresh fork
        assert "SystemExit" in (spool / "logs" / f"{failing}.log").read_text()


def test_a_timeout_kills_the_childs_group_and_the_next_attempt_gets_a_new_child(tmp_path):
    spool = pool_spool(tmp_path)
    marker = tmp_path / "nap.pids"
    napping = submit(spool, "nap", {"seconds": 300, "marker": str(marker)})
    after = submit(spool, "whoami")
    drain(spool)
    assert read_job(spool, "dead", napping)["outcome"] == "timeout"
    child, grandchild = map(int, marker.read_text().split())
    assert not alive(child) and not alive(grandchild)
    assert pids(spool, [after])[0] != child


def test_a_cancel_kills_the_childs_group_and_the_pool_replaces_it(tmp_path):
    spool = pool_spool(tmp_path, config=POOL.replace('timeout = "1s"', 'timeout = "300s"'))
    marker = tmp_path / "nap.pids"
    napping = submit(spool, "nap", {"seconds": 300, "marker": str(marker)})
    worker = start_cli(spool, "worker", "--capacity", "1", log=tmp_path / "worker.log")
    try:
        wait_until(marker.exists, 30, "the attempt to start")
        child, grandchild = map(int, marker.read_text().split())
        assert spool_cli(spool, "cancel", napping).returncode == 0
        wait_until(lambda: (spool / "done" / f"{napping}.json").exists(), 30, "the cancel")
        assert read_job(spool, "done", napping)["outcome"] == "cancelled"
        wait_until(lambda: not alive(child) and not alive(grandchild), 10, "the group to die")
        after = submit(spool, "whoami")
        wait_until(lambda: (spool / "done" / f"{after}.json").exists(), 30, "the next job")
        assert pids(spool, [after])[0] != child
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)


@pytest.mark.parametrize("job", ["leave_process", "leave_thread"])
def test_an_attempt_that_leaves_something_behind_retires_its_child(tmp_path, job):
    spool = pool_spool(tmp_path)
    marker = tmp_path / "left.pid"
    leaving = submit(spool, job, {"marker": str(marker)} if job == "leave_process" else {})
    after = submit(spool, "whoami")
    drain(spool)
    assert outcome(spool, leaving)["outcome"] == "completed"
    child = pids(spool, [leaving])[0]
    assert pids(spool, [after])[0] != child and not alive(child)
    if job == "leave_process":  # the leftover went with the child's group
        assert not alive(int(marker.read_text()))


def test_an_attempt_cannot_change_the_next_ones_directory_umask_or_environment(tmp_path):
    spool = pool_spool(tmp_path)
    first = submit(spool, "whoami")
    away = submit(spool, "chdir_away")
    after = submit(spool, "whoami")
    drain(spool)
    child = pids(spool, [away])[0]
    before, result = outcome(spool, first)["result"], outcome(spool, after)["result"]
    assert result["pid"] == child and result["cwd"] == before["cwd"]
    assert result["umask"] == before["umask"] and result["left_over"] is None
    assert result["spool_job"] == "whoami"


def test_a_child_holds_none_of_its_workers_descriptors(tmp_path):
    spool = pool_spool(tmp_path)
    ids = [submit(spool, "descriptors") for _ in range(2)]
    drain(spool)
    for job_id in ids:
        fds = outcome(spool, job_id)["result"]["fds"]
        extra = {fd: target for fd, target in fds.items() if int(fd) > 2}
        # its socket to the worker, its own /dev/null and working directory (kept to reset
        # each attempt's), and the descriptor that listed /proc/self/fd
        own = ("socket:", "/proc/", "/dev/null", os.getcwd())
        assert all(target.startswith(own) for target in extra.values()), fds
        assert len(extra) <= 4, fds
        assert not any(str(spool) in target for target in fds.values()), fds
        assert fds["1"].startswith("pipe:") and fds["1"] == fds["2"]


def test_sigterm_lets_the_running_attempt_end_then_closes_every_child(tmp_path):
    spool = pool_spool(tmp_path, config=POOL.replace('timeout = "1s"', 'timeout = "300s"'))
    marker = tmp_path / "nap.pids"
    napping = submit(spool, "nap", {"seconds": 1, "marker": str(marker)})
    worker = start_cli(spool, "worker", "--capacity", "2", log=tmp_path / "worker.log")
    wait_until(marker.exists, 30, "the attempt to start")
    children = children_of(worker.pid)
    assert int(marker.read_text().split()[0]) in children and len(children) >= 2  # + a spare
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert read_job(spool, "done", napping)["outcome"] == "completed"  # drained, not stopped
    wait_until(lambda: not any(alive(pid) for pid in children), 10, "the children to exit")


def test_children_die_with_a_killed_worker(tmp_path):
    spool = pool_spool(tmp_path, config=POOL.replace('timeout = "1s"', 'timeout = "300s"'))
    marker = tmp_path / "nap.pids"
    submit(spool, "nap", {"seconds": 300, "marker": str(marker)})
    worker = start_cli(spool, "worker", "--capacity", "2", log=tmp_path / "worker.log")
    wait_until(marker.exists, 30, "the attempt to start")
    children = children_of(worker.pid)
    worker.kill()
    worker.wait(10)
    grandchild = int(marker.read_text().split()[1])
    try:
        wait_until(lambda: not any(alive(pid) for pid in children), 10,
                   "the children to die with the worker")
    finally:  # the attempt's subprocess lives until a recovery (tested below): not past us
        os.kill(grandchild, signal.SIGKILL)


def test_isolation_is_checked(tmp_path):
    spool = pool_spool(tmp_path)
    (spool / "spool.toml").write_text(POOL + '\n[jobs.cmd]\ncommand = ["true"]\n'
                                      'isolation = "pool"\n')
    result = spool_cli(spool, "validate")
    assert result.returncode == 2 and "jobs.cmd.isolation" in result.stderr, result.stderr
    (spool / "spool.toml").write_text(POOL.replace("[defaults]\n",
                                                   '[defaults]\nisolation = "thread"\n'))
    result = spool_cli(spool, "validate")
    assert result.returncode == 2 and "defaults.isolation" in result.stderr, result.stderr


def test_a_big_argument_reaches_a_pool_child_whole(tmp_path):
    from spool import Spool

    spool = pool_spool(tmp_path, config=POOL + '\n[jobs.size]\nhandler = "poolfns:size"\n')
    text = "é" * 300_000  # many socket buffers' worth
    job_id = Spool(spool, host="test").submit("size", {"text": text})
    drain(spool)
    assert outcome(spool, job_id)["result"] == len(text)


def test_a_closed_reply_socket_whose_number_comes_back_as_an_output_pipe(tmp_path):
    """A crashed child's socket was still registered with the loop when its number came
    back as the next attempt's output pipe: registering the pipe raised KeyError out of the
    loop and the worker exited, returning its jobs."""
    spool = pool_spool(tmp_path)
    for capacity in (2, 3):
        ids = [submit(spool, "sleep", {"seconds": 0.3}), submit(spool, "crash"),
               submit(spool, "whoami"), submit(spool, "crash"), submit(spool, "whoami")]
        drain(spool, capacity)
        assert [outcome(spool, job_id)["outcome"] for job_id in ids] == \
            ["completed", "failed", "completed", "failed", "completed"]


def test_signal_handlers_timers_and_mask_do_not_reach_the_next_attempt(tmp_path):
    spool = pool_spool(tmp_path)
    first, after = submit(spool, "disturb_signals"), submit(spool, "signal_state")
    drain(spool)
    state = outcome(spool, after)["result"]
    assert state["pid"] == outcome(spool, first)["result"]["pid"]  # the same warm child
    assert state["usr1"] == str(signal.SIG_DFL) and state["alarm"] == 0, state
    assert state["blocked"] == [], state


def test_a_handler_that_closes_the_pools_descriptors_still_completes(tmp_path):
    """It closed the child's socket to the worker: the child could not report, exited 1, and
    an attempt that succeeded was recorded as failed (and run again where attempts are left)."""
    spool = pool_spool(tmp_path)
    closing, after = submit(spool, "close_descriptors"), submit(spool, "whoami")
    drain(spool)
    job = outcome(spool, closing)
    assert job["outcome"] == "completed" and job["result"]["pid"] > 0, job
    assert outcome(spool, after)["outcome"] == "completed"


def test_a_thread_threading_does_not_know_retires_the_child(tmp_path):
    """A raw thread (a C library's) left behind kept writing into the next attempt's log."""
    spool = pool_spool(tmp_path)
    leaving, after = submit(spool, "leave_raw_thread"), submit(spool, "whoami")
    drain(spool)
    child = outcome(spool, leaving)["result"]["pid"]
    assert outcome(spool, after)["result"]["pid"] != child
    assert "chatter" not in (spool / "logs" / f"{after}.log").read_text()


def test_a_thread_joined_before_the_handler_returns_leaves_nothing_behind(tmp_path):
    """A joined thread often still shows in /proc/self/task for a moment: counted as left
    behind, it retired the child after some four attempts in ten."""
    spool = pool_spool(tmp_path)
    ids = [submit(spool, "joined_thread") for _ in range(6)]
    drain(spool)
    assert len(set(pids(spool, ids))) == 1


@pytest.mark.parametrize("isolation", ["pool", "fork"])
def test_output_a_c_library_buffered_lands_in_its_own_attempts_log(tmp_path, monkeypatch,
                                                                  isolation):
    """C's stdio buffer was never flushed: a pool child carried it into a later attempt's log
    (a fresh fork lost it at os._exit)."""
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # else C's stdout is unbuffered too
    spool = pool_spool(tmp_path, f'isolation = "{isolation}"\n')
    first = submit(spool, "c_printf", {"text": "one from C"})
    second = submit(spool, "c_printf", {"text": "two from C", "flush": True})
    drain(spool)
    if isolation == "pool":
        assert len(set(pids(spool, [first, second]))) == 1
    logs = [(spool / "logs" / f"{job_id}.log").read_text() for job_id in (first, second)]
    assert "one from C" in logs[0] and "one from C" not in logs[1], logs
    assert "two from C" in logs[1], logs


def test_an_attempt_that_lowers_a_limit_or_the_priority_retires_its_child(tmp_path):
    """A lowered hard limit or a nicer priority cannot be undone by the child: later attempts
    ran under them (and failed, short of descriptors, with no sign why)."""
    spool = pool_spool(tmp_path)
    lowering, after = submit(spool, "lower_limits"), submit(spool, "whoami")
    drain(spool)
    assert outcome(spool, after)["result"]["pid"] != outcome(spool, lowering)["result"]["pid"]


@pytest.mark.parametrize("isolation", ["pool", "fork"])
def test_a_handler_that_closes_sys_stdout_completes_and_its_process_stays_out_of_the_worker(
        tmp_path, isolation):
    """With a fresh fork, flushing the closed sys.stdout raised in the child's last `finally`
    before os._exit: the child returned into the worker's code and went on as a second
    worker, settling its own job as "cannot start" and claiming others."""
    spool = pool_spool(tmp_path, f'isolation = "{isolation}"\n')
    closing, after = submit(spool, "close_stdout"), submit(spool, "whoami")
    drain(spool)
    job = outcome(spool, closing)
    assert job["outcome"] == "completed" and job["result"]["pid"] > 0, job
    assert outcome(spool, after)["outcome"] == "completed"
    assert "closing stdout" in (spool / "logs" / f"{closing}.log").read_text()
    assert "cannot start" not in (spool / "logs" / f"{closing}.log").read_text()


def test_a_forked_process_returning_from_a_handler_never_serves_the_pool(tmp_path):
    spool = pool_spool(tmp_path)
    forking, after = submit(spool, "fork_returns"), submit(spool, "whoami")
    drain(spool)
    job = outcome(spool, forking)
    assert job["outcome"] == "completed", job  # the handler's own result, or the fork's
    assert outcome(spool, after)["outcome"] == "completed"
    log = (spool / "logs" / f"{after}.log").read_text()
    assert log.count("=== spool: attempt") == 1 and log.count("attempt of") == 1, log


def test_an_attempts_subprocess_goes_when_its_worker_was_killed(tmp_path):
    """The pool child dies with its worker (PDEATHSIG), but a subprocess in its group lived
    on: the next worker found the recorded task dead and stopped nothing, so the job ran again
    beside it."""
    spool = pool_spool(tmp_path)
    marker = tmp_path / "grandchild.pid"
    job_id = submit(spool, "nap_with_grandchild", {"marker": str(marker)})
    worker = start_cli(spool, "worker", "--capacity", "1", log=tmp_path / "worker.log")
    second, grandchild = None, 0
    try:
        wait_until(marker.exists, 30, "the attempt to start")
        grandchild = int(marker.read_text())
        ledger = spool / "hosts" / "test.json"
        wait_until(lambda: json.loads(ledger.read_text())["running"].get(job_id, {})
                   .get("task_pid"), 30, "the task to be recorded")
        worker.kill()
        worker.wait(10)
        marker.unlink()
        second = start_cli(spool, "worker", "--capacity", "1", log=tmp_path / "worker2.log")
        wait_until(marker.exists, 30, "the job to run again")
        assert not alive(grandchild)
    finally:
        for process in (worker, second):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(30)
        for pid in (grandchild, int(marker.read_text()) if marker.exists() else 0):
            if pid and alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_an_attempt_taken_from_a_stalled_worker_stops_before_the_job_runs_again(tmp_path):
    spool = pool_spool(tmp_path)
    out, lock = tmp_path / "runs.txt", tmp_path / "run.lock"
    submit(spool, "overlap", {"lock": str(lock), "out": str(out)})

    def starts() -> list[int]:
        text = out.read_text() if out.exists() else ""
        return [int(line.split()[1]) for line in text.splitlines() if line.startswith("start")]

    worker = start_cli(spool, "worker", "--capacity", "2", log=tmp_path / "worker.log")
    try:
        wait_until(lambda: len(starts()) == 1, 30, "the first run")
        worker.send_signal(signal.SIGSTOP)
        wait_until(lambda: "reaped" in spool_cli(spool, "reap", "--once", host="b").stdout,
                   60, "host b to reap the job")
        worker.send_signal(signal.SIGCONT)
        wait_until(lambda: not alive(starts()[0]), 30, "the first run to be stopped")
        wait_until(lambda: len(starts()) == 2, 30, "the job to run again")
        assert "overlap" not in out.read_text() and worker.poll() is None
    finally:
        worker.send_signal(signal.SIGCONT)
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)


def test_an_ended_attempt_is_forgotten_after_a_failed_ledger_save(tmp_path, monkeypatch):
    """The ended attempts were cleared before the ledger was saved: a failed save (a full
    disk) left the entry on disk, and as its task — a warm pool child — lives on, pruning kept
    it: the host's slots stayed taken by a finished job and nothing more was claimed."""
    import errno
    import time

    from spool import Spool
    from spool import ledger as ledger_module
    from spool.worker import Worker

    sp = Spool(pool_spool(tmp_path), host="test")
    worker = Worker(sp, capacity=1)
    save = ledger_module.replace_file
    full = False

    def replace_file(*args, **kwargs):
        if full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(*args, **kwargs)

    def step_until(predicate, what: str) -> None:
        deadline = time.monotonic() + 20
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            worker.step(sp.clock())
            time.sleep(0.005)

    monkeypatch.setattr(ledger_module, "replace_file", replace_file)
    worker.start(sp.clock())
    try:
        first = sp.submit("whoami")
        step_until(lambda: first in worker.running, "the first job to start")
        worker.sync_ledger()  # its task, the pool child, is recorded
        full = True
        step_until(lambda: (sp.store.layout.root / "done" / f"{first}.json").exists(),
                   "the first job to finish")
        step_until(lambda: not worker.attempts.running, "the attempt to be collected")
        worker.step(sp.clock())  # a ledger pass that cannot be saved
        full = False
        second = sp.submit("whoami")
        step_until(lambda: (sp.store.layout.root / "done" / f"{second}.json").exists(),
                   "the second job to run")
    finally:
        worker.shutdown(sp.clock())


def test_a_child_holds_no_descriptor_of_its_worker_above_a_lowered_soft_limit(tmp_path):
    """A child closed the worker's descriptors up to the soft RLIMIT_NOFILE only: once the
    limit was lowered on a running worker (prlimit), a flocked processing file numbered above
    it stayed open in every child forked after."""
    import resource

    spool = pool_spool(tmp_path, "max_jobs_per_child = 1\n", POOL.replace('timeout = "1s"',
                                                                         'timeout = "300s"'))
    markers = [tmp_path / f"nap{i}.pids" for i in range(4)]
    short = [submit(spool, "nap", {"seconds": 1, "marker": str(marker)})
             for marker in markers[:3]]
    worker = start_cli(spool, "worker", "--capacity", "4", log=tmp_path / "worker.log")
    try:
        wait_until(lambda: all(marker.exists() for marker in markers[:3]), 30, "short naps")
        # claimed while they run, its processing file is numbered above theirs
        submit(spool, "nap", {"seconds": 300, "marker": str(markers[3])})
        wait_until(markers[3].exists, 30, "the long nap to start")
        wait_until(lambda: all((spool / "done" / f"{job_id}.json").exists()
                               for job_id in short), 30, "the short naps to end")
        long_path = next((spool / "processing" / "test").iterdir())

        def held(pid: int) -> list[int]:
            found = []
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == str(long_path):
                        found.append(int(fd))
                except OSError:
                    pass
            return found

        [number] = held(worker.pid)
        _, hard = resource.prlimit(worker.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(worker.pid, resource.RLIMIT_NOFILE, (number, hard))
        before = children_of(worker.pid)
        after = submit(spool, "whoami")
        wait_until(lambda: (spool / "done" / f"{after}.json").exists(), 30, "a job under it")
        forked = children_of(worker.pid) - before
        assert forked, "no child was forked under the lowered limit"
        assert not [pid for pid in forked if held(pid)]
    finally:
        worker.send_signal(signal.SIGINT)
        worker.send_signal(signal.SIGINT)
        worker.wait(30)


def test_an_idle_child_stopped_with_sigstop_is_replaced_not_handed_an_attempt(tmp_path):
    spool = pool_spool(tmp_path)
    worker = start_cli(spool, "worker", "--capacity", "1", log=tmp_path / "worker.log")
    try:
        first = submit(spool, "whoami")
        wait_until(lambda: (spool / "done" / f"{first}.json").exists(), 30, "the first job")
        wait_until(lambda: len(children_of(worker.pid)) >= 2, 30, "an idle child and a spare")
        stopped = children_of(worker.pid)
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        after = submit(spool, "whoami")  # its timeout is an hour
        wait_until(lambda: (spool / "done" / f"{after}.json").exists(), 30, "the next job")
        assert pids(spool, [after])[0] not in stopped
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
