"""What a concurrency limit costs (DESIGN §12), measured side by side in one run.

    python benchmarks/limits.py --dir /dev/shm [--rounds 3] [--claims 2000] [--jobs 600]

- claims/s: `claim_due` + the release a finish does, in process, for a job type without a
  limit and one with a limit that never fills (`max` far above the load), interleaved;
- `true` jobs/s: `worker --burst` (1 process, capacity 4) draining `true` jobs without and
  with a limit (max 4: never the bottleneck), interleaved;
- the time of one claim pass with 100 and with 10,000 pending jobs all blocked on one full
  pool (after the first pass, which reads each body once and parks it): flat is the goal;
- syscalls per job on the worker's hot path (strace, when installed) with and without a limit.
Prints a table and JSON; the best of the rounds counts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench import CONFIG

from spool import Spool
from spool.claim import PendingView, claim_due
from spool.layout import Layout
from spool.ledger import HostLedger
from spool.limits import Limits
from spool.limitspec import PoolRef

LIMITS = """
[limits.wide]
max = 1000000
[limits.four]
max = 4
[limits.one]
max = 1
[jobs.true_wide]
command = ["true"]
limits = ["wide"]
[jobs.true_four]
command = ["true"]
limits = ["four"]
[jobs.true_one]
command = ["true"]
limits = ["one"]
"""


def make(root: Path) -> Spool:
    shutil.rmtree(root, ignore_errors=True)
    Layout(root).create()
    (root / "spool.toml").write_text(CONFIG.format(durable="false") + LIMITS)
    return Spool(root, host="bench")


def submit(sp: Spool, job: str, n: int) -> None:
    for i in range(0, n, 1000):
        sp.submit_many([{"job": job} for _ in range(min(1000, n - i))])


def claim_rate(where: Path, job: str, claims: int) -> float:
    """Claims per second, each followed by the token release its finish would do."""
    sp = make(where / f"claim-{job}")
    submit(sp, job, claims)
    sp.store.layout.host_processing("bench").mkdir(parents=True)
    ledger = HostLedger(sp.store.layout, "bench", False)
    view = PendingView(sp.store)
    view.refresh(time.monotonic())
    limits, now = Limits(sp.store), datetime.now(UTC)
    start = time.perf_counter()
    for _ in range(claims):
        with ledger.locked(10**9) as book:
            for held in claim_due(sp.store, view, book, now, os.getpid(), 1):
                os.close(held.fd)
                limits.give_back(held.tokens)
    return claims / (time.perf_counter() - start)


def drain_rate(where: Path, job: str, n: int) -> float:
    sp = make(where / f"drain-{job}")
    submit(sp, job, n)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "spool.cli", "--spool", str(sp.path), "--host",
                    "bench", "worker", "--burst", "--capacity", "4"],
                   stderr=subprocess.DEVNULL, check=True)
    elapsed = time.perf_counter() - start
    assert len(os.listdir(sp.path / "done")) == n, "not every job finished"
    return n / elapsed


def blocked_pass(where: Path, pending: int, passes: int = 50) -> tuple[float, float]:
    """(first pass, mean later pass) in ms with `pending` jobs blocked on one full pool."""
    sp = make(where / f"blocked{pending}")
    submit(sp, "true_one", pending)
    sp.store.layout.host_processing("bench").mkdir(parents=True)
    Limits(sp.store).take([PoolRef("one")], "holder", 1, datetime.now(UTC), set())
    ledger = HostLedger(sp.store.layout, "bench", False)
    view = PendingView(sp.store)
    view.refresh(time.monotonic())
    now = datetime.now(UTC)
    times = []
    for _ in range(passes + 1):
        start = time.perf_counter()
        with ledger.locked(4) as book:
            assert claim_due(sp.store, view, book, now, os.getpid(), 4) == []
        times.append((time.perf_counter() - start) * 1000)
    return times[0], sum(times[1:]) / passes


def syscalls(where: Path, job: str, n: int) -> dict[str, float] | None:
    """Per job, under strace -f: every syscall, and links, unlinks, renames, creates."""
    if not shutil.which("strace"):
        return None
    sp = make(where / f"sys-{job}")
    submit(sp, job, n)
    trace = where / f"trace-{job}.txt"
    subprocess.run(["strace", "-f", "-qq", "-o", str(trace), sys.executable, "-m", "spool.cli",
                    "--spool", str(sp.path), "--host", "bench", "worker", "--burst",
                    "--capacity", "4"], stderr=subprocess.DEVNULL, check=True)
    lines = [line for line in trace.read_text().splitlines()
             if "resumed>" not in line and "+++" not in line and "---" not in line]
    ours = [line for line in lines if "/limits/" in line or "/tmp/token," in line]

    def per_job(pattern: str, among: list[str]) -> float:
        return round(sum(1 for line in among if re.search(pattern, line)) / n, 2)

    return {"all": round(len(lines) / n, 1),
            "link": per_job(r"\blink(at)?\(", lines), "unlink": per_job(r"\bunlink(at)?\(", lines),
            "limits_paths": per_job(r".", ours), "limits_link": per_job(r"\blink(at)?\(", ours),
            "limits_unlink": per_job(r"\bunlink(at)?\(", ours)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="where to run (default: a temp dir)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--claims", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=600)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="spool-limits-", dir=args.dir))
    best: dict[str, float] = {}
    try:
        for _ in range(args.rounds):
            for key, job in (("claims_per_s", "true"), ("claims_per_s_limited", "true_wide")):
                best[key] = max(best.get(key, 0.0), claim_rate(base, job, args.claims))
            for key, job in (("true_jobs_per_s", "true"),
                             ("true_jobs_per_s_limited", "true_four")):
                best[key] = max(best.get(key, 0.0), drain_rate(base, job, args.jobs))
        for pending in (100, 10_000):
            first, later = blocked_pass(base, pending)
            best[f"blocked_{pending}_first_pass_ms"] = first
            best[f"blocked_{pending}_pass_ms"] = later
        calls = {job: syscalls(base, job, 300) for job in ("true", "true_four")}
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{'measure':<36}{'value':>12}")
    for key, value in best.items():
        print(f"{key:<36}{value:>12.3f}")
    if calls["true"]:
        print(f"{'syscalls per job (strace -f)':<36}" + "".join(f"{k:>14}" for k in calls["true"]))
        for job, row in calls.items():
            print(f"{job:<36}" + "".join(f"{row[k]:>14}" for k in row))
    print(json.dumps({"figures": best, "syscalls_per_job": calls}))


if __name__ == "__main__":
    main()
