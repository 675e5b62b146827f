"""Workload 3, enqueue → start with an idle worker: spool (`spool worker`, capacity 4, a
handler that stamps the time it starts) against RQ's SimpleWorker on a private redis-server
(the same stamping function).

Each sample is the time from just before `submit` / `enqueue` to the stamp the job writes when
it starts, the worker idle in between (20 ms pause after each sample). Both workers stay up for
the whole workload and take turns in batches (spool, RQ, spool, RQ …); a first sample on each
side is a warm-up, dropped. p50 and p99 are over all of a side's samples; the ratio is RQ's
delay over spool's (above 1: spool starts jobs sooner).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import subprocess
import time
from pathlib import Path
from collections.abc import Callable, Iterator

import peer_tasks
from harness import HERE, SPOOL_CLI, Row, fresh, make
from peers import PEER_PYTHON, PEERS_VENV, peer_env, redis_server, why_not
from spool import Spool  # importable once harness set the path

SPOOL = "spool worker (idle), handler"
NFS_WORKLOAD = "nfs enqueue (mount A) -> start (worker on mount B)"
POLL_S = 0.5  # bench.py's spool.toml
RQ = "rq SimpleWorker (idle)"
WORKLOAD = "enqueue -> start, idle worker"


def run(base: Path, samples: int, rounds: int, skip_peers: bool) -> list[Row]:
    reason = "--no-peers" if skip_peers else why_not("rq")
    if reason:
        print(f"  skip rq: {reason}")
    per_round = max(1, samples // rounds)
    got: dict[str, list[float]] = {SPOOL: [], RQ: []}
    with contextlib.ExitStack() as stack:
        spool_sample = stack.enter_context(spool_side(fresh(base / "spool-lat")))
        rq_sample = None if reason else stack.enter_context(rq_side(fresh(base / "rq-lat")))
        spool_sample(1)
        if rq_sample:
            rq_sample(1)
        for _ in range(rounds):
            got[SPOOL] += spool_sample(per_round)
            if rq_sample:
                got[RQ] += rq_sample(per_round)
    out = []
    for q in (50, 99):
        mine = percentile(got[SPOOL], q)
        theirs = percentile(got[RQ], q) if got[RQ] else None
        out.append(Row(WORKLOAD, f"{SPOOL} p{q}", "ms", [mine], theirs / mine if theirs else None,
                       f"{RQ} p{q}" if theirs else ""))
        if theirs:
            out.append(Row(WORKLOAD, f"{RQ} p{q}", "ms", [theirs], 1.0, f"{RQ} p{q}",
                           extra={"best_spool": SPOOL, "spool_over_this": theirs / mine}))
    return out


def percentile(values: list[float], q: int) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * q / 100) - 1)]


def nfs_run(on_a: Path, on_b: Path, local: Path, samples: int) -> list[Row]:
    """Enqueue through mount A → start by an idle worker on mount B. inotify never sees another
    client's files, so a worker on NFS polls: the bound is `poll` plus one listing of pending/
    (both measured here), whatever the view holds."""
    # a random pause between samples: submits in step with the worker's polls would all wait
    # a whole poll, or none of it
    with spool_side(on_b, local, submit_root=on_a / on_b.name / "spool",
                    pause=lambda: random.uniform(0.02, POLL_S)) as sample:
        sample(1)
        got = sample(samples)
        pending = on_b / "spool" / "pending"
        listings = []
        for _ in range(5):
            start = time.perf_counter()
            os.listdir(pending)
            listings.append((time.perf_counter() - start) * 1000)
    bound = POLL_S * 1000 + sorted(listings)[2]
    name = f"bound: poll ({POLL_S:g} s) + one listing of pending/"
    out = [Row(NFS_WORKLOAD, f"{SPOOL} p{q}", "ms", [percentile(got, q)],
               bound / percentile(got, q), name) for q in (50, 99)]
    return [*out, Row(NFS_WORKLOAD, name, "ms", [bound], 1.0, name)]


@contextlib.contextmanager
def spool_side(where: Path, local: Path | None = None, submit_root: Path | None = None,
               pause: Callable[[], float] = lambda: 0.02) -> Iterator:
    """An idle worker on a spool in `where`; jobs submitted through `submit_root` (the same spool
    through another mount) when given; the stamps and the handler's module in `local`."""
    local = local or where
    sp = make(where / "spool")
    submitter = sp if submit_root is None else Spool(submit_root, host="submitter")
    # bench.py's `stamp` job type runs the handler benchmarks_stamp:stamp
    (local / "benchmarks_stamp.py").write_text("from peer_tasks import stamp  # noqa: F401\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(local), str(HERE)]))
    worker = subprocess.Popen([*SPOOL_CLI, "--spool", str(sp.path), "--host", "bench",
                               "worker", "--capacity", "4"], stderr=subprocess.DEVNULL, env=env)
    path = local / "stamps.txt"

    def sample(n: int) -> list[float]:
        out = []
        for _ in range(n):
            seen = len(peer_tasks.stamps(path))
            start = time.time()
            submitter.submit("stamp", {"path": str(path)})
            out.append(peer_tasks.delay_ms(path, seen, start))
            time.sleep(pause())
        return out

    try:
        yield sample
    finally:
        worker.terminate()
        worker.wait()


@contextlib.contextmanager
def rq_side(where: Path) -> Iterator:
    with redis_server(where) as url:
        worker = subprocess.Popen([str(PEERS_VENV / "bin" / "rq"), "worker", "--url", url,
                                   "--worker-class", "rq.worker.SimpleWorker", "bench"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env=peer_env(), cwd=HERE)
        path = where / "stamps.txt"

        def sample(n: int) -> list[float]:
            out = subprocess.run([str(PEER_PYTHON), str(HERE / "peer_rq.py"), "latency", url,
                                  str(n), str(path)], check=True, capture_output=True,
                                 text=True, env=peer_env(), cwd=HERE).stdout
            return json.loads(out)

        try:
            yield sample
        finally:
            worker.terminate()
            worker.wait()
