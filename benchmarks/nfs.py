"""Workload 6, on the NFS rig's two client mounts (`SPOOL_NFS_A`, `SPOOL_NFS_B`: one export
seen by two hosts; `eval "$(../shared/nfs-rig/rig env)"` sets them, `rig up` mounts them):

- enqueue through mount A: `submit` (durable=false) against the create+write+rename floor;
- drain through mount B (host `b`) of `true` jobs submitted through mount A, by
  `worker --burst --capacity 1`, against the claim+finish floor: the two renames a job needs at
  least (pending/ → processing/, processing/ → done/), in a bare Python loop on mount B;
- enqueue → start: a job submitted through mount A and started by an idle worker on mount B,
  against `poll` plus one listing of pending/ (`latency.nfs_run`).

Everything lives in one subdirectory of the export, removed through mount A at the end. The
rig is never brought up or down here: without both mounts this workload says why and skips.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import tempfile
import time
from pathlib import Path

import latency
from bench import floor, submit_rate
from harness import Contender, Row, fresh, remove, rows, spool_drain

WRITE_FLOOR = "create+write+rename floor (mount A)"
MOVE_FLOOR = "claim+finish floor: 2 renames (mount B)"


def mounts() -> tuple[Path, Path] | str:
    """The rig's two mounts, or why they cannot be used."""
    found = [os.environ.get(name, "") for name in ("SPOOL_NFS_A", "SPOOL_NFS_B")]
    if not all(found):
        return "SPOOL_NFS_A/SPOOL_NFS_B are not set (eval the rig's `env` output first)"
    for path in found:
        if subprocess.run(["mountpoint", "-q", path]).returncode:
            return f"{path} is not a mountpoint (the rig is down; `rig up` brings it up)"
    return Path(found[0]), Path(found[1])


def run(n_submit: int, n_drain: int, rounds: int) -> list[Row]:
    found = mounts()
    if isinstance(found, str):
        print(f"  skip nfs: {found}")
        return []
    a, b = found
    name = f"spool-compare-{os.getpid()}"
    try:
        on_a, on_b = fresh(a / name), b / name
        started = time.monotonic()
        while not on_b.is_dir():  # the other mount may not see the new directory at once
            if time.monotonic() - started > 30:
                raise RuntimeError(f"{on_b} did not appear through mount B")
            time.sleep(0.1)
        # a new directory every round: a file still open through a mount (the journal of the
        # last round's Spool) keeps its directory from being removed until it is closed
        numbers = itertools.count()

        def new(mount_dir: Path) -> Path:
            return fresh(mount_dir / f"round{next(numbers)}")

        enqueue = [Contender(WRITE_FLOOR, lambda: floor(new(on_a), n_submit)),
                   Contender("spool submit, durable=false (mount A)",
                             lambda: submit_rate(new(on_a), n_submit, False, False))]
        drain = [Contender(MOVE_FLOOR, lambda: two_renames(new(on_b), n_drain)),
                 Contender("spool worker --burst, capacity 1 (mount B, submitted on A)",
                           lambda: nfs_drain(on_a, new(on_b), n_drain))]
        found_rows = (rows("nfs enqueue", "jobs/s", enqueue, rounds, WRITE_FLOOR)
                      + rows("nfs drain", "jobs/s", drain, rounds, MOVE_FLOOR))
        with tempfile.TemporaryDirectory() as local:
            return found_rows + latency.nfs_run(on_a, new(on_b), Path(local), 10 * rounds)
    finally:
        remove(a / name)


def nfs_drain(on_a: Path, where: Path, n: int) -> float:
    """`where` is a new directory on mount B; the jobs are submitted through mount A."""
    return spool_drain(where, "true", n, 1, host="b",
                       submit_root=on_a / where.name / "spool")


def two_renames(where: Path, n: int) -> float:
    """Per second: a job file renamed into a processing directory, then into a done one."""
    for state in ("pending", "processing", "done"):
        (where / state).mkdir()
    body = b'{"id":"x","job":"true","args":{}}\n' * 8
    for i in range(n):
        (where / "pending" / f"{i}.json").write_bytes(body)
    start = time.perf_counter()
    for i in range(n):
        os.rename(where / "pending" / f"{i}.json", where / "processing" / f"{i}.1.json")
        os.rename(where / "processing" / f"{i}.1.json", where / "done" / f"{i}.json")
    return n / (time.perf_counter() - start)
