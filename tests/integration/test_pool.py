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

from conftest import CONFIG, make_spool, read_job, spool_cli, start_cli, wait_until

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
"""


def pool_spool(tmp_path: Path, extra_defaults: str = "", config: str = POOL) -> Path:
    return make_spool(tmp_path / "spool", config.replace(
        "[defaults]\n", "[defaults]\n" + extra_defaults, 1))


def submit(spool: Path, job: str, args: dict | None = None) -> str:
    result = spool_cli(spool, "submit", job, json.dumps(args or {}))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def drain(spool: Path) -> None:
    result = spool_cli(spool, "worker", "--burst", "--capacity", "1", timeout=120)
    assert result.returncode == 0, result.stderr


def outcome(spool: Path, job_id: str) -> dict:
    for state in ("done", "dead"):
        if (spool / state / f"{job_id}.json").exists():
            return read_job(spool, state, job_id)
    raise AssertionError(f"{job_id} is not finished")


def pids(spool: Path, ids: list[str]) -> list[int]:
    return [outcome(spool, job_id)["result"]["pid"] for job_id in ids]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


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
    wait_until(lambda: not any(alive(pid) for pid in children), 10,
               "the children to die with the worker")


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
