"""Where a `true` job's time goes in spool's worker: every system call per job, by kind.

    .venv/bin/python benchmarks/strace_jobs.py [--jobs 500] [--capacity 1] [--dir DIR]

Runs `spool worker --burst` under `strace -f -ff` on a spool of N `true` jobs and on an empty
one (the worker's start and exit, subtracted), and divides by N. Calls are split between the
worker process and the job's processes (the forked child up to its exec, then `true`), so
that what spool does per job is apart from what running any program costs. A second run under
`strace -c -w -f` gives the wall-clock time spent in each kind of call (on NFS that is the
round trips; `wait4` is the worker waiting for its job; strace inflates everything: read it as
a share). Needs strace.
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

from harness import SPOOL_CLI, make, remove

CALL = re.compile(r"^(?:\d+\s+)?(?:<\.\.\. )?([a-z0-9_]+)[( ]")


def worker(root: Path, capacity: int) -> list[str]:
    return [*SPOOL_CLI, "--spool", str(root), "--host", "bench", "worker", "--burst",
            "--capacity", str(capacity)]


def traced(where: Path, jobs: int, capacity: int) -> tuple[Counter, Counter]:
    """(worker's calls, job processes' calls) of one burst drain of `jobs` jobs."""
    sp = make(where / "spool")
    for i in range(0, jobs, 500):
        sp.submit_many([{"job": "true"} for _ in range(min(500, jobs - i))])
    traces = where / "trace"
    traces.mkdir()
    proc = subprocess.Popen(["strace", "-f", "-ff", "-qq", "-o", str(traces / "t"),
                             *worker(sp.path, capacity)], stderr=subprocess.DEVNULL)
    proc.wait()
    first = min(traces.iterdir(), key=lambda p: int(p.suffix[1:]))  # the worker: lowest pid
    own, jobs_calls = Counter(), Counter()
    for trace in traces.iterdir():
        counts = Counter(m.group(1) for line in trace.read_text().splitlines()
                         if (m := CALL.match(line)) and "resumed>" not in line)
        (own if trace == first else jobs_calls).update(counts)
    return own, jobs_calls


def kernel_time(where: Path, jobs: int, capacity: int) -> str:
    """strace -c -w -f's summary (wall-clock time per call) of a drain of `jobs` jobs."""
    sp = make(where / "spool")
    sp.submit_many([{"job": "true"} for _ in range(jobs)])
    out = where / "summary.txt"
    subprocess.run(["strace", "-c", "-w", "-f", "-o", str(out), *worker(sp.path, capacity)],
                   stderr=subprocess.DEVNULL, check=True)
    return out.read_text()


def per_job(loaded: Counter, empty: Counter, jobs: int) -> dict[str, float]:
    """Calls per job, most frequent first, without those the empty drain made as often."""
    found = {call: round((loaded[call] - empty[call]) / jobs, 2) for call in loaded}
    return {call: n for call, n in sorted(found.items(), key=lambda kv: -kv[1]) if n > 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--capacity", type=int, default=1)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    if not shutil.which("strace"):
        sys.exit("strace is not installed (apt-get install strace)")
    base = Path(tempfile.mkdtemp(prefix="spool-strace-", dir=args.dir))
    try:
        own, children = traced(base / "loaded", args.jobs, args.capacity)
        own0, children0 = traced(base / "empty", 0, args.capacity)
        summary = kernel_time(base / "summary", args.jobs, args.capacity)
    finally:
        remove(base)
    result = {"jobs": args.jobs, "capacity": args.capacity,
              "worker_per_job": per_job(own, own0, args.jobs),
              "job_processes_per_job": per_job(children, children0, args.jobs)}
    for side in ("worker_per_job", "job_processes_per_job"):
        calls = result[side]
        print(f"{side}: {sum(calls.values()):.1f} calls")
        for call, n in calls.items():
            print(f"  {call:<18}{n:>8.2f}")
    print(summary)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
