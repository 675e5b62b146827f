"""spool benchmarks: prints a table and writes JSON (benchmarks/results/<fs>.json).

    python benchmarks/bench.py --dir /dev/shm      # tmpfs
    python benchmarks/bench.py --dir .bench        # the local disk

Every enqueue figure is also given as a ratio to the floor measured in the same run on the
same filesystem: a bare Python loop of create, write and rename of a small file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, UTC
from pathlib import Path

from spool import Spool
from spool.layout import Layout

CONFIG = """
[defaults]
durable = {durable}
heartbeat = "2s"
lease = "10s"
poll = "0.5s"
[jobs.true]
command = ["true"]
[jobs.noop]
handler = "spool.demo:noop"
[jobs.noop_fork]
handler = "spool.demo:noop"
isolation = "fork"
[jobs.stamp]
handler = "benchmarks_stamp:stamp"
"""

STAMP = '''
import time
def stamp(path):
    with open(path, "a") as out:
        out.write(f"{time.time()}\\n")
'''


def make(root: Path, durable: bool = False) -> Spool:
    shutil.rmtree(root, ignore_errors=True)
    Layout(root).create()
    (root / "spool.toml").write_text(CONFIG.format(durable=str(durable).lower()))
    return Spool(root, host="bench")


def floor(where: Path, n: int) -> float:
    """Per second: create + write + close + rename of a small file, in pure Python."""
    d = where / "floor"
    shutil.rmtree(d, ignore_errors=True)
    (d / "tmp").mkdir(parents=True)
    (d / "dst").mkdir()
    body = b'{"id":"x","job":"noop","args":{}}\n' * 8
    start = time.perf_counter()
    for i in range(n):
        src = d / "tmp" / f"{i}.tmp"
        fd = os.open(src, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, body)
        os.close(fd)
        os.rename(src, d / "dst" / f"{i}.json")
    return n / (time.perf_counter() - start)


def submit_rate(where: Path, n: int, durable: bool, many: bool) -> float:
    sp = make(where / "sub", durable)
    start = time.perf_counter()
    if many:
        for i in range(0, n, 500):
            sp.submit_many([{"job": "noop", "args": {"i": j}} for j in range(i, min(n, i + 500))])
    else:
        for i in range(n):
            sp.submit("noop", {"i": i})
    return n / (time.perf_counter() - start)


def cli_seconds(root: Path, *args: str) -> tuple[float, float]:
    """(seconds, peak RSS MB) of one CLI command."""
    code = ("import resource,sys,time\nfrom spool.cli import main\nt=time.perf_counter()\n"
            "try:\n main(sys.argv[1:], standalone_mode=False)\nfinally:\n"
            " sys.stderr.write(f'{time.perf_counter()-t} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n')")
    result = subprocess.run([sys.executable, "-c", code, "--spool", str(root), *args],
                            capture_output=True, text=True)
    seconds, rss = result.stderr.strip().splitlines()[-1].split()
    return float(seconds), int(rss) / 1024


def fill(sp: Spool, n: int, future: bool = False) -> None:
    at = datetime.now(UTC) + timedelta(days=1) if future else None
    for i in range(0, n, 1000):
        sp.submit_many([{"job": "true", "at": at} for _ in range(min(1000, n - i))])


def throughput(where: Path, job: str, n: int, processes: int) -> float:
    sp = make(where / "tp")
    for i in range(0, n, 500):
        sp.submit_many([{"job": job} for _ in range(min(500, n - i))])
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "spool.cli", "--spool", str(sp.path),
                               "--host", "bench", "worker", "--burst", "--capacity", "4"],
                              stderr=subprocess.DEVNULL) for _ in range(processes)]
    for proc in procs:
        proc.wait()
    elapsed = time.perf_counter() - start
    assert len(os.listdir(sp.path / "done")) == n, "not every job finished"
    return n / elapsed


def latency(where: Path, n: int) -> tuple[float, float]:
    """p50 and p99 (ms) from submit to the handler's first line, with an idle worker."""
    sp = make(where / "lat")
    stamps = where / "stamps.txt"
    stamps.unlink(missing_ok=True)
    helper = where / "benchmarks_stamp.py"
    helper.write_text(STAMP)
    env = dict(os.environ, PYTHONPATH=f"{where}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    worker = subprocess.Popen([sys.executable, "-m", "spool.cli", "--spool", str(sp.path),
                               "--host", "bench", "worker", "--capacity", "4"],
                              stderr=subprocess.DEVNULL, env=env)
    time.sleep(1.0)
    samples = []
    try:
        for _ in range(n):
            seen = len(stamps.read_text().splitlines()) if stamps.exists() else 0
            t0 = time.time()
            sp.submit("stamp", {"path": str(stamps)})
            while (len(stamps.read_text().splitlines()) if stamps.exists() else 0) == seen:
                time.sleep(0.0005)
            samples.append((float(stamps.read_text().splitlines()[-1]) - t0) * 1000)
            time.sleep(0.02)
    finally:
        worker.terminate()
        worker.wait()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def claim_rate(where: Path, pending: int, claims: int) -> float:
    """Claims per second (claim rename + ledger write under the host lock)."""
    from spool.claim import PendingView, claim_due
    from spool.ledger import HostLedger

    sp = make(where / f"claim{pending}")
    fill(sp, pending)
    sp.store.layout.host_processing("bench").mkdir(parents=True)
    ledger = HostLedger(sp.store.layout, "bench", False)
    view = PendingView(sp.store)
    view.refresh(time.monotonic())
    now = datetime.now(UTC)
    start = time.perf_counter()
    for _ in range(claims):
        with ledger.locked(10**9) as book:
            for held in claim_due(sp.store, view, book, now, os.getpid(), 1):
                os.close(held.fd)
    return claims / (time.perf_counter() - start)


def worker_memory(where: Path, pending: int) -> float:
    """Peak RSS (MB) of a worker over `pending` jobs due tomorrow (memory.py: 1,000,000)."""
    from memory import worker_memory as measure

    sp = make(where / "mem")
    fill(sp, pending, future=True)
    return measure(sp.path)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="where to benchmark (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="spool-bench-", dir=args.dir))
    big = 10_000 if args.quick else 100_000
    n = 500 if args.quick else 3000
    results: dict[str, float] = {}
    try:
        results["floor_per_s"] = max(floor(base, n) for _ in range(3))
        results["submit_per_s"] = max(submit_rate(base, n, False, False) for _ in range(3))
        results["submit_many_per_s"] = max(submit_rate(base, n, False, True) for _ in range(3))
        results["submit_durable_per_s"] = submit_rate(base, n // 5, True, False)
        results["submit_many_durable_per_s"] = submit_rate(base, n // 5, True, True)
        sp = make(base / "big")
        fill(sp, big)
        results["status_s"], results["status_rss_mb"] = cli_seconds(sp.path, "status")
        results["ls_limit20_s"], results["ls_rss_mb"] = cli_seconds(
            sp.path, "ls", "pending", "--limit", "20")
        jobs = 300 if args.quick else 1500
        for job in ("true", "noop"):
            for procs in (1, 2):
                results[f"{job}_jobs_per_s_{procs}proc"] = throughput(base, job, jobs, procs)
        results["latency_p50_ms"], results["latency_p99_ms"] = latency(
            base, 50 if args.quick else 200)
        results["claim_per_s_1k"] = claim_rate(base, 1000, 500)
        results["claim_per_s_big"] = claim_rate(base, big, 500)
        results["worker_rss_mb_big"] = worker_memory(base, big)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    ratios = {k: results[k] / results["floor_per_s"] for k in results if k.startswith("submit")}
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(base.parent)], capture_output=True,
                        text=True).stdout.strip()
    print(f"{'measure':<32}{'value':>12}{'x floor':>10}   ({fs}, pending={big})")
    for key, value in results.items():
        ratio = f"{ratios[key]:.2f}" if key in ratios else ""
        print(f"{key:<32}{value:>12.3f}{ratio:>10}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    doc = {"filesystem": fs, "pending": big, "results": results, "ratios_to_floor": ratios}
    (out / f"{fs.replace('/', '-')}.json").write_text(json.dumps(doc, indent=2))
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
