"""Job handlers for the handler pool's tests: each tells which process ran it."""

from __future__ import annotations

import os
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
