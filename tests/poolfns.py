"""Job handlers for the handler pool's tests: each tells which process ran it."""

from __future__ import annotations

import _thread
import ctypes
import fcntl
import os
import resource
import signal
import subprocess
import sys
import threading
import time

COUNT = 0  # module state: a pool child keeps it from one attempt to the next


def whoami() -> dict:
    global COUNT
    COUNT += 1
    print(f"attempt of {os.environ['SPOOL_JOB_ID']} in {os.getpid()}")
    return {"pid": os.getpid(), "job": os.environ["SPOOL_JOB_ID"], "count": COUNT,
            "cwd": os.getcwd(), "stdin": os.readlink("/proc/self/fd/0"),
            "umask": os.umask(0o022), "left_over": os.environ.get("LEFT_OVER"),
            "spool_job": os.environ.get("SPOOL_JOB")}


def descriptors() -> dict:
    """What this process holds open, by number."""
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return {"pid": os.getpid(), "fds": found}


def crash(code: int = 7) -> None:
    os._exit(code)


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def exits() -> None:
    sys.exit(0)


def nap(seconds: float, marker: str) -> dict:
    """Write this pid and a grandchild's into `marker`, then sleep."""
    grandchild = subprocess.Popen(["sleep", "300"])
    with open(marker + ".tmp", "w") as out:
        out.write(f"{os.getpid()} {grandchild.pid}")
    os.rename(marker + ".tmp", marker)
    time.sleep(seconds)
    return {"pid": os.getpid()}


def leave_process(marker: str) -> dict:
    """Return while a process this attempt started still runs."""
    grandchild = subprocess.Popen(["sleep", "300"])
    with open(marker, "w") as out:
        out.write(str(grandchild.pid))
    return {"pid": os.getpid()}


def leave_thread() -> dict:
    threading.Thread(target=time.sleep, args=(300,), daemon=True).start()
    return {"pid": os.getpid()}


def chdir_away() -> dict:
    os.chdir("/")
    os.umask(0o077)
    os.environ["LEFT_OVER"] = "yes"
    del os.environ["SPOOL_JOB"]
    return {"pid": os.getpid()}


def size(text: str) -> int:
    return len(text)


def _raise(signum: int, _frame: object) -> None:
    raise RuntimeError(f"signal {signum} armed by an earlier attempt")


def disturb_signals() -> dict:
    """Leave a signal handler, a pending timer and a blocked SIGTERM behind."""
    signal.signal(signal.SIGUSR1, _raise)
    signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, 300)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGUSR2})
    return {"pid": os.getpid()}


def signal_state() -> dict:
    return {"pid": os.getpid(), "usr1": str(signal.getsignal(signal.SIGUSR1)),
            "alarm": signal.getitimer(signal.ITIMER_REAL)[0],
            "blocked": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, []))}


def close_descriptors() -> dict:
    """Close every descriptor above stderr, as daemonizing code does."""
    os.closerange(3, 1 << 16)
    return {"pid": os.getpid()}


def leave_raw_thread() -> dict:
    """A thread threading does not know of (a C library's, or _thread's) that keeps writing."""
    def chatter() -> None:
        while True:
            try:
                os.write(1, b"chatter of a thread left behind\n")
            except OSError:
                pass
            time.sleep(0.001)

    _thread.start_new_thread(chatter, ())
    return {"pid": os.getpid()}


def nap_with_grandchild(marker: str) -> None:
    """A subprocess in the attempt's group, its pid in `marker`; then sleep."""
    grandchild = subprocess.Popen(["sleep", "300"])
    with open(marker + ".tmp", "w") as out:
        out.write(str(grandchild.pid))
    os.rename(marker + ".tmp", marker)
    time.sleep(300)


def lower_limits() -> dict:
    """Lower a resource limit and the priority, as a cautious handler might."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 64), min(hard, 64)))
    os.nice(1)
    return {"pid": os.getpid()}


def overlap(lock: str, out: str) -> None:
    """Note this run's start, and an overlap when another run of it still holds `lock`."""
    held = os.open(lock, os.O_WRONLY | os.O_CREAT, 0o600)
    with open(out, "a") as notes:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            notes.write("overlap\n")
        notes.write(f"start {os.getpid()}\n")
    time.sleep(120)


def close_stdout() -> dict:
    """Close sys.stdout, as a script that owns its output might."""
    print("closing stdout")
    sys.stdout.close()
    return {"pid": os.getpid()}


def fork_returns() -> dict:
    """Fork, and let the forked process return from the handler as well (a common slip)."""
    pid = os.fork()
    if pid == 0:
        return {"pid": os.getpid(), "forked": True}
    os.waitpid(pid, 0)
    return {"pid": os.getpid(), "forked": False}


def joined_thread() -> dict:
    """Start a thread and join it: nothing is left behind."""
    worker = threading.Thread(target=sum, args=([1, 2],))
    worker.start()
    worker.join()
    return {"pid": os.getpid()}


def c_printf(text: str, flush: bool = False) -> dict:
    """Print through C's stdio, as a C extension does (buffered: stdout is a pipe)."""
    libc = ctypes.CDLL(None)
    libc.printf(b"%s\n", text.encode())
    if flush:
        libc.fflush(None)
    return {"pid": os.getpid()}
