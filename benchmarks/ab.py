"""Compare two checkouts of spool on the same workloads, interleaved (A, B, A, B …) so that a
disk whose speed swings between minutes cannot favour either side.

    python benchmarks/ab.py --a ../spool-before --b . --dir /dev/shm --rounds 3

Each round runs, for each side, the create+write+rename floor, `submit` and `submit_many`
(durable=false) and a `worker --burst` drain of `true` jobs (1 process, capacity 4), each in a
fresh interpreter that imports that side's `spool`. Prints the best figure of each side, the
ratio B/A, and JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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


def importable(tree: Path, into: Path) -> Path:
    """A copy of the checkout's package as it installs (`cli/` becomes `spool.cli`), so that
    the side's own code is imported whatever spool the interpreter has installed."""
    shutil.copytree(tree / "spool", into / "spool")
    shutil.copytree(tree / "cli", into / "spool" / "cli")
    return into


def run_side(tree: Path, where: Path, n: int, jobs: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(importable(tree, where / "pkg")))
    out = subprocess.run([sys.executable, "-c", PROBE, str(HERE), str(where), str(n), str(jobs)],
                         env=env, capture_output=True, text=True, check=True, cwd=where)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, type=Path, help="checkout A (the baseline)")
    parser.add_argument("--b", required=True, type=Path, help="checkout B")
    parser.add_argument("--dir", default=None, help="where to run (default: a temp dir)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=3000, help="submits per measure")
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per drain")
    args = parser.parse_args()
    best: dict[str, dict[str, float]] = {"a": {}, "b": {}}
    base = Path(tempfile.mkdtemp(prefix="spool-ab-", dir=args.dir))
    try:
        for _ in range(args.rounds):
            for side in ("a", "b"):
                where = base / side
                shutil.rmtree(where, ignore_errors=True)
                where.mkdir()
                figures = run_side(getattr(args, side).resolve(), where, args.n, args.jobs)
                for key, value in figures.items():
                    best[side][key] = max(best[side].get(key, 0.0), value)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{'measure':<22}{'A':>12}{'B':>12}{'B/A':>8}{'A/floor':>9}{'B/floor':>9}")
    for key in best["a"]:
        a, b = best["a"][key], best["b"][key]
        fa, fb = best["a"]["floor_per_s"], best["b"]["floor_per_s"]
        print(f"{key:<22}{a:>12.0f}{b:>12.0f}{b / a:>8.2f}{a / fa:>9.2f}{b / fb:>9.2f}")
    print(json.dumps({"a": str(args.a), "b": str(args.b), "best": best}))


if __name__ == "__main__":
    main()
