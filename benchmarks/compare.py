"""Compare spool with its peers and with the bare floors, interleaved, in one run.

    .venv/bin/python benchmarks/compare.py [--quick] [--json FILE] [--nfs] [--install]

Runs each workload (see benchmarks/README.md) with its contenders taking turns round after
round, prints one markdown table of figures with their ratio to the workload's reference
(a floor or a peer) measured in the same rounds, and writes it all as JSON with `--json`.
A peer that is not installed is skipped with one line saying why; `--install` installs the
peers (apt-get, and pip into benchmarks/.peers) first.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, UTC
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
if importlib.util.find_spec("spool") is None or importlib.util.find_spec("spool.cli") is None:
    sys.exit("compare.py needs spool installed: ./install.sh, then run it with .venv/bin/python")

import cmdjobs
import latency
import nfs
import peers
import pyjobs
import scale
from harness import Row, fresh, remove

WORKLOADS = ("command", "python", "latency", "scale", "enqueue", "nfs")


def sizes(args: argparse.Namespace) -> dict[str, int]:
    """Workload sizes: small by default (a full run takes a few minutes), smaller with --quick."""
    quick = args.quick
    return {"jobs": args.jobs or (100 if quick else 500),
            "rounds": args.rounds or (1 if quick else 3),
            "latency_samples": 20 if quick else 100,
            "scale_due": 200 if quick else 1000,
            "scale_pending": args.pending or (10_000 if quick else 100_000),
            "enqueue": 500 if quick else 3000,
            "nfs_submit": 50 if quick else 300,
            "nfs_drain": 30 if quick else 100,
            "workers": args.workers}


def measure(name: str, base: Path, size: dict[str, int], no_peers: bool) -> list[Row]:
    rounds, jobs = size["rounds"], size["jobs"]
    if name == "command":
        return cmdjobs.run(fresh(base / name), jobs, rounds, no_peers)
    if name == "python":
        return pyjobs.run(fresh(base / name), jobs, rounds, size["workers"], no_peers)
    if name == "latency":
        return latency.run(fresh(base / name), size["latency_samples"], rounds, no_peers)
    if name == "scale":
        return scale.burst_at_scale(fresh(base / name), size["scale_due"],
                                    size["scale_pending"], rounds)
    if name == "enqueue":
        return scale.enqueue(fresh(base / name), size["enqueue"], rounds)
    return nfs.run(size["nfs_submit"], size["nfs_drain"], rounds)


def table(found: list[Row]) -> str:
    """Markdown: each figure, its ratio to the workload's reference (same rounds) and, for a
    peer or floor, the best spool contender's speed over its own (above 1: spool is faster)."""
    lines = ["| workload | contender | figure | ratio | to | best spool ÷ this |",
             "|---|---|---:|---:|---|---:|"]
    for row in found:
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
        figure = f"{row.figure:,.1f} ms" if row.unit == "ms" else f"{row.figure:,.0f}/s"
        reference = "itself" if row.reference == row.name else row.reference
        versus = row.extra.get("spool_over_this")
        versus = f"{versus:.2f}x" if versus is not None else ""
        lines.append(f"| {row.workload} | {row.name} | {figure} | {ratio} | {reference} "
                     f"| {versus} |")
    return "\n".join(lines)


def filesystem(path: Path) -> str:
    found = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", str(path)],
                           capture_output=True, text=True).stdout.strip()
    return found or "unknown filesystem"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a one-minute smoke run")
    parser.add_argument("--jobs", type=int, help="jobs per drain (default 500; quick 100)")
    parser.add_argument("--rounds", type=int, help="rounds of each workload (default 3)")
    parser.add_argument("--pending", type=int,
                        help="pending jobs of the scale workload (default 100,000)")
    parser.add_argument("--workers", type=int, default=4,
                        help="spool capacity / huey threads of the python workload (default 4)")
    parser.add_argument("--only", default=",".join(w for w in WORKLOADS if w != "nfs"),
                        help=f"comma-separated workloads of {', '.join(WORKLOADS)}")
    parser.add_argument("--nfs", action="store_true",
                        help="also the NFS workload, on SPOOL_NFS_A/SPOOL_NFS_B")
    parser.add_argument("--no-peers", action="store_true", help="spool and the floors only")
    parser.add_argument("--install", action="store_true",
                        help="apt-get / pip install the peers first (needs root)")
    parser.add_argument("--dir", help="where the local workloads run (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    chosen = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = [w for w in chosen if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload {', '.join(unknown)} (known: {', '.join(WORKLOADS)})")
    if args.nfs and "nfs" not in chosen:
        chosen.append("nfs")
    args.chosen = chosen
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.install:
        peers.install()
    size = sizes(args)
    base = Path(tempfile.mkdtemp(prefix="spool-compare-", dir=args.dir))
    command = shlex.join(["python", "benchmarks/compare.py", *(sys.argv[1:] if argv is None
                                                               else argv)])
    started = datetime.now(UTC)
    print(f"{started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, {filesystem(base)} at {base}"
          f"\n{command}\nsizes: {size}")
    found: list[Row] = []
    failed: list[str] = []
    try:
        for name in args.chosen:
            print(f"{name} …", flush=True)
            clock = time.perf_counter()
            try:
                found += measure(name, base, size, args.no_peers)
            except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
                print(f"  {name} failed, the other workloads go on: {exc}")
                failed.append(name)
            print(f"  {time.perf_counter() - clock:.0f} s")
    finally:
        remove(base)
    print(table(found))
    if args.json:
        args.json.write_text(json.dumps({
            "date": started.isoformat(), "command": command, "cpus": os.cpu_count(),
            "filesystem": filesystem(base.parent), "sizes": size,
            "rows": [{"workload": r.workload, "name": r.name, "unit": r.unit,
                      "figure": r.figure, "samples": r.samples, "ratio": r.ratio,
                      "reference": r.reference, "note": r.note, **r.extra}
                     for r in found], "failed": failed}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
