"""A reaper pass at scale: what one `Reaper.step` costs on a spool with 100 finished jobs and
100 unique keys, and on one with 100,000 finished jobs and 10,000 unique keys (issue 9: no
more).

Each spool is built once (untimed): finished jobs written straight into `done/` (90 %) and
`dead/` (10 %) under generated ids, with a fresh mtime (nothing is past retention, so a pass
changes nothing and every round sees the same spool), and jobs holding the unique keys
submitted through the API with a DUE tomorrow (their markers are live, and aged an hour: past
the grace of a submit in flight, so the reaper must find their jobs in `pending/`). A round, for each spool
in turn: a **cold pass** (the reaper has no observations: its first pass ever, or after a
reboot), then `--passes` more passes on a clock that advances `--every` seconds per pass (a
`reap --once` timer): their median and their maximum. Ratios are big over small, round by round
(median over rounds): 1.0 is the target.

    .venv/bin/python benchmarks/reap.py [--finished 100000 --keys 10000] [--rounds 3] \\
        [--passes 40 --every 15] [--dir DIR] [--json FILE]

Run it with another checkout first on PYTHONPATH to measure that one (before/after).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import make  # noqa: E402
from harness import remove  # noqa: E402
from spool import Spool  # noqa: E402
from spool.layout import new_id  # noqa: E402
from spool.reaper import Reaper  # noqa: E402

REAPER_HOST = "r"


def build(root: Path, finished: int, keys: int) -> Path:
    sp = make(root)
    now = datetime.now(UTC)
    for i in range(finished):
        state = "dead" if i % 10 == 9 else "done"
        job_id = new_id(now)
        body = {"id": job_id, "job": "true", "args": {}, "priority": 5, "attempts": 1,
                "max_attempts": 3, "outcome": "completed" if state == "done" else "failed",
                "exit_code": 0 if state == "done" else 1, "created_at": now.isoformat(),
                "finished_at": now.isoformat(), "history": [], "meta": {}}
        (root / state / f"{job_id}.json").write_text(json.dumps(body))
    at = now + timedelta(days=1)
    for i in range(0, keys, 1000):
        sp.submit_many([{"job": "true", "at": at, "unique": f"key-{j}"}
                        for j in range(i, min(keys, i + 1000))])
    aged = time.time() - 3600  # the keys were taken an hour ago, as a backlog's are
    for name in os.listdir(root / "unique"):
        os.utime(root / "unique" / name, (aged, aged))
    return root


class Clock:
    """The reaper's CLOCK_BOOTTIME, advanced by hand: one timer period per pass."""

    def __init__(self) -> None:
        self.now = time.clock_gettime(time.CLOCK_BOOTTIME)

    def __call__(self) -> float:
        return self.now


def one_round(root: Path, passes: int, every: float) -> dict[str, float]:
    """Seconds of the cold pass, and the median and maximum of the passes after it."""
    (root / "hosts" / f"{REAPER_HOST}.reaper.json").unlink(missing_ok=True)
    clock = Clock()
    reaper = Reaper(Spool(root, host=REAPER_HOST), clock=clock)
    times = []
    for _ in range(passes + 1):
        now = datetime.now(UTC)
        start = time.perf_counter()
        reaper.step(now)
        times.append(time.perf_counter() - start)
        clock.now += every
    return {"cold": times[0], "median": statistics.median(times[1:]), "max": max(times[1:]),
            "mean": statistics.mean(times[1:])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--finished", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--small-finished", type=int, default=100)
    parser.add_argument("--small-keys", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--passes", type=int, default=40)
    parser.add_argument("--every", type=float, default=15.0, help="seconds between passes")
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="spool-reap-", dir=args.dir))
    started = time.perf_counter()
    small = build(base / "small", args.small_finished, args.small_keys)
    big = build(base / "big", args.finished, args.keys)
    print(f"built the spools in {time.perf_counter() - started:.0f} s ({base})")
    samples: dict[str, list[dict[str, float]]] = {"small": [], "big": []}
    for _ in range(args.rounds):
        samples["small"].append(one_round(small, args.passes, args.every))
        samples["big"].append(one_round(big, args.passes, args.every))
    names = {"small": f"{args.small_finished:,} finished, {args.small_keys:,} unique keys",
             "big": f"{args.finished:,} finished, {args.keys:,} unique keys"}
    print(f"\n| spool | cold pass | median pass | max pass | mean pass "
          f"(of {args.passes}, {args.every:g} s apart) |")
    print("|---|---:|---:|---:|---:|")
    for which in ("small", "big"):
        figures = {k: statistics.median(s[k] for s in samples[which])
                   for k in ("cold", "median", "max", "mean")}
        print(f"| {names[which]} | " + " | ".join(f"{figures[k] * 1e3:,.1f} ms" for k in
                                                 ("cold", "median", "max", "mean")) + " |")
    ratios = {k: statistics.median(b[k] / s[k] for b, s in zip(samples["big"], samples["small"],
                                                               strict=True))
              for k in ("cold", "median", "max", "mean")}
    print("| big ÷ small (median of rounds) | " +
          " | ".join(f"{ratios[k]:.2f}x" for k in ("cold", "median", "max", "mean")) + " |")
    if args.json:
        args.json.write_text(json.dumps({"spools": names, "samples": samples, "ratios": ratios,
                                         "passes": args.passes, "every": args.every}, indent=1))
    remove(base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
