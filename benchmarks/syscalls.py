"""Count file creations, renames, links, unlinks and fsyncs per job on the worker's hot path.

    python benchmarks/syscalls.py --dir /dev/shm [--jobs 300] [--durable]

Runs `spool worker --burst` under `strace -f` on a spool of `true` jobs (and, separately,
times `spool submit` via the API), then divides each count by the number of jobs. Prints a
table and JSON. Needs strace.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench import make

CALLS = "openat,open,creat,rename,renameat,renameat2,link,linkat,unlink,unlinkat,fsync,fdatasync"


def classify(line: str) -> str | None:
    match = re.search(r"\b(openat|open|creat|renameat2|renameat|rename|linkat|link|unlinkat|"
                      r"unlink|fsync|fdatasync)\(", line)
    if not match or "= -1" in line or ("resumed>" in line and "O_CREAT" not in line):
        return None
    call = match.group(1)
    if call in ("openat", "open"):
        return "create" if "O_CREAT" in line and "/spool/" in line else None
    return {"creat": "create", "renameat2": "rename", "renameat": "rename", "linkat": "link",
            "unlinkat": "unlink", "fdatasync": "fsync"}.get(call, call)


def count(spool_dir: Path, jobs: int) -> Counter:
    trace = spool_dir.parent / "trace.txt"
    subprocess.run(["strace", "-f", "-qq", "-e", f"trace={CALLS}", "-o", str(trace),
                    sys.executable, "-m", "spool.cli", "--spool", str(spool_dir), "--host",
                    "bench", "worker", "--burst", "--capacity", "4"],
                   check=True, stderr=subprocess.DEVNULL)
    counts: Counter = Counter()
    for line in trace.read_text().splitlines():
        kind = classify(line)
        if kind:
            counts[kind] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--durable", action="store_true")
    args = parser.parse_args()
    if not shutil.which("strace"):
        sys.exit("strace is not installed (apt-get install strace)")
    base = Path(tempfile.mkdtemp(prefix="spool-sys-", dir=args.dir))
    try:
        results = {}
        for job in ("true", "noop"):
            sp = make(base / "spool", args.durable)
            sp.submit_many([{"job": job} for _ in range(args.jobs)])
            counts = count(sp.path, args.jobs)
            results[job] = {k: round(v / args.jobs, 2) for k, v in sorted(counts.items())}
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{'per job (worker side)':<24}" + "".join(f"{k:>9}" for k in results["true"]))
    for job, row in results.items():
        print(f"{job:<24}" + "".join(f"{row.get(k, 0):>9}" for k in results["true"]))
    print(json.dumps({"durable": args.durable, "jobs": args.jobs, "per_job": results}))


if __name__ == "__main__":
    main()
