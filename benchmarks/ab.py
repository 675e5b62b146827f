"""Compare two checkouts of spool on the same workloads, interleaved (A, B, A, B …) so that a
disk whose speed swings between minutes cannot favour either side.

    python benchmarks/ab.py --a ../spool-before --b . --dir /dev/shm --rounds 3

Each round runs, for each side, the create+write+rename floor, `submit` and `submit_many`
(durable=false) and a `worker --burst` drain of `true` jobs (1 process, capacity 4), each in a
fresh interpreter that imports that side's `spool`. `--more` adds a capacity-1 drain, the
enqueue → start latency of an idle worker (p50/p99 of `--samples`) and the burst drain of 1,000
due jobs among `--pending` others due tomorrow, over the same drain alone (1.0: flat), by the
wall clock and by the CPU time of the worker and its jobs (`scale_ratio_cpu`). Prints
the best figure of each side (the lowest for a delay), their ratio B/A, the median of the
rounds' own B/A ratios (the figure to trust on a machine whose speed swings), and JSON.
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROBE = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import bench
where, n, jobs = Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print(json.dumps({
    "floor_per_s": bench.floor(where, n),
    "submit_per_s": bench.submit_rate(where, n, False, False),
    "submit_many_per_s": bench.submit_rate(where, n, False, True),
    "true_jobs_per_s": bench.throughput(where, "true", jobs, 1),
}))
"""
MORE = """
import json, os, resource, subprocess, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import bench
where, jobs, samples, pending = Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])

def drain(sp, due, capacity, cpu=False):
    # jobs per second of a burst worker (cpu: per CPU second of it and its jobs, which other
    # processes on a shared machine disturb far less than the wall clock)
    bench.fill(sp, due)
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "spool.cli", "--spool", str(sp.path), "--host", "bench",
                    "worker", "--burst", "--capacity", str(capacity)], check=True,
                   stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return due / (used if cpu else time.perf_counter() - start)

big = bench.make(where / "big")
bench.fill(big, pending - 1000, future=True)
small_cpu = bench.make(where / "small_cpu")
p50, p99 = bench.latency(where, samples)
print(json.dumps({
    "true_cap1_per_s": drain(bench.make(where / "one"), jobs, 1),
    "latency_p50_ms": p50,
    "latency_p99_ms": p99,
    "scale_ratio": drain(big, 1000, 1) / drain(bench.make(where / "small"), 1000, 1),
    "scale_ratio_cpu": drain(big, 1000, 1, True) / drain(small_cpu, 1000, 1, True),
}))
"""


def importable(tree: Path, into: Path) -> Path:
    """A copy of the checkout's package as it installs (`cli/` becomes `spool.cli`), so that
    the side's own code is imported whatever spool the interpreter has installed."""
    shutil.copytree(tree / "spool", into / "spool")
    shutil.copytree(tree / "cli", into / "spool" / "cli")
    return into


def run_side(tree: Path, where: Path, n: int, jobs: int,
             more: tuple[int, int] | None = None) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(importable(tree, where / "pkg")))
    figures = {}
    probes = [(PROBE, [str(n), str(jobs)])]
    if more:
        probes.append((MORE, [str(jobs), str(more[0]), str(more[1])]))
    for probe, argv in probes:
        out = subprocess.run([sys.executable, "-c", probe, str(HERE), str(where), *argv],
                             env=env, capture_output=True, text=True, check=True, cwd=where)
        figures.update(json.loads(out.stdout.strip().splitlines()[-1]))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, type=Path, help="checkout A (the baseline)")
    parser.add_argument("--b", required=True, type=Path, help="checkout B")
    parser.add_argument("--dir", default=None, help="where to run (default: a temp dir)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=3000, help="submits per measure")
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per drain")
    parser.add_argument("--more", action="store_true",
                        help="also capacity 1, latency and the burst drain at scale")
    parser.add_argument("--samples", type=int, default=50, help="latency samples (--more)")
    parser.add_argument("--pending", type=int, default=100_000, help="scale drain (--more)")
    args = parser.parse_args()
    best: dict[str, dict[str, float]] = {"a": {}, "b": {}}
    ratios: dict[str, list[float]] = {}  # B/A of each round: a slow minute slows both alike
    base = Path(tempfile.mkdtemp(prefix="spool-ab-", dir=args.dir))
    try:
        for _ in range(args.rounds):
            round_figures = {}
            for side in ("a", "b"):
                where = base / side
                shutil.rmtree(where, ignore_errors=True)
                where.mkdir()
                figures = run_side(getattr(args, side).resolve(), where, args.n, args.jobs,
                                   (args.samples, args.pending) if args.more else None)
                round_figures[side] = figures
                for key, value in figures.items():
                    pick = min if key.endswith("_ms") else max  # a delay: the lowest is best
                    best[side][key] = pick(best[side].get(key, value), value)
            for key, value in round_figures["b"].items():
                ratios.setdefault(key, []).append(value / round_figures["a"][key])
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{'measure':<22}{'A':>12}{'B':>12}{'B/A':>8}{'A/floor':>9}{'B/floor':>9}"
          f"{'median B/A':>12}")
    medians = {key: statistics.median(values) for key, values in ratios.items()}
    for key in best["a"]:
        a, b = best["a"][key], best["b"][key]
        fa, fb = best["a"]["floor_per_s"], best["b"]["floor_per_s"]
        if key.endswith("_per_s"):
            print(f"{key:<22}{a:>12.0f}{b:>12.0f}{b / a:>8.2f}{a / fa:>9.2f}{b / fb:>9.2f}"
                  f"{medians[key]:>12.2f}")
        else:
            print(f"{key:<22}{a:>12.2f}{b:>12.2f}{b / a:>8.2f}{'':>18}{medians[key]:>12.2f}")
    print(json.dumps({"a": str(args.a), "b": str(args.b), "best": best, "ratios": ratios}))


if __name__ == "__main__":
    main()
