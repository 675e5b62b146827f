"""Chaos harness: a spool cluster under random kills and freezes, then an audit.

    .venv/bin/python tests/chaos_harness.py --minutes N [--dir DIR] [--dir-b DIR_B | --nfs]
        [--seed S] [--json] [--work WORKDIR] [--lease SECONDS] [--rate JOBS_PER_S]

Three hosts (a, b, c) with two workers each (capacity 2 or 3 slots per host), two cron daemons
(a, b), a reaper on every host and two submitting processes (API submits, CLI submits and hand
drops of JSON files into pending/) share one spool. With `--dir-b`, the hosts alternate between
two paths of the same spool (the two NFS mounts of /work/shared/nfs-rig): a on DIR, b on DIR_B,
c on DIR. For `--minutes`, every 0.1-0.7 s one process of any kind is SIGKILLed (and restarted)
or frozen (SIGSTOP, then SIGCONT after a random pause, half of the time longer than the lease).
Then the chaos stops, the cluster drains (bounded wait), every daemon is stopped, one
`reap --once` and one `worker --burst` per host clean up, and the audit runs. Exit status 0 when
every check passes, 1 otherwise; the work directory (logs, ledger, report.json) is kept.

What the audit proves, from files alone (DESIGN §3-§6):
- every accepted job (ids printed by submitters, complete drop files, cron fires) is in exactly
  one terminal directory with the expected outcome; none lost; no job file empty or unparsable
  in any state directory (sampled during the chaos too);
- no job ran more often than its history has attempts, and a completed attempt really ran to
  its end; no job in dead/ has a completed attempt;
- no moment where a host ran more slots than its capacity (a sweep over the tasks' own start
  and end instants per host);
- a job ran twice at once only while the worker of the earlier run was frozen past its lease;
- exactly one job per cron fire; after shutdown and the clean-up pass tmp/ holds no job body;
- daemons exit only when asked, stop on SIGTERM, and leave no task running.

Decisions:
- The harness kills and freezes only the daemon process (worker, cron, reaper, submitter),
  never a worker's tasks: they run in their own sessions, and a worker that dies or stalls is
  the realistic failure. The product must stop a dead worker's orphaned tasks (the host ledger
  records task pids) and a woken worker must stop an attempt whose file was reaped (DESIGN §4);
  an orphan that keeps running shows up below as an overlap or a capacity overrun.
- A task records its own start and end (chaosfns.work) on CLOCK_MONOTONIC, which all processes
  of the machine share. A task killed before its end line ends when its process died: the
  harness opens a pidfd for every task as soon as its start line appears and notes when it
  becomes readable. That instant is an upper bound, late by the watcher's latency, so every
  sweep runs twice: with the bound (reported as max slots) and with killed tasks' ends moved
  `slack` seconds earlier ("hard"); only a hard overrun or overlap fails a check.
- An overlap of two runs of one job is explained when the worker (parent pid) of the earlier
  run was frozen for at least `lease - heartbeat - mtime granularity` and the overlap lies
  within that freeze, extended by `heartbeat + 2 s` for the woken (or restarted) worker to stop
  its stale task.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from chaosfns import process_start
from conftest import cli_env, make_spool, wait_until

HOSTS = ("a", "b", "c")
CRON_HOSTS = ("a", "b")
REAPER_HOSTS = ("a", "b", "c")
WORKERS_PER_HOST = 2
SLOTS = {"chaos2": 2}
CHAOS_TYPES = ("chaos1", "chaos2")
ROLE_WEIGHTS = {"worker": 45, "reaper": 15, "cron": 15, "submitter": 25}
MAX_FROZEN = 3

CONFIG = """
[defaults]
heartbeat = "{heartbeat}s"
lease = "{lease}s"
poll = "0.2s"
durable = {durable}
max_attempts = 25
timeout = "60s"
backoff = {{ base = "0.1s", factor = 2.0, max = "1s", jitter = 0.2 }}
grace = "5s"
kill_grace = "1s"

[jobs.chaos1]
handler = "chaosfns:work"

[jobs.chaos2]
handler = "chaosfns:work"
slots = 2

[jobs.doomed]
handler = "chaosfns:work"
max_attempts = 2

[schedules.pulse]
every = "2s"
job = "chaos1"
args = {{ tag = "cron", seconds = 0.1 }}
overlap = "allow"
"""


@dataclass
class Settings:
    """One run's knobs."""

    minutes: float
    spool_dir: Path | None = None
    spool_dir_b: Path | None = None
    seed: int = 20261122
    work: Path | None = None
    lease: float | None = None  # default: 3 s locally, 5 s over two mounts (NFS)
    heartbeat: float = 1.0
    drain_timeout: float = 180.0
    snapshot: bool = True  # run a copy of spool/ and cli/ taken at the start
    slack: float = 0.25
    rate: float = 3.0  # jobs per second per submitter (mean)
    durable: bool = False

    @property
    def nfs(self) -> bool:
        return self.spool_dir_b is not None

    @property
    def lease_s(self) -> float:
        return self.lease if self.lease is not None else (5.0 if self.nfs else 3.0)


# -- the cluster ----------------------------------------------------------------------------


@dataclass
class Proc:
    """One long-running process of the cluster, restarted as new incarnations."""

    role: str
    host: str
    index: int
    spool: Path
    popen: subprocess.Popen | None = None
    incarnation: int = 0
    frozen_at: float | None = None
    thaw_at: float | None = None
    expected_exit: bool = False
    launched_at: float = 0.0
    exit_noted: bool = False

    @property
    def name(self) -> str:
        return f"{self.role}-{self.host}-{self.index}"

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid


@dataclass
class Freeze:
    name: str
    role: str
    host: str
    pid: int
    start: float
    end: float = 0.0
    ended_by: str = "cont"

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class Kill:
    name: str
    role: str
    host: str
    pid: int
    at: float
    frozen: bool


@dataclass
class Exit:
    name: str
    pid: int
    code: int | None
    at: float
    log_tail: str


class Cluster:
    """Starts, kills, freezes, thaws and restarts the cluster's processes."""

    def __init__(self, settings: Settings, work: Path, mounts: dict[str, Path],
                 capacity: dict[str, int], code: Path | None) -> None:
        self.settings = settings
        self.code = code
        # `python -m` puts the working directory first on sys.path: run where the code is
        self.cwd = code if code is not None else TESTS.parent
        self.work = work
        self.mounts = mounts
        self.capacity = capacity
        self.ledger = work / "ledger.jsonl"
        self.accepted = work / "accepted.jsonl"
        self.stop_file = work / "stop-submitters"
        (work / "logs").mkdir(exist_ok=True)
        self.procs: list[Proc] = []
        for host in HOSTS:
            self.procs += [Proc("worker", host, i, mounts[host]) for i in range(WORKERS_PER_HOST)]
        self.procs += [Proc("cron", host, 0, mounts[host]) for host in CRON_HOSTS]
        self.procs += [Proc("reaper", host, 0, mounts[host]) for host in REAPER_HOSTS]
        self.procs += [Proc("submitter", host, i, mounts[host])
                       for i, host in enumerate(("a", "b"))]
        self.freezes: list[Freeze] = []
        self.kills: list[Kill] = []
        self.exits: list[Exit] = []
        self.not_stopped: list[str] = []
        self.worker_pids: dict[int, str] = {}  # every worker pid ever -> host

    def env(self, host: str) -> dict[str, str]:
        env = cli_env(CHAOS_HOST=host, CHAOS_LEDGER=str(self.ledger))
        if self.code is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(self.code), env["PYTHONPATH"]])
        return env

    def spool_argv(self, host: str, *args: str) -> list[str]:
        return [sys.executable, "-m", "spool.cli", "--spool", str(self.mounts[host]),
                "--host", host, *args]

    def argv(self, proc: Proc) -> list[str]:
        if proc.role == "submitter":
            seed = self.settings.seed * 1000 + proc.index * 100 + proc.incarnation
            return [sys.executable, "-m", "chaosfns", "submit", "--spool", str(proc.spool),
                    "--host", proc.host, "--name", f"s{proc.index}.{proc.incarnation}",
                    "--out", str(self.accepted), "--stop", str(self.stop_file),
                    "--seed", str(seed), "--rate", str(self.settings.rate)]
        if proc.role == "worker":
            return self.spool_argv(proc.host, "worker", "--capacity",
                                   str(self.capacity[proc.host]))
        return self.spool_argv(proc.host, {"cron": "cron", "reaper": "reap"}[proc.role])

    def log_path(self, proc: Proc) -> Path:
        return self.work / "logs" / f"{proc.name}.log"

    def launch(self, proc: Proc) -> None:
        proc.incarnation += 1
        with open(self.log_path(proc), "ab") as log:
            proc.popen = subprocess.Popen(self.argv(proc), stdout=log, stderr=log,
                                          stdin=subprocess.DEVNULL, env=self.env(proc.host),
                                          cwd=self.cwd)
            log.write(f"=== harness: {proc.name} incarnation {proc.incarnation} pid "
                      f"{proc.popen.pid} at mono {time.monotonic():.3f}\n".encode())
        proc.frozen_at = proc.thaw_at = None
        proc.launched_at, proc.exit_noted = time.monotonic(), False
        if proc.role == "worker":
            self.worker_pids[proc.pid] = proc.host

    def start(self) -> None:
        for proc in self.procs:
            self.launch(proc)

    def by_role(self, role: str) -> list[Proc]:
        return [proc for proc in self.procs if proc.role == role]

    def frozen(self) -> list[Proc]:
        return [proc for proc in self.procs if proc.frozen_at is not None]

    def freeze(self, proc: Proc, pause: float) -> None:
        assert proc.popen is not None
        if proc.popen.poll() is not None:
            return
        now = time.monotonic()
        os.kill(proc.pid, signal.SIGSTOP)
        proc.frozen_at, proc.thaw_at = now, now + pause
        self.freezes.append(Freeze(proc.name, proc.role, proc.host, proc.pid, now))

    def thaw(self, proc: Proc, ended_by: str = "cont") -> None:
        if proc.frozen_at is None:
            return
        if ended_by == "cont":
            os.kill(proc.pid, signal.SIGCONT)
        for freeze in reversed(self.freezes):
            if freeze.pid == proc.pid and freeze.end == 0.0:
                freeze.end, freeze.ended_by = time.monotonic(), ended_by
                break
        proc.frozen_at = proc.thaw_at = None

    def thaw_due(self, now: float) -> None:
        for proc in self.frozen():
            if proc.thaw_at is not None and now >= proc.thaw_at:
                self.thaw(proc)

    def thaw_all(self) -> None:
        for proc in self.frozen():
            self.thaw(proc)

    def kill(self, proc: Proc, restart: bool = True) -> None:
        """SIGKILL the process itself (never its tasks), then start a new incarnation."""
        was_frozen = proc.frozen_at is not None
        assert proc.popen is not None
        proc.popen.kill()
        now = time.monotonic()
        if was_frozen:
            self.thaw(proc, ended_by="kill")
        self.kills.append(Kill(proc.name, proc.role, proc.host, proc.pid, now, was_frozen))
        proc.popen.wait(30)
        if restart:
            self.launch(proc)

    def restart_exited(self) -> None:
        """Any process that ended on its own (not asked to) is recorded and restarted, at
        most once a second (like systemd's RestartSec) so that a crash loop does not spin."""
        now = time.monotonic()
        for proc in self.procs:
            if proc.popen is None or proc.expected_exit or proc.popen.poll() is None:
                continue
            if not proc.exit_noted:
                proc.exit_noted = True
                self.exits.append(Exit(proc.name, proc.pid, proc.popen.returncode, now,
                                       _tail(self.log_path(proc))))
            if now - proc.launched_at >= 1.0:
                self.launch(proc)

    def stop(self, procs: list[Proc], timeout: float) -> None:
        """SIGTERM, then wait (bounded); what does not stop is noted and SIGKILLed."""
        for proc in procs:
            proc.expected_exit = True
            self.thaw(proc)
            if proc.popen is not None and proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            assert proc.popen is not None
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.not_stopped.append(proc.name)
                proc.popen.kill()
                proc.popen.wait(30)

    def teardown(self) -> None:
        """Last resort (errors, ^C): nothing of ours keeps running."""
        for proc in self.procs:
            if proc.popen is not None and proc.popen.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                proc.popen.kill()
                proc.popen.wait(30)


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- watching tasks -------------------------------------------------------------------------


class TaskWatcher(threading.Thread):
    """Tails the ledger; holds a pidfd per task to learn when each task process died."""

    def __init__(self, ledger: Path) -> None:
        super().__init__(daemon=True, name="task-watcher")
        self.ledger = ledger
        self.offset = 0
        self.partial = b""
        self.starts: dict[tuple, dict] = {}
        self.ends: dict[tuple, dict] = {}
        self.deaths: dict[tuple, tuple[float, str]] = {}  # by process: (pid, pstart)
        self.fds: dict[int, tuple] = {}
        self.watched: set[tuple] = set()
        self.bad_lines: list[str] = []
        self.poller = select.poll()
        self.stopping = threading.Event()

    def run(self) -> None:
        while True:
            stopping = self.stopping.is_set()
            self.read_new()
            for fd, _ in self.poller.poll(20):
                self._died(fd, time.monotonic(), "pidfd")
            if stopping:
                return

    def finish(self) -> list[tuple]:
        """Stop watching; returns the keys of tasks still alive."""
        self.stopping.set()
        self.join(30)
        return list(self.fds.values())

    def alive(self) -> int:
        return len(self.fds)

    def read_new(self) -> None:
        try:
            with open(self.ledger, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        now = time.monotonic()
        for line in lines:
            try:
                record = json.loads(line)
                key = run_key(record)
            except (ValueError, KeyError, TypeError):
                self.bad_lines.append(line.decode(errors="replace"))
                continue
            if record.get("ev") == "start":
                self.starts[key] = record
                if key[:2] not in self.watched:  # a pool child runs attempt after attempt
                    self.watched.add(key[:2])
                    self._watch(key[:2], now)
            else:
                self.ends[key] = record

    def _watch(self, key: tuple, now: float) -> None:
        pid, pstart = key
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self.deaths[key] = (now, "gone-when-seen")
            return
        if process_start(pid) != pstart:  # already gone, pid reused
            os.close(fd)
            self.deaths[key] = (now, "gone-when-seen")
            return
        self.fds[fd] = key
        self.poller.register(fd, select.POLLIN)

    def _died(self, fd: int, now: float, how: str) -> None:
        key = self.fds.pop(fd)
        self.poller.unregister(fd)
        os.close(fd)
        self.deaths[key] = (now, how)


# -- sampling during the chaos --------------------------------------------------------------


class Sampler:
    """Reads state files while the chaos runs: a reader must never see an empty or partial
    job file (DESIGN §3 rule 1). Processing and canonical pending files every pass, terminal
    files once each."""

    def __init__(self, spool: Path) -> None:
        self.spool = spool
        self.seen_terminal: set[str] = set()
        self.problems: list[dict] = []
        self.reads = 0

    def sample(self) -> None:
        from spool.layout import parse_pending_name

        paths = [self.spool / "pending" / n for n in _names(self.spool / "pending")
                 if parse_pending_name(n)]
        for host in _names(self.spool / "processing"):
            paths += [self.spool / "processing" / host / n
                      for n in _names(self.spool / "processing" / host) if n.endswith(".json")]
        for state in ("done", "dead"):
            for name in _names(self.spool / state):
                key = f"{state}/{name}"
                if name.endswith(".json") and key not in self.seen_terminal:
                    self.seen_terminal.add(key)
                    paths.append(self.spool / state / name)
        for path in paths:
            self.check(path)

    def check(self, path: Path) -> None:
        problem = _unparsable(path)
        self.reads += 1
        if problem is None:
            return
        first = problem
        time.sleep(0.2)  # look again: a file renamed away meanwhile is not a finding
        second = _unparsable(path)
        if second is not None:
            self.problems.append({"path": str(path), "first": first, "again": second})


def _names(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _unparsable(path: Path) -> str | None:
    """Why the job file at `path` is no job body, or None (also when it vanished)."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None
    except OSError as exc:
        return f"unreadable: {exc}"
    if not data:
        return "empty"
    try:
        body = json.loads(data)
    except ValueError as exc:
        return f"not JSON ({len(data)} bytes): {exc}; starts {data[:60]!r}"
    if not isinstance(body, dict) or "id" not in body:
        return f"not a job body: {data[:80]!r}"
    return None


# -- the run --------------------------------------------------------------------------------


def run(settings: Settings, log: Callable[[str], None] = print) -> dict:
    """One chaos run and its audit; returns the report (also written to WORK/report.json)."""
    work = settings.work or Path(tempfile.mkdtemp(prefix="spool-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    spool = settings.spool_dir or work / "spool"
    spool_b = settings.spool_dir_b or spool
    if spool.exists() and any(spool.iterdir()):
        raise SystemExit(f"{spool} is not empty: give a fresh spool directory")
    make_spool(spool, CONFIG.format(heartbeat=settings.heartbeat, lease=settings.lease_s,
                                    durable=str(settings.durable).lower()))
    mounts = {"a": spool, "b": spool_b, "c": spool}
    if settings.nfs:
        wait_until(lambda: (spool_b / "spool.toml").exists(), 30, "the spool on the 2nd mount")
    rng = random.Random(settings.seed)
    capacity = {host: rng.choice((2, 3)) for host in HOSTS}
    code_info = code_version()
    code = snapshot_code(work / "code") if settings.snapshot else None
    cluster = Cluster(settings, work, mounts, capacity, code)
    watcher = TaskWatcher(cluster.ledger)
    sampler = Sampler(spool)
    times: dict[str, float] = {"t0": time.monotonic()}
    log(f"chaos: work {work}, spool {spool}" + (f" + {spool_b}" if settings.nfs else "")
        + f", capacity {capacity}, lease {settings.lease_s}s, seed {settings.seed}")
    drained = False
    alive_after: list[tuple] = []
    try:
        watcher.start()
        cluster.start()
        chaos(cluster, rng, settings, sampler, settings.minutes * 60)
        times["chaos_end"] = time.monotonic()
        log(f"chaos: stopping the chaos after {len(cluster.kills)} kills and "
            f"{len(cluster.freezes)} freezes; draining")
        cluster.thaw_all()
        cluster.stop_file.write_text("stop")
        cluster.stop(cluster.by_role("submitter"), 120)
        cluster.stop(cluster.by_role("cron"), 30)
        drained = _drain(cluster, spool, settings.drain_timeout)
        times["drained"] = time.monotonic()
        cluster.stop(cluster.by_role("worker") + cluster.by_role("reaper"), 30)
        cleanup = _cleanup_pass(cluster)
        if settings.nfs:
            _settle_listings(spool, spool_b)
        try:
            wait_until(lambda: watcher.alive() == 0, 10, "tasks to end")
        except AssertionError:
            pass
        alive_after = watcher.finish()
        _kill_tasks(watcher, alive_after)
        times["end"] = time.monotonic()
    except BaseException:
        cluster.teardown()
        watcher.finish()
        raise
    record = RunRecord(
        settings={k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
        spool=str(spool), capacity=capacity, times=times, drained=drained,
        freezes=[asdict(f) for f in cluster.freezes], kills=[asdict(k) for k in cluster.kills],
        exits=[asdict(e) for e in cluster.exits], not_stopped=cluster.not_stopped,
        worker_pids={str(pid): host for pid, host in cluster.worker_pids.items()},
        deaths=[[*key, *death] for key, death in watcher.deaths.items()],
        alive_after=[list(key) for key in alive_after], cleanup=cleanup, code=code_info,
        sample_problems=sampler.problems, sample_reads=sampler.reads)
    (work / "run.json").write_text(json.dumps(asdict(record), indent=1))
    _dump_actions(work, cluster, times["t0"])
    return audit(work)


def snapshot_code(target: Path, timeout: float = 300.0) -> Path:
    """A copy of the tree's spool/ and cli/ (as spool/cli), taken at the start and put first
    on the cluster's PYTHONPATH: the run tests one version of the code, whatever edits land
    meanwhile. A copy that fails the preflight (an edit in progress) is taken again, bounded."""
    import shutil

    tree = TESTS.parent

    def take() -> bool:
        shutil.rmtree(target, ignore_errors=True)
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(tree / "spool", target / "spool", ignore=ignore)
        shutil.copytree(tree / "cli", target / "spool" / "cli", ignore=ignore)
        return preflight(target)

    wait_until(take, timeout, f"a copy of {tree}/spool and cli that passes the preflight")
    return target


def preflight(code: Path) -> bool:
    """Every command the cluster runs works once on a scratch spool: submit, a hand drop,
    cron --once, reap --once, worker --burst, and the job ends in done/."""
    import shutil

    scratch = code / "preflight"
    shutil.rmtree(scratch, ignore_errors=True)
    make_spool(scratch, CONFIG.format(heartbeat=1.0, lease=3.0, durable="false"))
    env = cli_env(CHAOS_HOST="a")
    env["PYTHONPATH"] = os.pathsep.join([str(code), env["PYTHONPATH"]])

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "spool.cli", "--spool", str(scratch),
                               "--host", "a", *args], capture_output=True, text=True, check=False,
                              env=env, cwd=code, timeout=120)
    try:
        submitted = cli("submit", "chaos1", '{"tag": "preflight"}')
        (scratch / "pending" / "preflight-drop.json").write_text(
            '{"job": "chaos1", "args": {"tag": "drop"}}')
        steps = [submitted, cli("cron", "--once"), cli("reap", "--once"),
                 cli("worker", "--burst", "--capacity", "2")]
    except subprocess.TimeoutExpired:
        return False
    done = {n for n in _names(scratch / "done") if n.endswith(".json")}
    ok = all(step.returncode == 0 for step in steps) and \
        {f"{submitted.stdout.strip()}.json", "preflight-drop.json"} <= done
    if not ok:
        print("chaos: preflight failed, taking the snapshot again: " + " | ".join(
            step.stderr.strip().splitlines()[-1] for step in steps
            if step.returncode and step.stderr.strip()), file=sys.stderr, flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    return ok


def code_version() -> dict:
    """The commit of the tree and its uncommitted product files, for the report."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, check=False,
                              cwd=TESTS.parent)
        return done.stdout.strip()
    return {"head": git("rev-parse", "--short", "HEAD"),
            "uncommitted": git("status", "--short", "--", "spool", "cli").splitlines()}


def chaos(cluster: Cluster, rng: random.Random, settings: Settings, sampler: Sampler,
          seconds: float) -> None:
    """Kill or freeze one process at a time, at random, for `seconds`."""
    lease = settings.lease_s
    deadline = time.monotonic() + seconds
    next_sample = time.monotonic() + 3.0
    roles = list(ROLE_WEIGHTS)
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.1, 0.7))  # the chaos's own pace, not a synchronisation
        now = time.monotonic()
        cluster.thaw_due(now)
        cluster.restart_exited()
        proc = rng.choice(cluster.by_role(rng.choices(roles, [ROLE_WEIGHTS[r] for r in roles])[0]))
        if rng.random() < 0.5:
            cluster.kill(proc)
        elif proc.frozen_at is None and len(cluster.frozen()) < MAX_FROZEN:
            long = rng.random() < 0.5
            pause = rng.uniform(1.2, 2.5) * lease if long else rng.uniform(0.1, 0.6) * lease
            cluster.freeze(proc, pause)
        if now >= next_sample:
            sampler.sample()
            next_sample = time.monotonic() + 3.0
    cluster.thaw_all()


def _drain(cluster: Cluster, spool: Path, timeout: float) -> bool:
    """Wait (bounded) until nothing is pending, dropped, held or processing."""
    def drained() -> bool:
        cluster.restart_exited()
        return not _unfinished(spool)
    try:
        wait_until(drained, timeout, "the cluster to drain")
        return True
    except AssertionError:
        return False


def _unfinished(spool: Path) -> list[str]:
    """Names of job files still waiting or running (dot files are ignored by spool)."""
    names = [f"pending/{n}" for n in _names(spool / "pending")
             if n.endswith(".json") and not n.startswith(".")]
    for host in _names(spool / "processing"):
        names += [f"processing/{host}/{n}" for n in _names(spool / "processing" / host)
                  if n.endswith(".json") and not n.startswith(".")]
    names += [f"held/{n}" for n in _names(spool / "held") if n.endswith(".json")]
    return names


def _cleanup_pass(cluster: Cluster) -> list[dict]:
    """After shutdown: one `reap --once` and one `worker --burst` per host."""
    results = []
    for host in HOSTS:
        for args in (("reap", "--once"),
                     ("worker", "--burst", "--capacity", str(cluster.capacity[host]))):
            argv = cluster.spool_argv(host, *args)
            try:
                done = subprocess.run(argv, capture_output=True, text=True, check=False,
                                      timeout=120,
                                      env=cluster.env(host), cwd=cluster.cwd)
                code, err = done.returncode, done.stderr
            except subprocess.TimeoutExpired as exc:
                code, err = None, f"timed out: {exc}"
            with open(cluster.work / "logs" / f"cleanup-{host}.log", "a") as handle:
                handle.write(f"=== {' '.join(args)}: exit {code}\n{err}\n")
            results.append({"host": host, "command": " ".join(args), "exit": code})
    return results


def _settle_listings(spool: Path, spool_b: Path) -> None:
    """Over two NFS mounts, wait (bounded) until both see the same state directories."""
    def same() -> bool:
        return all(sorted(_names(spool / d)) == sorted(_names(spool_b / d))
                   for d in ("pending", "done", "dead", "tmp"))
    try:
        wait_until(same, 20, "both mounts to list the same files")
    except AssertionError:
        pass


def _kill_tasks(watcher: TaskWatcher, keys: list[tuple]) -> None:
    """Tasks still running after shutdown (already reported): stop them, ours to clean up."""
    for pid, pstart in keys:
        if process_start(pid) == pstart:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _dump_actions(work: Path, cluster: Cluster, t0: float) -> None:
    """Every kill, freeze and unasked exit, with its time since the start (t)."""
    rows = [{"action": "kill", **asdict(k), "t": k.at - t0} for k in cluster.kills]
    rows += [{"action": "freeze", **asdict(f), "t": f.start - t0} for f in cluster.freezes]
    rows += [{"action": "exit", **asdict(e), "t": e.at - t0} for e in cluster.exits]
    with open(work / "chaos-actions.jsonl", "w") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in sorted(rows, key=lambda r: r["t"]))


# -- the audit ------------------------------------------------------------------------------


@dataclass
class RunRecord:
    """What the audit needs besides the spool, the ledger and the accepted list: written to
    WORK/run.json, so that `--audit WORK` can audit a run again."""

    settings: dict
    spool: str
    capacity: dict[str, int]
    times: dict[str, float]
    drained: bool
    freezes: list[dict]
    kills: list[dict]
    exits: list[dict]
    not_stopped: list[str]
    worker_pids: dict[str, str]
    deaths: list[list]  # [pid, pstart, mono, how]
    alive_after: list[list]  # [pid, pstart]
    cleanup: list[dict]
    sample_problems: list[dict]
    sample_reads: int
    code: dict = field(default_factory=dict)


@dataclass
class Execution:
    """One run of one attempt, from the task's own lines (and its death, when killed)."""

    job: str
    type: str
    attempt: int
    host: str
    pid: int
    worker: int
    start: float
    end: float
    end_kind: str  # "end" (its own line), "killed" (died without one), "alive" (at shutdown)
    ok: bool | None
    slots: int = 1

    def hard_end(self, slack: float) -> float:
        """The end without the watcher's latency: killed tasks died up to `slack` earlier."""
        return self.end if self.end_kind == "end" else max(self.start, self.end - slack)


@dataclass
class Check:
    name: str
    ok: bool
    summary: str
    evidence: list = field(default_factory=list)
    figures: dict = field(default_factory=dict)


def run_key(record: dict) -> tuple:
    """A run: (pid, process start, job, attempt). The process alone is not enough: a handler
    pool child runs one attempt after another."""
    return record["pid"], record["pstart"], record["job"], record["attempt"]


def read_ledger(path: Path) -> tuple[dict[tuple, dict], dict[tuple, dict], list[str]]:
    """Start and end lines by run (`run_key`), and the lines that do not parse."""
    starts: dict[tuple, dict] = {}
    ends: dict[tuple, dict] = {}
    bad = []
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        lines = []
    for line in lines:
        try:
            record = json.loads(line)
            key = run_key(record)
        except (ValueError, KeyError, TypeError):
            bad.append(line.decode(errors="replace"))
            continue
        (starts if record.get("ev") == "start" else ends)[key] = record
    return starts, ends, bad


def executions(starts: dict[tuple, dict], ends: dict[tuple, dict],
               deaths: dict[tuple, float], end_of_run: float) -> list[Execution]:
    found = []
    for key, start in starts.items():
        end = ends.get(key)
        if end is not None:
            stop, kind, ok = end["mono"], "end", bool(end.get("ok"))
        elif key[:2] in deaths:  # its process died before the run's end
            stop, kind, ok = deaths[key[:2]], "killed", None
        else:
            stop, kind, ok = end_of_run, "alive", None
        found.append(Execution(start["job"], start["type"], start["attempt"], start["host"],
                               start["pid"], start["ppid"], start["mono"], stop, kind, ok,
                               SLOTS.get(start["type"], 1)))
    return sorted(found, key=lambda e: e.start)


def scan_states(spool: Path) -> tuple[dict[str, list[str]], dict[str, dict], list[dict]]:
    """Where each job id stands, its body (the terminal one when there is one), and every
    state-directory file that is not a job body."""
    from spool.layout import parse_pending_name, parse_processing_name

    where: dict[str, list[str]] = defaultdict(list)
    bodies: dict[str, dict] = {}
    bad: list[dict] = []
    entries: list[tuple[str, str, Path]] = []
    for name in _names(spool / "pending"):
        if parsed := parse_pending_name(name):
            entries.append(("pending", parsed.id, spool / "pending" / name))
    for host in _names(spool / "processing"):
        for name in _names(spool / "processing" / host):
            if parsed := parse_processing_name(name):
                entries.append(("processing", parsed[0], spool / "processing" / host / name))
    for state in ("held", "dead", "done"):
        entries += [(state, n[:-5], spool / state / n) for n in _names(spool / state)
                    if n.endswith(".json") and not n.startswith(".")]
    for state, job_id, path in entries:
        where[job_id].append(state)
        problem = _unparsable(path)
        if problem is not None:
            bad.append({"path": str(path.relative_to(spool)), "problem": problem})
            continue
        bodies[job_id] = json.loads(path.read_bytes())
    return where, bodies, bad


def audit(work: Path) -> dict:
    """Audit the run recorded in `work` (run.json, ledger.jsonl, accepted.jsonl, the spool);
    the report is also written to WORK/report.json."""
    record = RunRecord(**json.loads((work / "run.json").read_text()))
    settings = Settings(**{k: Path(v) if k in ("spool_dir", "spool_dir_b", "work") and v
                           else v for k, v in record.settings.items()})
    spool = Path(record.spool)
    if not spool.exists() and (work / "spool").exists():
        spool = work / "spool"  # an NFS run's spool, copied home (--nfs)
    times = record.times
    starts, ends, bad_lines = read_ledger(work / "ledger.jsonl")
    deaths = {(pid, pstart): mono for pid, pstart, mono, _ in record.deaths}
    runs = executions(starts, ends, deaths, times["end"])
    by_job: dict[str, list[Execution]] = defaultdict(list)
    for run_ in runs:
        by_job[run_.job].append(run_)
    where, bodies, bad_files = scan_states(spool)
    accepted = _accepted(work / "accepted.jsonl")
    tag_index: dict[str, list[str]] = defaultdict(list)
    for job_id, body in bodies.items():
        args = body.get("args")
        if isinstance(args, dict) and isinstance(args.get("tag"), str) and args["tag"] != "cron":
            tag_index[args["tag"]].append(job_id)
    ctx = Context(settings, times["t0"], runs, by_job, where, bodies, accepted, tag_index,
                  _fires(spool), record, [Freeze(**f) for f in record.freezes],
                  [Kill(**k) for k in record.kills], starts)
    unfinished = _unfinished(spool)
    checks = [
        Check("drained", record.drained and not unfinished,
              "pending/, held/ and processing/ emptied within the drain timeout"
              if record.drained else f"not drained within {settings.drain_timeout:g}s",
              unfinished[:20]),
        check_accepted(ctx),
        check_one_state(ctx),
        check_parsable(bad_files, record),
        check_runs_vs_attempts(ctx),
        check_dead_completed(ctx),
        check_capacity(ctx),
        check_overlaps(ctx),
        check_cron(ctx),
        check_tmp(spool, where),
        check_daemons(ctx),
    ]
    figures = _figures(ctx, work, bad_lines, checks)
    report = {"ok": all(c.ok for c in checks), "seed": settings.seed, "work": str(work),
              "spool": str(spool), "code": record.code, "checks": [asdict(c) for c in checks],
              "figures": figures}
    (work / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return report


@dataclass
class Context:
    settings: Settings
    t0: float
    runs: list[Execution]
    by_job: dict[str, list[Execution]]
    where: dict[str, list[str]]
    bodies: dict[str, dict]
    accepted: list[dict]
    tag_index: dict[str, list[str]]
    fires: list[dict]
    record: RunRecord
    freezes: list[Freeze]
    kills: list[Kill]
    starts: dict[tuple, dict]

    def t(self, mono: float) -> float:
        return round(mono - self.t0, 3)

    def run_info(self, run_: Execution) -> dict:
        return {"attempt": run_.attempt, "host": run_.host, "pid": run_.pid,
                "worker": run_.worker, "start": self.t(run_.start), "end": self.t(run_.end),
                "end_kind": run_.end_kind, "slots": run_.slots}

    def history(self, job_id: str) -> list[dict]:
        keep = ("attempt", "host", "worker", "outcome", "error")
        return [{k: h.get(k) for k in keep} for h in self.bodies.get(job_id, {}).get("history")
                or []]


def _accepted(path: Path) -> list[dict]:
    found = []
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return found
    for line in lines:
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def _accepted_ids(ctx: Context) -> set[str]:
    """Ids of accepted jobs and cron fires (a derived-id drop found by its tag)."""
    ids = {f["id"] for f in ctx.fires}
    for rec in ctx.accepted:
        ids.update([rec["id"]] if rec.get("id") else ctx.tag_index.get(rec["tag"], []))
    return ids


def _fires(spool: Path) -> list[dict]:
    fires = []
    for name in _names(spool / "cron"):
        if not name.startswith("pulse@"):
            continue
        try:
            marker = json.loads((spool / "cron" / name).read_bytes())
        except (OSError, ValueError):
            marker = {"id": name, "unreadable": True}
        fires.append({"id": name, **marker})
    return fires


EXPECT = {"done": ("done", ("completed",)), "dead": ("dead", ("failed", "lost")),
          "invalid": ("dead", ("invalid",))}


def check_accepted(ctx: Context) -> Check:
    """Every accepted job (and cron fire) in exactly one terminal directory, as expected."""
    problems = []
    wanted = [(rec.get("id"), rec) for rec in ctx.accepted]
    wanted += [(fire["id"], {"tag": "cron", "id": fire["id"], "how": "cron", "expect": "done"})
               for fire in ctx.fires if "skipped" not in fire]
    for job_id, rec in wanted:
        if job_id is None:  # a drop whose id spool derived: found by its tag
            ids = ctx.tag_index.get(rec["tag"], [])
            if len(ids) != 1:
                problems.append({"tag": rec["tag"], "how": rec["how"],
                                 "problem": "lost" if not ids else f"{len(ids)} jobs: {ids}"})
                continue
            job_id = ids[0]
        states = ctx.where.get(job_id, [])
        state, outcomes = EXPECT[rec["expect"]]
        body = ctx.bodies.get(job_id, {})
        if not states:
            problems.append({"id": job_id, "how": rec["how"], "problem": "lost: in no state"})
        elif states != [state] or body.get("outcome") not in outcomes:
            problems.append({"id": job_id, "how": rec["how"], "states": states,
                             "outcome": body.get("outcome"), "error": body.get("error"),
                             "expected": f"{state}/ {'|'.join(outcomes)}",
                             "history": ctx.history(job_id)})
    return Check("accepted_jobs_terminal_once", not problems,
                 f"{len(wanted)} accepted jobs and cron fires; {len(problems)} not in exactly "
                 "one terminal directory with the expected outcome", problems[:20])


def check_one_state(ctx: Context) -> Check:
    """No job id in two state directories (accepted or not)."""
    doubles = {job_id: states for job_id, states in ctx.where.items() if len(states) > 1}
    return Check("one_state_per_job", not doubles,
                 f"{len(ctx.where)} job ids in the state directories; {len(doubles)} in more "
                 "than one", [{"id": k, "states": v} for k, v in list(doubles.items())[:20]])


def check_parsable(bad_files: list[dict], record: RunRecord) -> Check:
    ok = not bad_files and not record.sample_problems
    return Check("job_files_parse", ok,
                 f"{len(bad_files)} unparsable job files at the end; "
                 f"{len(record.sample_problems)} seen during the chaos "
                 f"({record.sample_reads} reads)", (bad_files + record.sample_problems)[:20])


def check_runs_vs_attempts(ctx: Context) -> Check:
    """Executions <= attempts in the history; a completed attempt ran to its end."""
    problems = []
    for job_id, runs in ctx.by_job.items():
        body = ctx.bodies.get(job_id)
        if body is None:
            problems.append({"id": job_id, "problem": "ran, but its job file is gone",
                             "runs": [ctx.run_info(r) for r in runs]})
            continue
        history = body.get("history") or []
        numbers = {h.get("attempt") for h in history}
        strays = [r.attempt for r in runs if r.attempt not in numbers]
        if len(runs) > len(history) or strays:
            problems.append({"id": job_id, "problem": f"{len(runs)} runs, {len(history)} "
                             f"attempts in history; runs of attempts not in it: {strays}",
                             "runs": [ctx.run_info(r) for r in runs],
                             "history": ctx.history(job_id)})
    for job_id, body in ctx.bodies.items():
        if body.get("outcome") != "completed" or not body.get("history"):
            continue
        last = body["history"][-1].get("attempt")
        if not any(r.attempt == last and r.end_kind == "end" and r.ok
                   for r in ctx.by_job.get(job_id, [])):
            problems.append({"id": job_id, "problem": f"completed by attempt {last}, which "
                             "never ran to its end", "runs": [ctx.run_info(r) for r in
                                                              ctx.by_job.get(job_id, [])],
                             "history": ctx.history(job_id)})
    return Check("runs_within_attempts", not problems,
                 f"{len(ctx.runs)} runs of {len(ctx.by_job)} jobs; {len(problems)} jobs ran "
                 "more often than their attempts, or completed without a finished run",
                 problems[:20])


def check_dead_completed(ctx: Context) -> Check:
    problems = []
    for job_id, body in ctx.bodies.items():
        if "dead" not in ctx.where.get(job_id, []):
            continue
        if any(h.get("outcome") == "completed" for h in body.get("history") or []):
            problems.append({"id": job_id, "history": ctx.history(job_id)})
    return Check("no_dead_job_completed", not problems,
                 f"{len(problems)} jobs in dead/ with a completed attempt", problems[:20])


def sweep(runs: list[Execution], end: Callable[[Execution], float]) -> tuple[int, list]:
    """Max slots in use at once, and each moment the use rose, with the runs running then.
    At equal instants ends come first (touching runs do not overlap); runs of no length are
    left out (their end would sort before their start)."""
    runs = [r for r in runs if end(r) > r.start]
    events = sorted([(r.start, 1, i) for i, r in enumerate(runs)]
                    + [(end(r), -1, i) for i, r in enumerate(runs)])
    in_use, peak, running, moments = 0, 0, set(), []
    for at, kind, index in events:
        if kind > 0:
            running.add(index)
            in_use += runs[index].slots
            moments.append((at, in_use, [runs[i] for i in sorted(running)]))
        else:
            running.discard(index)
            in_use -= runs[index].slots
        peak = max(peak, in_use)
    return peak, moments


def check_capacity(ctx: Context) -> Check:
    """No moment where a host ran more slots than its capacity."""
    problems, hosts = [], {}
    slack = ctx.settings.slack
    for host in HOSTS:
        runs = [r for r in ctx.runs if r.host == host]
        capacity = ctx.record.capacity[host]
        peak, _ = sweep(runs, lambda r: r.end)
        hard, moments = sweep(runs, lambda r: r.hard_end(slack))
        hosts[host] = {"capacity": capacity, "max_slots": peak, "max_slots_hard": hard}
        over = [m for m in moments if m[1] > capacity]
        for at, in_use, running in over[:5]:
            problems.append({"host": host, "t": ctx.t(at), "slots": in_use,
                             "capacity": capacity,
                             "running": [{"id": r.job, **ctx.run_info(r)} for r in running]})
    return Check("host_capacity", not problems,
                 "max slots in use per host (capacity): " + ", ".join(
                     f"{h} {v['max_slots_hard']}({v['capacity']})" for h, v in hosts.items()),
                 problems[:15], {"hosts": hosts})


def check_overlaps(ctx: Context) -> Check:
    """Two runs of one job at once only while the earlier run's worker was frozen past the
    lease (its file reaped), up to the woken worker stopping its stale task."""
    settings = ctx.settings
    granularity = 1.0 if settings.nfs else 0.0
    min_freeze = settings.lease_s - settings.heartbeat - granularity - 0.1
    margin = settings.heartbeat + 2.0
    overlaps, unexplained = [], []
    for job_id, runs in ctx.by_job.items():
        for i, first in enumerate(runs):
            for second in runs[i + 1:]:
                start, stop = second.start, min(first.end, second.end)
                if stop <= start:
                    continue
                hard = min(first.hard_end(settings.slack), second.hard_end(settings.slack))
                item = {"id": job_id, "from": ctx.t(start), "to": ctx.t(stop),
                        "hard": hard > start, "first": ctx.run_info(first),
                        "second": ctx.run_info(second)}
                freeze = next((f for f in ctx.freezes if f.pid == first.worker
                               and f.duration >= min_freeze and f.start <= start
                               and stop <= f.end + margin), None)
                item["explained_by"] = (None if freeze is None else
                                        f"freeze of {freeze.name} pid {freeze.pid} "
                                        f"{ctx.t(freeze.start)}..{ctx.t(freeze.end)}")
                if freeze is not None:  # how long the woken worker let its stale task run
                    item["after_thaw_s"] = round(stop - freeze.end, 3)
                overlaps.append(item)
                if freeze is None and item["hard"]:
                    item["context"] = _overlap_context(ctx, first, start)
                    item["history"] = ctx.history(job_id)
                    unexplained.append(item)
    explained = sum(1 for o in overlaps if o["explained_by"])
    marginal = sum(1 for o in overlaps if not o["hard"])
    after_thaw = [o["after_thaw_s"] for o in overlaps if "after_thaw_s" in o]
    return Check("overlaps_explained", not unexplained,
                 f"{len(overlaps)} overlapping runs of one job ({explained} explained by a "
                 f"freeze past the lease, {marginal} within the watcher's slack); "
                 f"{len(unexplained)} unexplained",
                 unexplained[:15] + [o for o in overlaps if o["explained_by"]][:5],
                 {"total": len(overlaps), "explained": explained, "marginal": marginal,
                  "unexplained": len(unexplained),
                  "max_s_stale_task_ran_after_thaw": max(after_thaw, default=None)})


def _overlap_context(ctx: Context, first: Execution, at: float) -> list[str]:
    """What happened to the earlier run's worker and its host around the overlap."""
    notes = []
    if str(first.worker) not in ctx.record.worker_pids:
        notes.append(f"its task's parent was pid {first.worker}: its worker had died before "
                     "the task's first line")
        for kill in ctx.kills:
            if kill.role == "worker" and kill.host == first.host and \
                    first.start - 2.0 <= kill.at <= first.start:
                notes.append(f"{kill.name} pid {kill.pid} was SIGKILLed at {ctx.t(kill.at)}")
    for kill in ctx.kills:
        if kill.pid == first.worker:
            notes.append(f"its worker {kill.name} pid {kill.pid} was SIGKILLed at "
                         f"{ctx.t(kill.at)}{' while frozen' if kill.frozen else ''}")
    for freeze in ctx.freezes:
        if freeze.pid == first.worker:
            notes.append(f"its worker was frozen {ctx.t(freeze.start)}..{ctx.t(freeze.end)} "
                         f"({freeze.duration:.2f}s, ended by {freeze.ended_by})")
        elif freeze.host == first.host and freeze.role == "worker" and \
                freeze.start <= at <= freeze.end + 1.0:
            notes.append(f"{freeze.name} (same host) was frozen {ctx.t(freeze.start)}.."
                         f"{ctx.t(freeze.end)}: did it hold the host lock?")
    return notes or ["its worker was neither killed nor frozen"]


def check_cron(ctx: Context) -> Check:
    """Exactly one job per cron fire."""
    problems = []
    jobs_by_fire: dict[str, list[str]] = defaultdict(list)
    for job_id, body in ctx.bodies.items():
        meta = body.get("meta") or {}
        if meta.get("schedule") == "pulse":
            jobs_by_fire[meta.get("fire_time")].append(job_id)
    for fire_time, ids in jobs_by_fire.items():
        if len(ids) != 1:
            problems.append({"fire_time": fire_time, "jobs": ids})
    markers = {f["id"] for f in ctx.fires}
    without_marker = sorted(i for ids in jobs_by_fire.values() for i in ids if i not in markers)
    for fire in ctx.fires:
        if "skipped" not in fire and fire["id"] not in ctx.where:
            problems.append({"fire": fire["id"], "problem": "marker without a job"})
    missed = _missed_fires(sorted(markers))
    return Check("one_job_per_cron_fire", not problems,
                 f"{len(markers)} fires, {len(jobs_by_fire)} scheduled jobs; {len(problems)} "
                 f"problems; {len(without_marker)} jobs without a marker; {missed} fire times "
                 "skipped (both crons down or frozen: catchup=latest)",
                 problems[:20] + ([{"without_marker": without_marker[:10]}]
                                  if without_marker else []))


def _missed_fires(ids: list[str]) -> int:
    from datetime import datetime

    stamps = sorted(datetime.strptime(i.split("@", 1)[1], "%Y%m%dT%H%M%SZ") for i in ids
                    if "@" in i)
    return sum(max(0, round((b - a).total_seconds() / 2) - 1)
               for a, b in itertools.pairwise(stamps))


def check_tmp(spool: Path, where: dict[str, list[str]]) -> Check:
    """After shutdown and the clean-up pass, tmp/ holds no job body."""
    bodies, other = [], Counter()
    for name in _names(spool / "tmp"):
        try:
            body = json.loads((spool / "tmp" / name).read_bytes())
        except (OSError, ValueError):
            body = None
        if isinstance(body, dict) and "job" in body and "id" in body:
            job_id = body["id"]
            parts = name.split(",")
            writer = int(parts[2]) if len(parts) >= 4 and parts[2].isdigit() else None
            bodies.append({"name": name, "id": job_id, "job_states": where.get(job_id, []),
                           "outcome": body.get("outcome"), "attempts": body.get("attempts"),
                           "writer_pid": writer, "writer_alive": writer is not None
                           and os.path.exists(f"/proc/{writer}")})
        else:
            other[_tmp_kind(name)] += 1
    return Check("tmp_holds_no_job_body", not bodies,
                 f"{len(bodies)} job bodies left in tmp/; other leftovers: {dict(other)}",
                 bodies[:20], {"job_bodies": len(bodies), "other": dict(other)})


def _tmp_kind(name: str) -> str:
    if "," in name:
        return name.split(",")[0]
    for kind in (".result", ".finish-", ".requeue.", ".retry.", ".adopt.", "probe", "state."):
        if kind in name:
            return kind.strip(".-")
    return name.split(".")[0]


def check_daemons(ctx: Context) -> Check:
    record = ctx.record
    problems: list[Any] = []
    for exit_ in record.exits:
        problems.append({"exited unasked": exit_["name"], "pid": exit_["pid"],
                         "code": exit_["code"], "t": ctx.t(exit_["at"]),
                         "log": exit_["log_tail"]})
    problems += [{"did not stop on SIGTERM": name} for name in record.not_stopped]
    for pid, pstart in record.alive_after:
        start = max((record for key, record in ctx.starts.items() if key[:2] == (pid, pstart)),
                    key=lambda record: record["mono"], default={})
        problems.append({"task alive after shutdown": start.get("job"), "pid": pid,
                         "attempt": start.get("attempt"), "host": start.get("host")})
    problems += [{"clean-up failed": c} for c in record.cleanup if c["exit"] != 0]
    return Check("daemons_behave", not problems,
                 f"{len(record.exits)} unasked exits, {len(record.not_stopped)} ignored "
                 f"SIGTERM, {len(record.alive_after)} tasks alive after shutdown", problems[:20])


def _figures(ctx: Context, work: Path, bad_lines: list[str], checks: list[Check]) -> dict:
    times = ctx.record.times
    lease = ctx.settings.lease_s
    overlaps = next(c for c in checks if c.name == "overlaps_explained").figures
    capacity = next(c for c in checks if c.name == "host_capacity").figures["hosts"]
    tracebacks = {}
    for log in sorted((work / "logs").glob("*.log")):
        count = log.read_text(errors="replace").count("Traceback (most recent call last)")
        if count:
            tracebacks[log.stem] = count
    counts = Counter(len(runs) for runs in ctx.by_job.values())
    states = Counter(s for states in ctx.where.values() for s in states)
    return {
        "duration_s": {"chaos": round(times["chaos_end"] - times["t0"], 1),
                       "drain": round(times["drained"] - times["chaos_end"], 1),
                       "total": round(times["end"] - times["t0"], 1)},
        "jobs": {"accepted": len(ctx.accepted),
                 "accepted_by_how": dict(Counter(r["how"] for r in ctx.accepted)),
                 "cron_fires": len(ctx.fires), "in_states": dict(states),
                 "not_accepted": len(set(ctx.where) - _accepted_ids(ctx))},
        "runs": len(ctx.runs), "reruns": sum(n - 1 for n in counts.elements() if n > 1),
        "jobs_run_n_times": dict(sorted(counts.items())),
        "killed_tasks": sum(1 for r in ctx.runs if r.end_kind == "killed"),
        "attempt_outcomes": dict(Counter(h.get("outcome") for body in ctx.bodies.values()
                                         for h in body.get("history") or [])),
        "lost_attempts_recovered_by": _recoveries(Path(ctx.record.spool)),
        "kills": dict(Counter(k.role for k in ctx.kills)),
        "freezes": dict(Counter(f.role for f in ctx.freezes)),
        "freezes_past_lease": sum(1 for f in ctx.freezes if f.duration >= lease),
        "overlaps": overlaps,
        "hosts": capacity,
        "tmp_leftovers": next(c for c in checks if c.name == "tmp_holds_no_job_body").figures,
        "unasked_exits": len(ctx.record.exits),
        "tracebacks_in_logs": tracebacks,
        "ledger_bad_lines": len(bad_lines),
        "sampled_reads": ctx.record.sample_reads,
    }


def _recoveries(spool: Path) -> dict[str, int]:
    """From the journal: lost attempts taken back by their own host (flock free) or by
    another host (heartbeat older than the lease: a reap)."""
    events = []
    for path in (spool / "events").glob("*/*.jsonl"):
        for line in path.read_bytes().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    claimed_on: dict[str, str] = {}
    counts: Counter = Counter()
    for event in sorted(events, key=lambda e: e.get("time", "")):
        if event.get("event") == "claim":
            claimed_on[event.get("id")] = event.get("host")
        elif event.get("outcome") == "lost":
            same = claimed_on.get(event.get("id")) == event.get("host")
            counts["own host" if same else "other host"] += 1
    return dict(counts)


# -- output ---------------------------------------------------------------------------------


def render(report: dict) -> str:
    """The checks as a table, then the hosts and the figures."""
    lines = [f"{'check':<30} {'result':<6} summary", "-" * 100]
    for check in report["checks"]:
        lines.append(f"{check['name']:<30} {'PASS' if check['ok'] else 'FAIL':<6} "
                     f"{check['summary']}")
    figures = report["figures"]
    lines += ["", f"{'host':<6} {'capacity':>8} {'max slots':>10} {'max (hard)':>11}"]
    for host, info in figures["hosts"].items():
        lines.append(f"{host:<6} {info['capacity']:>8} {info['max_slots']:>10} "
                     f"{info['max_slots_hard']:>11}")
    lines += ["", "figures: " + json.dumps({k: v for k, v in figures.items() if k != "hosts"})]
    for check in report["checks"]:
        if not check["ok"]:
            lines += ["", f"FAIL {check['name']}: {check['summary']}"]
            lines += [f"  {json.dumps(item, default=str)}" for item in check["evidence"][:5]]
    lines += ["", f"work directory (logs, ledger, report.json): {report.get('work')}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, help="length of the chaos")
    parser.add_argument("--audit", type=Path, metavar="WORK",
                        help="audit the run recorded in WORK again (no chaos)")
    parser.add_argument("--dir", type=Path, help="the spool (fresh); default: in --work")
    parser.add_argument("--dir-b", type=Path, help="the same spool through a second mount")
    parser.add_argument("--nfs", action="store_true",
                        help="a fresh spool on the rig's mounts $SPOOL_NFS_A and $SPOOL_NFS_B")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--work", type=Path, help="logs, ledger and report (local disk)")
    parser.add_argument("--lease", type=float, help="seconds (default 3, 5 with --dir-b)")
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument("--rate", type=float, default=3.0, help="jobs/s per submitter")
    parser.add_argument("--durable", action="store_true", help="fsync (durable = true)")
    parser.add_argument("--live", action="store_true",
                        help="run the tree's code as it changes, not a copy taken at the start")
    parser.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    options = parser.parse_args(argv)
    if options.audit:
        report = audit(options.audit)
        print(render(report), file=sys.stderr if options.json else sys.stdout)
        if options.json:
            print(json.dumps(report, indent=2, default=str))
        return 0 if report["ok"] else 1
    if options.minutes is None:
        parser.error("--minutes is required (or --audit WORK)")
    if options.nfs:
        name = f"chaos-{options.seed}-{os.getpid()}"
        try:
            options.dir = Path(os.environ["SPOOL_NFS_A"]) / name
            options.dir_b = Path(os.environ["SPOOL_NFS_B"]) / name
        except KeyError:
            parser.error('--nfs needs SPOOL_NFS_A and SPOOL_NFS_B: eval "$(rig env)"')
    settings = Settings(options.minutes, options.dir, options.dir_b, options.seed, options.work,
                        options.lease, drain_timeout=options.drain_timeout, rate=options.rate,
                        durable=options.durable, snapshot=not options.live)
    report = run(settings, log=lambda text: print(text, file=sys.stderr, flush=True))
    if options.nfs:  # keep the evidence locally; the rig's export is shared (its README)
        import shutil

        shutil.copytree(options.dir, Path(report["work"]) / "spool", symlinks=True)
        shutil.rmtree(options.dir, ignore_errors=True)
        report["spool"] = str(Path(report["work"]) / "spool")
    print(render(report), file=sys.stderr if options.json else sys.stdout)
    if options.json:
        print(json.dumps(report, indent=2, default=str))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
