"""Two simulated hosts sharing one spool on the NFS rig: host `a` works through mount A, host
`b` through mount B (the same export directory, seen by two independent NFS clients).

Tasks record each execution on the local disk, outside the export, one line per start and end
in `runs/<host>.log` (`start ID ATTEMPT HOST PID TAG TIME`), so counting executions never
depends on NFS appends from several clients.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from conftest import make_spool, spool_cli, start_cli, state_files, wait_until
from spool.ledger import pid_alive

# Every task appends a start line, does its work, appends an end line; $1 is the job's tag.
_RECORD = ('r="$RUNS/$RUN_HOST.log"; '
           'echo "start $SPOOL_JOB_ID $SPOOL_ATTEMPT $RUN_HOST $$ $1 $(date +%s.%N)" >> "$r"; ')
_END = '; echo "end $SPOOL_JOB_ID $SPOOL_ATTEMPT $RUN_HOST $$ $1" >> "$r"'

# lease >= 4 s: the fuse-nfs mounts store utime in whole seconds and cache attributes ~1 s.
NFS_CONFIG = f"""
[defaults]
heartbeat = "1s"
lease = "4s"
poll = "0.2s"
durable = false
max_attempts = 5
backoff = {{ base = "0.1s", factor = 2.0, max = "1s", jitter = 0 }}
grace = "5s"
kill_grace = "1s"

[jobs.mark]     # sleeps `seconds` on every attempt
command = ["sh", "-c", '{_RECORD}sleep "$2"{_END}', "mark", "{{tag}}", "{{seconds}}"]
env = {{ RUNS = "@RUNS@" }}

[jobs.stall]    # sleeps `seconds` on its first attempt only, then 0.2 s
command = ["sh", "-c",
           '{_RECORD}if [ "$SPOOL_ATTEMPT" = 1 ]; then sleep "$2"; else sleep 0.2; fi{_END}',
           "stall", "{{tag}}", "{{seconds}}"]
env = {{ RUNS = "@RUNS@" }}

[jobs.gate]     # runs until the file `flag` exists
command = ["sh", "-c", '{_RECORD}while [ ! -e "$2" ]; do sleep 0.1; done{_END}',
           "gate", "{{tag}}", "{{flag}}"]
env = {{ RUNS = "@RUNS@" }}
timeout = "180s"

[jobs.hmark]    # a handler: appends a JSON line (with its job id) to `path`
handler = "taskfns:record"
"""


class Run(NamedTuple):
    """One line of a task's record."""

    what: str          # "start" or "end"
    job: str
    attempt: int
    host: str
    pid: int
    tag: str
    time: float | None


@dataclass
class Cluster:
    """The two hosts' views of one spool, and every process the test started on them."""

    dirs: dict[str, Path]        # this test's directory on the export, per host's mount
    work: Path                   # local scratch: run records, process logs, flags
    config: str = NFS_CONFIG

    def __post_init__(self) -> None:
        self.roots = {host: path / "spool" for host, path in self.dirs.items()}
        self.runs_dir = self.work / "runs"
        self.logs_dir = self.work / "logs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.ended: set[int] = set()  # pids of daemons the test stopped or killed on purpose
        self.spools: list = []
        self.nonce = self.dirs["a"].name  # in every tag, to find this test's task processes

    # -- setup and processes -------------------------------------------------------------

    def create(self, extra: str = "") -> None:
        """Initialise the spool through mount A and wait until mount B sees its config."""
        config = (self.config + extra).replace("@RUNS@", str(self.runs_dir))
        make_spool(self.roots["a"], config)
        wait_until(lambda: (self.roots["b"] / "spool.toml").is_file()
                   and (self.roots["b"] / "pending").is_dir(), 15, "mount B to see the spool")

    def path(self, host: str) -> Path:
        return self.roots[host]

    def server_time(self, host: str) -> float:
        """The file server's clock, as `host` sees it: the mtime of a file it just wrote."""
        probe = self.dirs[host] / f"probe-{host}-{secrets.token_hex(4)}"
        probe.write_bytes(b"")  # a new file: the server stamps it (rewriting one may not)
        try:
            return probe.stat().st_mtime
        finally:
            probe.unlink()

    def tag(self, label: str) -> str:
        return f"{self.nonce}.{label}"

    def start(self, host: str, *args: str) -> subprocess.Popen:
        """Start a daemon of `host` on its own mount; its output goes to logs/."""
        log = self.logs_dir / f"{host}-{args[0]}-{len(self.procs)}.log"
        proc = start_cli(self.roots[host], *args, host=host, log=log, RUN_HOST=host)
        self.procs.append((log.name, proc))
        return proc

    def cli(self, host: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """One CLI command of `host`, on its own mount."""
        return spool_cli(self.roots[host], *args, host=host, timeout=timeout)

    def api(self, host: str):
        """The Python API as `host` (its journal file is closed by `stop_all`)."""
        from spool import Spool

        self.spools.append(Spool(self.roots[host], host=host))
        return self.spools[-1]

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL, as a crash."""
        self.ended.add(proc.pid)
        proc.kill()
        proc.wait()

    def wait(self, predicate, timeout: float, message: str):
        """wait_until, failing at once when a daemon dies that the test did not stop."""
        def check():
            self.assert_running()
            return predicate()
        return wait_until(check, timeout, message)

    def assert_running(self) -> None:
        for name, proc in self.procs:
            if proc.pid not in self.ended and proc.poll() is not None:
                tail = "\n".join((self.logs_dir / name).read_text(errors="replace")
                                 .splitlines()[-15:])
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop(self, proc: subprocess.Popen, timeout: float = 30) -> int | None:
        """SIGCONT (it may be stopped), SIGTERM, then SIGKILL after `timeout`."""
        self.ended.add(proc.pid)
        if proc.poll() is None:
            for signum in (signal.SIGCONT, signal.SIGTERM):
                try:
                    proc.send_signal(signum)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        return proc.returncode

    def stop_all(self) -> None:
        for _, proc in self.procs:
            self.ended.add(proc.pid)
        for _, proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGCONT)
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for _, proc in self.procs:
            self.stop(proc)
        self.kill_tasks()
        for sp in self.spools:  # an open file would stay in the export as .fuse_hidden*
            journal = getattr(getattr(sp, "_store", None), "journal", None)
            if journal is not None:
                journal.close()

    def kill_tasks(self) -> None:
        """Task process groups of this test still alive (e.g. orphans of a SIGKILLed worker)."""
        for run in self.runs():
            if run.what == "start" and _cmdline_has(run.pid, self.nonce):
                try:
                    os.killpg(run.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    def logs(self, limit: int = 60) -> str:
        """The tail of every process log, for assertion messages."""
        parts = []
        for log in sorted(self.logs_dir.iterdir()):
            lines = log.read_text(errors="replace").splitlines()[-limit:]
            parts.append(f"--- {log.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    # -- what happened -------------------------------------------------------------------

    def runs(self) -> list[Run]:
        """Every start and end line recorded by command tasks, on both hosts."""
        result = []
        for log in sorted(self.runs_dir.glob("*.log")):
            for line in log.read_text(errors="replace").splitlines():
                parts = line.split()
                if len(parts) >= 6 and parts[0] in ("start", "end") and parts[2].isdigit():
                    when = float(parts[6]) if len(parts) > 6 else None
                    result.append(Run(parts[0], parts[1], int(parts[2]), parts[3],
                                      int(parts[4]), parts[5], when))
        return result

    def starts(self, job_id: str | None = None, tag: str | None = None) -> list[Run]:
        return [r for r in self.runs() if r.what == "start" and job_id in (None, r.job)
                and tag in (None, r.tag)]

    def events(self, host: str = "a") -> list[dict]:
        """The journal of every host, read through `host`'s mount."""
        found = []
        for path in sorted((self.roots[host] / "events").glob("*/*.jsonl")):
            for line in path.read_text(errors="replace").splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                event["journal"] = path.parent.name
                found.append(event)
        return found

    def job(self, state: str, job_id: str, host: str = "a") -> dict:
        return json.loads((self.roots[host] / state / f"{job_id}.json").read_text())

    def done_ids(self, host: str = "a") -> set[str]:
        return {n[:-5] for n in os.listdir(self.roots[host] / "done") if n.endswith(".json")}

    def states(self, host: str = "a") -> dict[str, list[str]]:
        return state_files(self.roots[host])

    def tmp_leftovers(self, host: str = "a") -> list[str]:
        """Entries of tmp/ that no live process owns (names `VERB,HOST,PID,RAND[,SUBJECT]`;
        `.fuse_hidden*` are the mount's silly-renames of files still open, gone at last close)."""
        left = []
        for name in os.listdir(self.roots[host] / "tmp"):
            parts = name.split(",")
            if len(parts) >= 3 and parts[2].isdigit() and pid_alive(int(parts[2])):
                continue
            left.append(name)
        return left


def _cmdline_has(pid: int, text: str) -> bool:
    try:
        return text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def pid_gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie of another parent counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return status.rsplit(")", 1)[1].split()[0] == "Z"


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid_gone(pid):
            return True
        time.sleep(0.05)
    return pid_gone(pid)
