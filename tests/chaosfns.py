"""What runs inside the chaos cluster: the task that records its own run, and the submitter.

`work` is the handler of the chaos job types. It appends one line when it starts and one when
it ends to the run's ledger (`$CHAOS_LEDGER`, a local file), each with a single `os.write` on an
`O_APPEND` descriptor, so a task killed at any instant leaves at most a missing end line, never
half a line among others. A line carries the job id and attempt (`SPOOL_JOB_ID`,
`SPOOL_ATTEMPT`), the host (`CHAOS_HOST`: the harness starts each host's workers with it and a
handler child inherits its worker's environment), the task's pid, its start time in clock ticks
(so a reused pid cannot pass for it), its worker's pid (the parent it was forked from) and
CLOCK_MONOTONIC, which is one clock for every process of the machine, so instants written by
different processes compare.

`python -m chaosfns submit ...` is one submitting process: API submits, CLI submits and hand
drops of JSON files into pending/, paced at random, until a stop file appears. It appends one
JSON line per *accepted* job (the submit returned, or the drop file is complete under its final
name) to its `--out` file, again with one `os.write`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path


def process_start(pid: int | str = "self") -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def append_line(path: str | os.PathLike, record: dict) -> None:
    """One JSON line, written by one `os.write` on an O_APPEND descriptor."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())
    finally:
        os.close(fd)


def _record(event: str, **extra: object) -> None:
    ledger = os.environ.get("CHAOS_LEDGER")
    if not ledger:
        return
    append_line(ledger, {
        "ev": event, "job": os.environ.get("SPOOL_JOB_ID"), "type": os.environ.get("SPOOL_JOB"),
        "attempt": int(os.environ.get("SPOOL_ATTEMPT") or 0),
        "host": os.environ.get("CHAOS_HOST"), "pid": os.getpid(), "pgid": os.getpgid(0),
        "ppid": os.getppid(), "pstart": process_start(), "mono": time.monotonic(),
        "wall": time.time(), **extra})


def work(tag: str = "", seconds: float = 0.0, fail: str = "") -> dict:
    """Record the start, sleep `seconds`, record the end. `fail`: "first" fails attempt 1,
    "always" fails every attempt (after recording the end, with ok false)."""
    _record("start", tag=tag)
    if seconds:
        time.sleep(seconds)
    attempt = int(os.environ.get("SPOOL_ATTEMPT") or 0)
    ok = not (fail == "always" or (fail == "first" and attempt == 1))
    _record("end", tag=tag, ok=ok)
    if not ok:
        raise RuntimeError(f"chaos task {tag} fails on purpose (fail={fail!r})")
    return {"tag": tag, "attempt": attempt}


# -- the submitter ------------------------------------------------------------------------

JOB_MIX = (("chaos1", "", 70), ("chaos2", "", 14), ("chaos1", "first", 10), ("doomed", "always", 6))
HOW_MIX = (("api", 55), ("cli", 15), ("drop", 30))
DROP_MIX = (("rename-id", 35), ("direct-id", 20), ("stem", 20), ("derived", 10), ("invalid", 15))


def _pick(rng: random.Random, table: tuple) -> tuple:
    return rng.choices(table, weights=[row[-1] for row in table])[0]


def _seconds(rng: random.Random) -> float:
    """Mostly short tasks; one in ten outlives the lease, so that a worker frozen past its
    lease leaves a task running when its job is reaped and run again elsewhere."""
    roll = rng.random()
    if roll < 0.65:
        return round(rng.uniform(0.02, 0.3), 3)
    if roll < 0.90:
        return round(rng.uniform(0.5, 2.0), 3)
    return round(rng.uniform(3.0, 8.0), 3)


class Submitter:
    """One submitting process of one host."""

    def __init__(self, spool_dir: str, host: str, name: str, out: str, seed: int) -> None:
        from spool import Spool

        self.spool_dir, self.host, self.name, self.out = spool_dir, host, name, out
        self.rng = random.Random(seed)
        self.sp = Spool(spool_dir, host=host)
        self.count = 0

    def one(self) -> None:
        self.count += 1
        tag = f"{self.name}-{self.count}"
        job, fail, _ = _pick(self.rng, JOB_MIX)
        args = {"tag": tag, "seconds": _seconds(self.rng)}
        if fail:
            args["fail"] = fail
        priority = self.rng.randint(3, 7)
        delay = round(self.rng.uniform(0.2, 3.0), 2) if self.rng.random() < 0.1 else None
        how = _pick(self.rng, HOW_MIX)[0]
        expect = "dead" if fail == "always" else "done"
        if how == "api":
            job_id = self.sp.submit(job, args, priority=priority, delay=delay)
        elif how == "cli":
            job_id = self._cli(job, args, priority, delay)
            if job_id is None:
                return
        else:
            how, job_id, job, expect = self._drop(tag, job, args, priority, expect)
        append_line(self.out, {"tag": tag, "id": job_id, "how": how, "job": job,
                               "expect": expect, "mono": time.monotonic()})

    def _cli(self, job: str, args: dict, priority: int, delay: float | None) -> str | None:
        argv = [sys.executable, "-m", "spool.cli", "--spool", self.spool_dir, "--host",
                self.host, "submit", job, json.dumps(args), "--priority", str(priority)]
        if delay is not None:
            argv += ["--delay", f"{delay}s"]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
        if done.returncode != 0:
            print(f"cli submit failed ({done.returncode}): {done.stderr.strip()}",
                  file=sys.stderr, flush=True)
            return None
        return done.stdout.strip()

    def _drop(self, tag: str, job: str, args: dict, priority: int,
              expect: str) -> tuple[str, str | None, str, str]:
        """A hand drop into pending/: written under a dot name and renamed, or written in place
        (like `cp`) in two pieces."""
        kind = _pick(self.rng, DROP_MIX)[0]
        pending = Path(self.spool_dir) / "pending"
        job_id: str | None = f"hd-{tag}"
        body: dict = {"job": job, "args": args, "priority": priority}
        name = f"drop-{tag}.json"
        if kind in ("rename-id", "direct-id"):
            body["id"] = job_id
        elif kind == "stem":
            name = f"{job_id}.json"
        elif kind == "derived":
            name, job_id = f"hand drop {tag}.json", None  # not a valid id: spool derives one
        else:  # an unknown job type: rejected to dead/ as invalid
            body.update(id=job_id, job="no-such-type")
            job, expect = "no-such-type", "invalid"
        data = json.dumps(body).encode()
        if kind == "direct-id":
            with open(pending / name, "wb") as handle:
                handle.write(data[:len(data) // 2])
                handle.flush()
                time.sleep(self.rng.uniform(0, 0.05))
                handle.write(data[len(data) // 2:])
        else:
            staged = pending / f".{name}.part"
            staged.write_bytes(data)
            os.rename(staged, pending / name)
        return f"drop-{kind}", job_id, job, expect

    def loop(self, stop: str, rate: float) -> None:
        from spool.errors import SpoolError

        while not os.path.exists(stop):
            try:
                self.one()
            except (SpoolError, OSError, subprocess.SubprocessError) as exc:
                print(f"submit failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            time.sleep(self.rng.expovariate(rate))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaosfns")
    sub = parser.add_subparsers(dest="command", required=True)
    submit = sub.add_parser("submit", help="submit jobs until --stop exists")
    submit.add_argument("--spool", required=True)
    submit.add_argument("--host", required=True)
    submit.add_argument("--name", required=True, help="unique per incarnation (tags)")
    submit.add_argument("--out", required=True)
    submit.add_argument("--stop", required=True)
    submit.add_argument("--seed", type=int, default=0)
    submit.add_argument("--rate", type=float, default=3.0, help="jobs per second (mean)")
    options = parser.parse_args(argv)
    Submitter(options.spool, options.host, options.name, options.out,
              options.seed).loop(options.stop, options.rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
