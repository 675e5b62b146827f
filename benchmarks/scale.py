"""Workloads 4 and 5: how spool scales with what waits in `pending/`, and what enqueueing costs
next to the bare file operations it is made of.

4. `worker --burst --capacity 1` draining the same number of due `true` jobs (default 1,000)
   from a spool where they are all there is, and from one where another 99,000 jobs wait with a
   DUE tomorrow (pending: 100,000): the ratio big/small is 1 when a worker's cost per job does
   not grow with the length of `pending/`. Both spools are filled once (untimed); each round
   submits the due jobs again.
5. `submit_many` and `submit` (durable=false, the API in this process) against the floor: a
   bare Python loop of create + write + close + rename of a small file in the same filesystem
   (bench.py's `floor`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench import fill, floor, submit_rate
from harness import SPOOL_CLI, Contender, Row, fresh, make, rows, timed

SMALL = "spool worker --burst from {due:,} pending"
BIG = "spool worker --burst, {due:,} due of {pending:,} pending"
FLOOR = "create+write+rename floor"


def burst_at_scale(base: Path, due: int, pending: int, rounds: int) -> list[Row]:
    small = make(fresh(base / "small") / "spool")
    big = make(fresh(base / "big") / "spool")
    started = time.perf_counter()
    fill(big, pending - due, future=True)
    print(f"  filled {pending - due:,} future jobs in {time.perf_counter() - started:.0f} s")

    def drain(sp) -> float:
        fill(sp, due)
        before = len(os.listdir(sp.path / "done"))
        seconds = timed([*SPOOL_CLI, "--spool", str(sp.path), "--host", "bench", "worker",
                         "--burst", "--capacity", "1"])
        if len(os.listdir(sp.path / "done")) - before != due:
            raise RuntimeError(f"the burst worker did not drain {due} jobs in {sp.path}")
        return due / seconds

    small_name = SMALL.format(due=due)
    found = [Contender(small_name, lambda: drain(small), "capacity 1, `true` jobs"),
             Contender(BIG.format(due=due, pending=pending), lambda: drain(big),
                       "the rest due tomorrow")]
    return rows("burst drain at scale", "jobs/s", found, rounds, small_name)


def enqueue(base: Path, n: int, rounds: int) -> list[Row]:
    found = [Contender(FLOOR, lambda: floor(fresh(base / "floor"), n), "bare Python loop"),
             Contender("spool submit_many, durable=false",
                       lambda: submit_rate(fresh(base / "many"), n, False, True),
                       "batches of 500"),
             Contender("spool submit, durable=false",
                       lambda: submit_rate(fresh(base / "one"), n, False, False))]
    return rows("enqueue", "jobs/s", found, rounds, FLOOR)
