"""Workload 2, Python no-op jobs drained: spool's handler jobs against huey (SqliteHuey and
FileHuey, a consumer with threads), RQ (SimpleWorker and the forking Worker, burst mode, on a
private redis-server) and the bare Python fork + waitpid floor.

Every queue gets all its jobs first (untimed); the clock covers the worker process from its
start (interpreter and imports included, for every contender alike) to the last job's end.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

from harness import HERE, Contender, Row, fresh, python_fork_floor, rows, spool_drain, timed
from peers import PEER_PYTHON, PEERS_VENV, peer_env, redis_server, why_not

FLOOR = "python fork+waitpid loop"


def run(base: Path, n: int, rounds: int, workers: int, skip_peers: bool) -> list[Row]:
    with contextlib.ExitStack() as stack:
        found = contenders(base, n, workers, skip_peers, stack)
        return rows("python no-op jobs, drain", "jobs/s", found, rounds, FLOOR)


def contenders(base: Path, n: int, workers: int, skip_peers: bool,
               stack: contextlib.ExitStack) -> list[Contender]:
    out = [Contender(FLOOR, lambda: python_fork_floor(n), "floor, timed inside python"),
           Contender("spool worker --burst, capacity 1",
                     lambda: spool_drain(fresh(base / "s1"), "noop", n, 1),
                     "handler spool.demo:noop, the handler pool"),
           Contender(f"spool worker --burst, capacity {workers}",
                     lambda: spool_drain(fresh(base / "sw"), "noop", n, workers)),
           Contender(f"spool worker --burst, capacity {workers}, isolation fork",
                     lambda: spool_drain(fresh(base / "sf"), "noop_fork", n, workers),
                     "a fork per attempt")]
    for peer in ("huey", "rq"):
        reason = "--no-peers" if skip_peers else why_not(peer)
        if reason:
            print(f"  skip {peer}: {reason}")
            continue
        if peer == "huey":
            for kind in ("sqlite", "file"):
                out.append(Contender(
                    f"huey {kind.capitalize()}Huey, {workers} threads",
                    lambda kind=kind: huey_drain(fresh(base / f"huey-{kind}"), kind, n, workers),
                    "huey_consumer -k thread, periodic off"))
        else:
            url = stack.enter_context(redis_server(fresh(base / "redis")))
            for cls in ("SimpleWorker", "Worker"):
                out.append(Contender(f"rq {cls} --burst",
                                     lambda cls=cls, url=url: rq_drain(url, cls, n),
                                     "no fork per job" if cls == "SimpleWorker"
                                     else "a fork per job"))
    return out


def peer(*args: str) -> str:
    """Run a peer helper script with the peers' interpreter; its stdout."""
    return subprocess.run([str(PEER_PYTHON), *args], check=True, capture_output=True,
                          text=True, env=peer_env(), cwd=HERE).stdout


def huey_drain(where: Path, kind: str, n: int, workers: int) -> float:
    script = str(HERE / "peer_huey.py")
    peer(script, "enqueue", kind, str(where), str(n))
    return n / timed([str(PEER_PYTHON), script, "consume", kind, str(where), str(n),
                      str(workers)], env=peer_env(), cwd=HERE)


def rq_drain(url: str, worker_class: str, n: int) -> float:
    script = str(HERE / "peer_rq.py")
    subprocess.run(["redis-cli", "-u", url, "flushdb"], check=True, capture_output=True)
    peer(script, "enqueue", url, str(n))
    seconds = timed([str(PEERS_VENV / "bin" / "rq"), "worker", "--burst", "--url", url,
                     "--worker-class", f"rq.worker.{worker_class}", "bench"],
                    env=peer_env(), cwd=HERE)
    finished = int(peer(script, "count", url))
    if finished != n:
        raise RuntimeError(f"rq {worker_class} finished {finished} of {n} jobs")
    return n / seconds

