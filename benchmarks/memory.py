"""A worker's memory with many jobs pending (issue 9: under 60 MB RSS at 1,000,000 pending).

    .venv/bin/python benchmarks/memory.py --dir /dev/shm        # 1,000,000 pending on tmpfs
    .venv/bin/python benchmarks/memory.py --pending 100000      # smaller

Fills `pending/` with job files written directly under their canonical names (`P-DUE-ID.json`,
the body `submit` writes, due tomorrow: the worker lists them and reads none), starts `spool
worker`, waits until it has listed them, and reads its VmHWM (peak) and VmRSS from /proc; the
same for a worker over an empty spool. What the view costs per name is the difference over the
number of names; its floor is the name itself, so the ratio printed is bytes per name over the
name's length. The spool is deleted afterwards (1,000,000 files take a few GB on tmpfs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, UTC
from pathlib import Path

from bench import make
from spool.layout import pending_name
from spool.timeutil import due_stamp

LIMIT_MB = 60.0


def fill_direct(root: Path, n: int) -> int:
    """`n` pending files written in place, as `submit` would name and write them (no fsync);
    the length of a name."""
    sp = make(root)
    due = datetime.now(UTC) + timedelta(days=1)
    [template_id] = sp.submit_many([{"job": "true", "at": due}])
    [template] = list((root / "pending").iterdir())
    body = template.read_bytes()
    template.unlink()
    stamp = due_stamp(datetime.now(UTC))[:-1]
    pending = root / "pending"
    name = ""
    for i in range(n):
        job_id = f"{stamp}-{i:012x}"
        name = pending_name(5, due + timedelta(microseconds=i), job_id)
        fd = os.open(pending / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, body.replace(template_id.encode(), job_id.encode()))
        os.close(fd)
    return len(name)


def worker_memory(root: Path, timeout: float = 600.0) -> tuple[float, float, float]:
    """(VmHWM MB, VmRSS MB, seconds to list pending/) of a worker once it has started."""
    started = time.perf_counter()
    worker = subprocess.Popen([sys.executable, "-m", "spool.cli", "--spool", str(root),
                               "--host", "bench", "worker", "--capacity", "1"],
                              stderr=subprocess.PIPE, text=True)
    try:
        assert worker.stderr is not None
        for line in worker.stderr:  # logged once start() has listed pending/
            if "capacity" in line:
                break
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"the worker did not start within {timeout} s")
        listed = time.perf_counter() - started
        time.sleep(2)  # a few steps: the first claim pass walks the view
        status = Path(f"/proc/{worker.pid}/status").read_text()
        fields = {line.split(":")[0]: line.split()[1] for line in status.splitlines()
                  if line.startswith(("VmHWM", "VmRSS"))}
        return int(fields["VmHWM"]) / 1024, int(fields["VmRSS"]) / 1024, listed
    finally:
        worker.terminate()
        worker.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="where to fill pending/ (default: a temp dir)")
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--json", default=None, help="also write the JSON to this file")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="spool-memory-", dir=args.dir))
    try:
        make(base / "empty")
        empty = worker_memory(base / "empty")
        started = time.perf_counter()
        length = fill_direct(base / "full", args.pending)
        filled = time.perf_counter() - started
        full = worker_memory(base / "full")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    per_name = {"peak": (full[0] - empty[0]) * 2**20 / args.pending,
                "resident": (full[1] - empty[1]) * 2**20 / args.pending}
    doc = {"pending": args.pending, "name_length": length, "fill_s": round(filled, 1),
           "list_s": round(full[2], 2), "limit_mb": LIMIT_MB,
           "empty": {"hwm_mb": round(empty[0], 1), "rss_mb": round(empty[1], 1)},
           "full": {"hwm_mb": round(full[0], 1), "rss_mb": round(full[1], 1)},
           "bytes_per_name": {k: round(v, 1) for k, v in per_name.items()},
           "per_name_over_name_length": {k: round(v / length, 2) for k, v in per_name.items()}}
    print(f"{'worker':<28}{'VmHWM MB':>10}{'VmRSS MB':>10}")
    print(f"{'empty spool':<28}{empty[0]:>10.1f}{empty[1]:>10.1f}")
    print(f"{f'{args.pending:,} pending':<28}{full[0]:>10.1f}{full[1]:>10.1f}"
          f"   (limit {LIMIT_MB:g} MB; listed in {full[2]:.1f} s)")
    print(f"{'per name, bytes':<28}{per_name['peak']:>10.1f}{per_name['resident']:>10.1f}"
          f"   ({length}-character names: {per_name['resident'] / length:.2f}x the name)")
    print(json.dumps(doc))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
