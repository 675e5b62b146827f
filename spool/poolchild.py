"""The child side of the handler pool (`spool.pool`): run the attempts the worker sends, one
after another, each as a freshly forked child would, and leave when one left something behind.

For each attempt the child makes the attempt's output pipe its stdout and stderr and sets the
environment to the worker's plus the attempt's additions; afterwards it puts back /dev/null,
its working directory, umask, signal handlers, mask and timers, and answers `{code, leave}`.
It leaves after an attempt that left a process (the child is a subreaper: a grandchild that
left the group is seen too), a thread or a pending signal, changed what cannot be put back
(resource limits, priority, user, groups), closed or replaced the child's own descriptors or
raised a BaseException, and once it ran `max_jobs` attempts or passed `max_rss` bytes.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spool.execution import (call_handler, close_inherited, die_with_parent, flush_output,
                             load_handler)

HEADER = struct.Struct("!I")  # the length before each request
THREAD_EXIT_WAIT = 0.05  # seconds a joined thread may take to leave /proc/self/task
_PR_SET_CHILD_SUBREAPER = 36


def serve(sock: socket.socket, parent: int, handlers: dict[str, Callable[..., Any]]) -> int:
    """Run attempts as they come until the worker closes the socket or a reason to leave."""
    os.setsid()
    die_with_parent()
    if os.getppid() != parent:
        return 1
    _set_subreaper()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    keep = sock.fileno()
    # none of the worker's descriptors, above all not its flocked processing files
    close_inherited(keep)
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    home = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    umask = os.umask(0o022)
    os.umask(umask)
    me, attempts = os.getpid(), 0
    environ = dict(os.environ)  # the worker's, which each attempt's additions start from
    signals, process = _signal_state(), _process_state()
    own = {fd: _identity(fd) for fd in (keep, null, home)}
    while True:
        request = _next_request(sock)
        if request is None:
            return 0
        message, out_fd = request
        attempts += 1
        os.dup2(null, 0)
        _set_environ({**environ, **message["env"]})
        code, clean = _attempt(message, out_fd, handlers)
        if os.getpid() != me:  # a handler forked and its child returned here
            os._exit(code)
        try:
            if any(_identity(fd) != identity for fd, identity in own.items()):
                raise OSError("the attempt closed or replaced a descriptor of the pool child")
            os.dup2(null, 1)
            os.dup2(null, 2)  # the output pipe's last copy here: the worker sees its end
            os.fchdir(home)
            os.umask(umask)
            clean = _restore_signals(*signals) and clean
        except OSError:
            # it cannot report nor take another attempt: its exit status is the outcome
            os._exit(code)
        leave = not clean or attempts >= int(message["max_jobs"]) or _left_behind() or \
            _rss() > int(message["max_rss"]) or _process_state() != process
        sock.sendall(json.dumps({"code": code, "leave": leave}).encode() + b"\n")
        if leave:
            return 0


def _identity(fd: int) -> tuple[int, int] | None:
    try:
        info = os.fstat(fd)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _process_state() -> tuple[Any, ...]:
    """What an attempt may change about the process but a child cannot always undo (a lower
    hard limit, a nicer priority, another user): a change retires the child."""
    limits = tuple(resource.getrlimit(getattr(resource, name)) for name in dir(resource)
                   if name.startswith("RLIMIT_"))
    return (limits, os.getpriority(os.PRIO_PROCESS, 0), os.getresuid(), os.getresgid(),
            os.getgroups())


def _signal_state() -> tuple[dict[int, Any], set[int]]:
    """The child's signal handlers and mask, which every attempt starts from."""
    handlers: dict[int, Any] = {}
    for signum in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}:
        try:
            handlers[signum] = signal.getsignal(signum)
        except (OSError, ValueError):
            continue
    return handlers, signal.pthread_sigmask(signal.SIG_BLOCK, [])


def _restore_signals(handlers: dict[int, Any], mask: set[int]) -> bool:
    """Undo what an attempt did to signals — a timer set, a handler installed, a signal
    blocked — so that none of it fires in the next attempt; False when a signal is pending
    (the child leaves rather than take it into the next attempt)."""
    for timer in (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF):
        signal.setitimer(timer, 0)
    for signum, handler in handlers.items():
        if handler is not None and signal.getsignal(signum) is not handler:
            signal.signal(signum, handler)
    if signal.sigpending():
        return False
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    return True


def _next_request(sock: socket.socket) -> tuple[dict[str, Any], int] | None:
    data, ancillary, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(struct.calcsize("i")))
    if not data:
        return None
    fds = [struct.unpack("i", payload[:4])[0] for level, kind, payload in ancillary
           if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS]
    if len(fds) != 1:
        raise RuntimeError(f"pool child: expected one descriptor with a request, got {len(fds)}")
    buffer = bytearray(data)
    while len(buffer) < HEADER.size or len(buffer) < HEADER.size + HEADER.unpack_from(buffer)[0]:
        more = sock.recv(1 << 20)
        if not more:
            return None
        buffer += more
    return json.loads(buffer[HEADER.size:]), fds[0]


def _attempt(message: dict[str, Any], out_fd: int,
             handlers: dict[str, Callable[..., Any]]) -> tuple[int, bool]:
    """(exit code, whether the child is fit for another attempt)."""
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    os.close(out_fd)
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__  # whatever the last one set
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    spec = message["handler"]
    code, clean = 1, False
    try:
        function = handlers.get(spec)
        if function is None:  # forked before the worker first imported it
            function = handlers[spec] = load_handler(spec)
        code = call_handler(function, message["args"], Path(message["result"]),
                            int(message["max_result"]))
        clean = _threads() == 1
    except BaseException:  # SystemExit, KeyboardInterrupt, StartError: exit code 1, as forked
        traceback.print_exc()
    finally:
        clean = flush_output() and clean
    return code, clean


def _set_environ(wanted: dict[str, str]) -> None:
    """os.environ as `wanted`, whatever the last attempt did to it."""
    for key in [key for key in os.environ if key not in wanted]:
        del os.environ[key]
    for key, value in wanted.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _threads() -> int:
    """Threads of this process, those `threading` does not know of (a C library's) too; one
    that `threading` saw end (joined) may still be exiting: it gets a few milliseconds."""
    deadline = time.monotonic() + THREAD_EXIT_WAIT
    while True:
        try:
            count = len(os.listdir("/proc/self/task"))
        except OSError:
            return threading.active_count()
        if count <= threading.active_count() or time.monotonic() >= deadline:
            return count
        time.sleep(0.0005)


def _left_behind() -> bool:
    """Whether the attempt left a process behind (reaping those that ended)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if not pid:
            return True


def _rss() -> int:
    """Resident bytes of this process."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _set_subreaper() -> None:
    """Orphans of an attempt become this child's, so that `_left_behind` sees them."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass
