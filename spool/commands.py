"""Starting a `command` job type's attempt: argv with `{name}` items filled from the args
(each stays one argv item), executed directly (never through a shell) in a new session by
`posix_spawn`, with the args as JSON on stdin and the attempt's output pipe as stdout and
stderr. Every other descriptor of the worker is close-on-exec first (`seal_descriptors`), so a
task inherits none of them, above all not the flocked processing files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from typing import Any

from spool.errors import InvalidInput
from spool.execpath import find_program, forget
from spool.templates import expand_item, placeholders


def expand_argv(command: tuple[str, ...], args: Any) -> list[str]:
    """argv with `{name}` placeholders (`name` an identifier) filled from args, each expansion
    staying one item; any other brace is literal, `{{` and `}}` give one brace (README, Writing
    jobs)."""
    names = placeholders(command)
    if names and not isinstance(args, dict):
        raise InvalidInput(f"command {list(command)} needs object args, got {args!r}")
    mapping = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (args or {}).items()} \
        if names else {}
    missing = [name for name in names if name not in mapping]
    if missing:
        raise InvalidInput(f"command {list(command)} needs argument {missing[0]!r}")
    argv = [expand_item(item, mapping) for item in command]
    for item in argv:
        if "\0" in item:  # exec(2) cannot pass it: retrying will not help
            raise InvalidInput(f"argv item {item!r} contains a NUL character")
    return argv


def start_command(argv: list[str], env: dict[str, str], out_fd: int,
                  args: Any) -> tuple[int, subprocess.Popen[bytes] | None]:
    """Execute argv directly in a new session; args go to stdin as JSON. (pid, None) when
    posix_spawn started it; (pid, the Popen) when a PATH search was left to execvp."""
    path = env.get("PATH")
    program = find_program(argv[0], path)
    if (program is None and "/" not in argv[0]) or not seal_descriptors():
        return _popen_command(argv, env, out_fd, args)
    try:
        pid, stdin_write = _spawn(program or argv[0], argv, env, out_fd)
    except FileNotFoundError:
        if program is None:
            raise
        forget(argv[0], path)  # moved or removed since it was found: search as execvp does
        return start_command(argv, env, out_fd, args)
    _send_args(stdin_write, args)
    return pid, None


def _spawn(program: str, argv: list[str], env: dict[str, str], out_fd: int) -> tuple[int, int]:
    """(pid, the write end of its stdin): posix_spawn in a new session, stdin a pipe, stdout
    and stderr `out_fd`; every other descriptor of the worker is close-on-exec
    (seal_descriptors), so the task gets none of them."""
    stdin_read, stdin_write = os.pipe2(os.O_CLOEXEC)
    actions = [(os.POSIX_SPAWN_DUP2, stdin_read, 0), (os.POSIX_SPAWN_DUP2, out_fd, 1),
               (os.POSIX_SPAWN_DUP2, out_fd, 2)]
    try:
        pid = os.posix_spawn(program, argv, env, file_actions=actions, setsid=True,
                             setsigmask=(), setsigdef=_IGNORED_BY_PYTHON)
    except BaseException:
        os.close(stdin_write)
        raise
    finally:
        os.close(stdin_read)
    return pid, stdin_write


def _popen_command(argv: list[str], env: dict[str, str], out_fd: int,
                   args: Any) -> tuple[int, subprocess.Popen[bytes]]:
    """start_command through subprocess: a PATH search left to execvp (a relative PATH entry,
    a missing program: execvp's own error), or no posix_spawn here."""
    popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out_fd, stderr=out_fd,
                             env=env, start_new_session=True, close_fds=True)
    assert popen.stdin is not None
    stdin_write = os.dup(popen.stdin.fileno())
    popen.stdin.close()
    _send_args(stdin_write, args)
    return popen.pid, popen


# What Python ignores at start and a program expects at its default (subprocess's
# restore_signals): a task writing into a closed pipe dies of SIGPIPE as it would from a shell
_IGNORED_BY_PYTHON = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ", "SIGXFZ")
                           if hasattr(signal, name))
_sealed_modules = -1  # len(sys.modules) at the last seal_descriptors; -1: never, 0: impossible


def seal_descriptors() -> bool:
    """Make every descriptor of this process above 2 close-on-exec, so that a spawned task
    inherits none of the worker's (above all not the flocked processing files: a task must not
    keep its worker's locks alive after the worker died). Python opens everything
    close-on-exec; what is left are descriptors inherited at the worker's own exec, and any a
    C extension opened while a module was imported — so this runs again whenever
    `sys.modules` grew. Also keeps 0-2 open (on /dev/null), so that no pipe of a task lands
    there. False when this process's descriptors cannot be listed (no /proc): the caller uses
    subprocess's close_fds instead."""
    global _sealed_modules
    if _sealed_modules == len(sys.modules) or _sealed_modules == 0:
        return _sealed_modules != 0
    if not hasattr(os, "posix_spawn"):
        _sealed_modules = 0
        return False
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        _sealed_modules = 0
        return False
    for name in names:
        fd = int(name)
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the listing's own descriptor, closed since
    _sealed_modules = len(sys.modules)
    return True


def _send_args(stdin_write: int, args: Any) -> None:
    payload = json.dumps(args).encode()
    if len(payload) < 60000:  # fits the pipe buffer: no thread needed
        _feed(stdin_write, payload)
    else:
        threading.Thread(target=_feed, args=(stdin_write, payload), daemon=True).start()


def _feed(stdin_write: int, payload: bytes) -> None:
    """Write the args to the task's stdin and close it (a task that exits unread: EPIPE)."""
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(stdin_write, view):]
    except OSError:
        pass
    finally:
        os.close(stdin_write)
