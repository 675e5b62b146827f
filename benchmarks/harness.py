"""What every workload of `compare.py` shares: contenders run interleaved, rows of figures with
their ratio to a reference measured in the same rounds, and spool driven as its users drive it
(the CLI in a fresh interpreter, jobs submitted through the API beforehand, untimed).

A figure only means something next to its reference from the same run: the disk of a shared
machine changes speed several-fold between minutes, so contenders take turns (A, B, C, A, B,
C …) and each ratio is the median of the per-round ratios, not the ratio of two medians.
"""

from __future__ import annotations

import gc
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import make  # noqa: E402  (bench.py's spool config: durable=false, true/noop/stamp)
from spool import Spool  # noqa: E402

SPOOL_CLI = [sys.executable, "-m", "spool.cli"]


@dataclass
class Contender:
    """One thing measured: `run()` returns its figure for one round (None: it could not run)."""

    name: str
    run: Callable[[], float | None]
    note: str = ""


@dataclass
class Row:
    """A contender's figures over the rounds, and its ratio to the workload's reference."""

    workload: str
    name: str
    unit: str
    samples: list[float]
    ratio: float | None = None
    reference: str = ""
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def figure(self) -> float:
        return statistics.median(self.samples)


def interleave(contenders: list[Contender], rounds: int) -> dict[str, list[float | None]]:
    """Each contender once per round, in turn; a round that fails is said and kept as None."""
    samples: dict[str, list[float | None]] = {c.name: [] for c in contenders}
    for _ in range(rounds):
        for contender in contenders:
            try:
                figure = contender.run()
            except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
                print(f"  {contender.name} failed: {exc}", file=sys.stderr)
                figure = None
            samples[contender.name].append(figure)
    return samples


def rows(workload: str, unit: str, contenders: list[Contender], rounds: int,
         reference: str) -> list[Row]:
    """Run `contenders` interleaved. Each row's ratio is its figure over `reference`'s, round by
    round; a row that is not spool's (spool's names start with "spool") also gets
    `spool_over_this`: the best spool contender's figure over its own, round by round (above 1:
    spool is faster)."""
    samples = interleave(contenders, rounds)
    spools = [c.name for c in contenders if c.name.startswith("spool") and _good(samples[c.name])]
    best = max(spools, key=lambda name: statistics.median(_good(samples[name])), default=None)
    out = []
    for contender in contenders:
        mine = samples[contender.name]
        if not _good(mine):
            print(f"  {workload}: {contender.name} failed in every round", file=sys.stderr)
            continue
        row = Row(workload, contender.name, unit, _good(mine),
                  per_round_ratio(mine, samples.get(reference, [])), reference, contender.note)
        if best and contender.name not in spools:
            row.extra = {"best_spool": best,
                         "spool_over_this": per_round_ratio(samples[best], mine)}
        out.append(row)
    return out


def _good(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def per_round_ratio(mine: list[float | None], ref: list[float | None]) -> float | None:
    """The median over rounds of mine/ref, rounds where either failed left out."""
    ratios = [m / r for m, r in zip(mine, ref, strict=False) if m is not None and r]
    return statistics.median(ratios) if ratios else None


def fresh(path: Path) -> Path:
    """`path` as a new empty directory."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def remove(path: Path) -> None:
    """Remove `path`'s tree. Through an NFS client a file unlinked while open (the journal of a
    Spool just dropped) is set aside until its last close, so its directory empties a moment
    later: retry for a few seconds, then leave it."""
    gc.collect()
    for _ in range(20):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            return
        time.sleep(0.25)
    print(f"  could not remove {path}", file=sys.stderr)


def timed(argv: list[str], **kwargs) -> float:
    """Seconds from the start of `argv` to its exit (it must succeed)."""
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   **kwargs)
    return time.perf_counter() - start


def spool_drain(where: Path, job: str, n: int, capacity: int, host: str = "bench",
                submit_root: Path | None = None) -> float:
    """Jobs per second of `spool worker --burst --capacity C` draining `n` jobs of type `job`
    (submitted beforehand, untimed; the worker's interpreter start is inside the figure).
    `submit_root`: the same spool seen through another mount (NFS: submit on one host)."""
    sp = make(where / "spool")
    submitter = sp if submit_root is None else Spool(submit_root, host="submitter")
    for i in range(0, n, 500):
        submitter.submit_many([{"job": job} for _ in range(min(500, n - i))])
    wait_listed(sp.path / "pending", n)
    seconds = timed([*SPOOL_CLI, "--spool", str(sp.path), "--host", host, "worker", "--burst",
                     "--capacity", str(capacity)])
    finished = len(os.listdir(sp.path / "done"))
    if finished != n:
        raise RuntimeError(f"spool drained {finished} of {n} jobs in {sp.path}")
    return n / seconds


def wait_listed(directory: Path, n: int, timeout: float = 30.0) -> None:
    """Until `directory` lists `n` names (another mount's cache may lag behind)."""
    deadline = time.monotonic() + timeout
    while len(os.listdir(directory)) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{directory} lists fewer than {n} names after {timeout} s")
        time.sleep(0.05)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on at this instant."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def python_fork_floor(n: int) -> float:
    """Per second: fork + waitpid of a child that exits at once, in a bare interpreter."""
    return _bare_loop("import os\nfor _ in range(N):\n"
                      "    pid = os.fork()\n    if pid == 0: os._exit(0)\n    os.waitpid(pid, 0)", n)


def python_exec_floor(n: int) -> float:
    """Per second: fork + exec of /bin/true + waitpid, in a bare interpreter."""
    return _bare_loop("import os\nfor _ in range(N):\n    pid = os.fork()\n"
                      "    if pid == 0:\n        try: os.execv('/bin/true', ['true'])\n"
                      "        finally: os._exit(127)\n    os.waitpid(pid, 0)", n)


def _bare_loop(body: str, n: int) -> float:
    """Rate of `body` (a loop over N) timed inside a fresh interpreter that imports nothing
    else: the floor excludes the interpreter's start, which spool's figures include."""
    code = (f"import time\nN = {n}\nt = time.perf_counter()\n{body}\n"
            "print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-S", "-c", code], check=True, capture_output=True,
                         text=True)
    return n / float(out.stdout.strip().splitlines()[-1])


def bash_exec_floor(n: int) -> float:
    """Per second: a bash loop running /bin/true (fork + exec + wait), timed inside bash."""
    script = (f"s=$EPOCHREALTIME; for ((i=0; i<{n}; i++)); do /bin/true; done; "
              "echo $s $EPOCHREALTIME")
    out = subprocess.run(["bash", "-c", script], check=True, capture_output=True, text=True)
    start, end = (float(x) for x in out.stdout.split())
    return n / (end - start)
