"""A pool of pre-forked children that run `handler` attempts one after another (`isolation =
"pool"`, the default for handler job types; docs/protocol.md, Handler pool).

Why: a fork of the worker per attempt costs milliseconds and a copy of its page tables; a warm
child takes an attempt with one message. What holds as with a fork per attempt:
- a child runs one attempt at a time, in its own session and process group, with the attempt's
  output pipe as stdout and stderr (passed to it with SCM_RIGHTS), /dev/null as stdin and the
  attempt's environment; the worker sees its outcome as an exit code (0, 100, 1);
- a timeout, a cancel, a shutdown or a processing file taken away signals the child's group,
  exactly as for a forked attempt: the child dies with it, and the pool forks another;
- a child leaves after `max_jobs_per_child` attempts, when its resident memory passes
  `max_child_rss_bytes`, and after an attempt that leaves something behind (a process — the
  child is a subreaper, so even a grandchild that left the group is seen — a thread, a raised
  SystemExit): it exits and the worker kills what remains of its group;
- a child holds none of the worker's descriptors (the flocked processing files above all), dies
  with its worker (PR_SET_PDEATHSIG), and a worker that stops lets running attempts end as
  before, then closes its idle children.
What differs: module state a handler changes is seen by later attempts in the same child, as in
every pooled job runner; `isolation = "fork"` gives each attempt a fresh fork instead.

Messages on a socketpair: to the child, a 4-byte length and JSON `{handler, args, env, result,
max_result, max_jobs, max_rss}` (`env`: what the attempt adds to the worker's environment) with
the output pipe attached; back, one JSON line `{code, leave}`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spool.execution import StartError
from spool.ledger import process_state
from spool.poolchild import HEADER, serve

SEND_TIMEOUT = 5.0  # an idle child reads at once; one that does not is stopped and replaced
CLOSE_WAIT = 2.0  # seconds a stopping worker gives its idle children to exit on their own


@dataclass
class Child:
    """One pool child as the worker sees it."""

    pid: int
    sock: socket.socket
    reply: bytearray = field(default_factory=bytearray)
    code: int | None = None  # the exit code of its current attempt, once reported
    leaves: bool = False  # it said it exits after this attempt
    eof: bool = False  # its end of the socket is closed: it is gone, or going


@dataclass
class Lease:
    """An attempt handed to a pool child (`spool.execution.Pooled`)."""

    pool: HandlerPool
    child: Child

    @property
    def pid(self) -> int:
        return self.child.pid

    def poll(self) -> int | None:
        return self.pool.poll(self.child)

    def release(self, clean: bool) -> None:
        self.pool.release(self.child, clean)


class HandlerPool:
    """The children of one worker: idle ones, and the ones running an attempt."""

    def __init__(self, handlers: dict[str, Callable[..., Any]],
                 limits: Callable[[], tuple[int, int]]) -> None:
        self.handlers = handlers  # inherited by each child at its fork
        self.limits = limits  # (max_jobs_per_child, max_child_rss_bytes), read per attempt
        self.idle: list[Child] = []
        self.busy: dict[int, Child] = {}  # by socket descriptor
        self.leaving: list[int] = []  # pids to reap

    def run(self, spec: str, args: Any, env: dict[str, str], out_fd: int, result_path: Path,
            max_result: int) -> Lease:
        """Hand the attempt to an idle child (forked if none is); the child is busy until
        `release`. A child that cannot take it (gone while idle) is replaced, twice at most."""
        max_jobs, max_rss = self.limits()
        request = json.dumps({"handler": spec, "args": args, "env": env,
                              "result": str(result_path), "max_result": max_result,
                              "max_jobs": max_jobs, "max_rss": max_rss}).encode()
        problem: OSError | None = None
        for _ in range(3):
            child = self.idle.pop() if self.idle else self._fork()
            try:
                if process_state(child.pid) in ("T", "t", "Z", None):
                    # stopped while idle (SIGSTOP), or dead: the attempt would wait for it
                    # until its timeout
                    raise OSError(f"pool child {child.pid} is stopped or gone")
                _send(child.sock, request, out_fd)
            except OSError as exc:
                problem = exc
                self._stop(child)
                continue
            self.busy[child.sock.fileno()] = child
            if not self.idle:
                self._spare()
            return Lease(self, child)
        raise StartError(f"no pool child could take the attempt: {problem}")

    def _spare(self) -> None:
        """One idle child ready for the next attempt: the fork is paid now, not by it."""
        try:
            self.idle.append(self._fork())
        except OSError:
            pass  # forked on demand then, where a failure is the attempt's

    def read(self, fd: int) -> None:
        """Take what the child behind `fd` sent (the loop saw it readable)."""
        child = self.busy.get(fd)
        if child is not None:
            _receive(child)

    def poll(self, child: Child) -> int | None:
        """The attempt's exit code: as the child reported it, or its death's (128 + signal)."""
        if child.code is None and not child.eof:
            _receive(child)
        if child.code is not None:
            return child.code
        try:
            pid, status = os.waitpid(child.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = child.pid, 255 << 8
        if not pid:
            return None
        child.eof, child.leaves = True, True
        code = os.waitstatus_to_exitcode(status)
        child.code = 128 - code if code < 0 else code
        if child.pid in self.leaving:
            self.leaving.remove(child.pid)
        return child.code

    def release(self, child: Child, clean: bool) -> None:
        """The attempt is over: the child goes back to the idle ones, unless it leaves, was
        stopped (`clean` False) or said nothing; then its whole group is killed."""
        self.busy.pop(child.sock.fileno(), None)
        if clean and child.code is not None and not child.leaves and not child.eof:
            child.code = None
            child.reply.clear()
            self.idle.append(child)
        else:
            self._stop(child)
        self.reap()

    def reply_fds(self) -> dict[int, Child]:
        """The sockets of busy children whose outcome has not come yet, for the loop."""
        return {fd: child for fd, child in self.busy.items()
                if child.code is None and not child.eof}

    def reap(self) -> None:
        """Collect the exit status of children that left."""
        for pid in list(self.leaving):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.leaving.remove(pid)

    def close(self) -> None:
        """Idle children exit at the end of their socket; whoever lingers is killed."""
        for child in self.idle:
            child.sock.close()
            self.leaving.append(child.pid)
        self.idle.clear()
        self._wait_leaving()
        for pid in self.leaving:
            _kill_group(pid)
        for child in list(self.busy.values()):
            self._stop(child)
        self.busy.clear()
        self._wait_leaving()

    def _wait_leaving(self) -> None:
        """Reap the children that leave, for at most CLOSE_WAIT seconds."""
        deadline = time.monotonic() + CLOSE_WAIT
        while self.leaving and time.monotonic() < deadline:
            self.reap()
            if self.leaving:
                time.sleep(0.005)

    def _stop(self, child: Child) -> None:
        _kill_group(child.pid)
        child.sock.close()
        if child.pid not in self.leaving:
            self.leaving.append(child.pid)

    def _fork(self) -> Child:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            raise
        if pid == 0:  # the child never returns into the worker's code
            code = 1
            try:
                ours.close()
                code = serve(theirs, parent, self.handlers)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        theirs.close()
        # a kernel send timeout: a Python-level one would make every read wait for it too
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                        struct.pack("ll", int(SEND_TIMEOUT), 0))
        return Child(pid, ours)


def _send(sock: socket.socket, request: bytes, out_fd: int) -> None:
    data = HEADER.pack(len(request)) + request
    sent = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                  struct.pack("i", out_fd))])
    if sent < len(data):
        sock.sendall(data[sent:])


def _receive(child: Child) -> None:
    try:
        data = child.sock.recv(4096, socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return
    except OSError:
        data = b""
    if not data:
        child.eof = True
        return
    child.reply += data
    if b"\n" in child.reply:
        try:
            reply = json.loads(child.reply.partition(b"\n")[0])
            child.code, child.leaves = int(reply["code"]), bool(reply["leave"])
        except (ValueError, KeyError, TypeError):
            child.code, child.leaves = 1, True  # only a handler's stray write gets here


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
