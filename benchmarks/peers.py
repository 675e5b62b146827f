"""The peers `compare.py` measures spool against, found where they are installed and installed
only when asked (`--install`): the Debian tools task-spooler, nq and redis-server through
apt-get, and the Python queues huey, rq and the redis client in a venv of their own
(`benchmarks/.peers`, gitignored), so that spool's environment stays as its users have it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Iterator

from harness import HERE, free_port

PEERS_VENV = HERE / ".peers"
PEER_PYTHON = PEERS_VENV / "bin" / "python"
DEBIAN = {"tsp": "task-spooler", "nq": "nq", "redis-server": "redis-server"}
PYPI = ["huey", "rq", "redis"]


def install() -> None:
    """apt-get the Debian tools that are missing and pip the Python peers into `.peers`."""
    missing = [pkg for tool, pkg in DEBIAN.items() if not shutil.which(tool)]
    if missing:
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    if not PEER_PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    subprocess.run([str(PEER_PYTHON), "-m", "pip", "install", "-q", *PYPI], check=True)


def why_not(peer: str) -> str | None:
    """None when `peer` can run here, else one line saying why it cannot."""
    if peer in DEBIAN:
        if not shutil.which(peer):
            return f"{peer} not found (Debian package {DEBIAN[peer]}; --install adds it)"
        return None
    modules = {"huey": ["huey"], "rq": ["rq", "redis"]}[peer]
    if not PEER_PYTHON.exists():
        return f"{peer}: no venv at {PEERS_VENV} (--install makes it)"
    probe = subprocess.run([str(PEER_PYTHON), "-c", "import " + ", ".join(modules)],
                           capture_output=True, text=True)
    if probe.returncode:
        return f"{peer}: cannot import {', '.join(modules)} in {PEERS_VENV} (--install adds them)"
    if peer == "rq" and not shutil.which("redis-server"):
        return "rq: redis-server not found (Debian package redis-server; --install adds it)"
    return None


def peer_env() -> dict[str, str]:
    """Environment for the peers' helper scripts: this directory importable (their tasks)."""
    return dict(os.environ, PYTHONPATH=str(HERE))


@contextlib.contextmanager
def redis_server(where: Path) -> Iterator[str]:
    """A private redis-server on 127.0.0.1 at a random port, persistence off; yields its URL
    and stops it at the end."""
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                             "--save", "", "--appendonly", "no", "--dir", str(where),
                             "--daemonize", "no", "--protected-mode", "yes"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                             text=True).stdout.strip() != "PONG":
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait()
