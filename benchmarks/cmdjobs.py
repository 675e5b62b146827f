"""Workload 1, `true` command jobs drained: spool's burst worker against task-spooler, nq and
the bare fork+exec floor.

Every queue gets all its jobs first (untimed), then the clock runs from the moment it may
start until the last job has ended. task-spooler and nq start each job as soon as it is queued,
so their queue is held by a first job that blocks on a FIFO until the clock starts.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from harness import Contender, Row, bash_exec_floor, fresh, python_exec_floor, rows, spool_drain
from peers import why_not

FLOOR = "bash fork+exec /bin/true loop"


def run(base: Path, n: int, rounds: int, skip_peers: bool) -> list[Row]:
    return rows("true command jobs, drain", "jobs/s", contenders(base, n, skip_peers), rounds,
                FLOOR)


def contenders(base: Path, n: int, skip_peers: bool) -> list[Contender]:
    out = [Contender(FLOOR, lambda: bash_exec_floor(n),
                     "floor, timed inside bash"),
           Contender("python fork+exec /bin/true loop", lambda: python_exec_floor(n),
                     "floor, timed inside python"),
           Contender("spool worker --burst, capacity 1",
                     lambda: spool_drain(fresh(base / "s1"), "true", n, 1)),
           Contender("spool worker --burst, capacity 4",
                     lambda: spool_drain(fresh(base / "s4"), "true", n, 4))]
    for name, run, note in (("tsp", lambda: tsp_drain(fresh(base / "tsp"), n),
                             "task-spooler, 1 slot, output to a file per job"),
                            ("nq", lambda: nq_drain(fresh(base / "nq"), n),
                             "nq, one queue, output to a file per job")):
        reason = "--no-peers" if skip_peers else why_not(name)
        if reason:
            print(f"  skip {name}: {reason}")
            continue
        out.append(Contender(name, run, note))
    return out


def blocker(where: Path) -> Path:
    """A FIFO: a job that reads it blocks until `release` opens it for writing."""
    fifo = where / "hold"
    os.mkfifo(fifo)
    return fifo


def release(fifo: Path) -> float:
    """Let the blocked first job end; returns the clock's start."""
    start = time.perf_counter()
    os.close(os.open(fifo, os.O_WRONLY))
    return start


def tsp_drain(where: Path, n: int) -> float:
    """Jobs per second of a private task-spooler server (1 slot) over `n` queued `true` jobs;
    each keeps its output in a file under `where`, task-spooler's default."""
    env = dict(os.environ, TS_SOCKET=str(where / "socket"), TMPDIR=str(where),
               TS_MAXCONN=str(n + 16), TS_MAXFINISHED=str(n + 16), TS_SLOTS="1")
    fifo = blocker(where)
    try:
        subprocess.run(["tsp", "cat", str(fifo)], env=env, check=True, capture_output=True)
        last = ""
        for _ in range(n):
            last = subprocess.run(["tsp", "true"], env=env, check=True, capture_output=True,
                                  text=True).stdout.strip()
        start = release(fifo)
        subprocess.run(["tsp", "-w", last], env=env, check=True, capture_output=True)
        seconds = time.perf_counter() - start
    finally:
        subprocess.run(["tsp", "-K"], env=env, capture_output=True)
    return n / seconds


def nq_drain(where: Path, n: int) -> float:
    """Jobs per second of nq over `n` queued `true` jobs in one queue directory (each job is a
    process that waits for the locks of the jobs before it, then runs)."""
    env = dict(os.environ, NQDIR=str(where / "queue"))
    fifo = blocker(where)
    subprocess.run(["nq", "-q", "cat", str(fifo)], env=env, check=True)
    for _ in range(n):
        subprocess.run(["nq", "-q", "true"], env=env, check=True)
    start = release(fifo)
    subprocess.run(["nq", "-w"], env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    done = len([name for name in os.listdir(where / "queue") if name.startswith(",")])
    if done != n + 1:
        raise RuntimeError(f"nq left {done} job files for {n + 1} jobs in {where}")
    return n / seconds
