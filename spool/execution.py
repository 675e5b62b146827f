"""Running one attempt in its own process group, with its environment and result.

`command` job types are started by `spool.commands` (no shell, `posix_spawn` into a new
session), with the args also in `SPOOL_ARGS`. `handler` job types are called in a pool child
(`spool.pool`) or in a child forked from the worker for the attempt (`isolation = "fork"`);
either way the worker imported the handler module once, so an attempt pays no interpreter start;
its stdin is /dev/null. Exit 0 completed,
100 cancelled, anything else failed; a handler's return value (or a command's `$SPOOL_RESULT`
file) is the job's result, at most `max_result_bytes`. The result lives at a private name in
tmp/ (`result,HOST,PID,RAND,ID.N`): a handler child creates it with O_EXCL|O_NOFOLLOW and the
worker reads it without following a link, so nothing planted there is ever written or read. A
handler that raises leaves `ERROR_MARK` and `Type: message` there instead: the worker makes
that the attempt's error (`read_result` gives it back as `Raised`), and the log's traceback
starts at the handler's own frames.
"""

from __future__ import annotations

import ctypes
import errno
import importlib
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from collections.abc import Callable

from spool.config import JobType
from spool.errors import Cancel, SpoolError
from spool.files import discard, read_bounded
from spool.commands import expand_argv, start_command

if TYPE_CHECKING:
    from spool.pool import HandlerPool


EXIT_CANCELLED = 100
ERROR_MARK = b"\0spool-error\0"  # a handler's result file holding the exception it raised
MAX_ERROR = 2000  # characters of a handler's exception kept as the job's error
_RESULT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class StartError(SpoolError):
    """An attempt could not be started (a handler that does not import): retried."""


class Pooled(Protocol):
    """An attempt that a pool child runs (`spool.pool`)."""

    def poll(self) -> int | None: ...

    def release(self, clean: bool) -> None: ...


@dataclass
class Attempt:
    """A running attempt: its process and what the worker needs to finish it."""

    job_id: str
    number: int
    pid: int
    result_path: Path
    started: float
    started_at: datetime
    popen: subprocess.Popen[bytes] | None = None
    exit_code: int | None = None
    stop_reason: str | None = None  # "timeout", "cancelled", "interrupted", "taken"
    killed_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    pooled: Pooled | None = None

    def poll(self) -> int | None:
        """The exit code once the process ended (a signal death is 128 + signal), or, in a
        pool child, once the child reported the attempt's."""
        if self.exit_code is not None:
            return self.exit_code
        if self.pooled is not None:
            self.exit_code = self.pooled.poll()
            return self.exit_code
        if self.popen is not None:
            code = self.popen.poll()
        else:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 255 << 8
            code = os.waitstatus_to_exitcode(status) if pid else None
        if code is not None:
            self.exit_code = 128 - code if code < 0 else code
        return self.exit_code

    def signal_group(self, signum: int) -> None:
        """Signal the attempt's whole process group (its grandchildren too)."""
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def finish(self) -> None:
        """The attempt is over: what is left of its group goes (a pool child that is fit for
        more returns to its pool instead)."""
        if self.pooled is not None:
            self.pooled.release(self.stop_reason is None)
        else:
            self.signal_group(signal.SIGKILL)


def attempt_vars(spool_dir: Path, body: dict[str, Any], attempt: int, result_path: Path,
                 jtype: JobType) -> dict[str, str]:
    """What an attempt's environment adds to the worker's: the job type's `env`, then
    spool's own variables."""
    env = dict(jtype.env)
    env.update(SPOOL_DIR=str(spool_dir), SPOOL_JOB_ID=body["id"], SPOOL_JOB=body["job"],
               SPOOL_ATTEMPT=str(attempt), SPOOL_ARGS=json.dumps(body.get("args")),
               SPOOL_RESULT=str(result_path))
    return env


def start_attempt(spool_dir: Path, result_path: Path, body: dict[str, Any], jtype: JobType,
                  number: int,
                  out_fd: int, now: datetime, handler: Callable[[JobType], Callable[..., Any]],
                  max_result: int, pool: HandlerPool | None = None) -> Attempt:
    """Start attempt `number` of the job in `body`; its output goes to `out_fd`. A handler
    runs in a child of `pool` unless its job type says `isolation = "fork"`."""
    added = attempt_vars(spool_dir, body, number, result_path, jtype)
    attempt = Attempt(body["id"], number, 0, result_path, time.monotonic(), now)
    if jtype.command:
        argv = expand_argv(jtype.command, body.get("args"))
        attempt.pid, attempt.popen = start_command(argv, {**os.environ, **added}, out_fd,
                                                   body.get("args"))
    elif pool is not None and jtype.isolation == "pool":
        assert jtype.handler is not None
        handler(jtype)  # imported in the worker: a failure is StartError, as when forked
        # a child has the worker's environment from its fork: only what the attempt adds
        attempt.pooled = lease = pool.run(jtype.handler, body.get("args"), added, out_fd,
                                          result_path, max_result)
        attempt.pid = lease.pid
    else:
        attempt.pid = start_handler(handler(jtype), body.get("args"), {**os.environ, **added},
                                    out_fd, result_path, max_result)
    return attempt


def load_handler(spec: str) -> Callable[..., Any]:
    """The function named `package.module:function` (imported once, in the worker). Whatever
    importing the module raises is a StartError naming it: a deploy may fix it."""
    module_name, _, name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:  # any failure of foreign code
        raise StartError(f"handler {spec!r}: module {module_name!r} cannot be imported: "
                         f"{type(exc).__name__}: {exc}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise StartError(f"handler {spec!r}: module {module_name!r} has no function {name!r}")
    return function  # type: ignore[no-any-return]  # callable() narrows no further


def start_handler(function: Callable[..., Any], args: Any, env: dict[str, str], out_fd: int,
                  result_path: Path, max_result: int) -> int:
    """Fork a child in its own session that calls `function(args)` and exits with its outcome."""
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:  # the child never returns into the worker's code
        os.setsid()
        # until the worker records this child in the ledger, nothing else could stop it if
        # the worker died: die with the worker (a command task, exec'd, is found by its env)
        die_with_parent()
        if os.getppid() != parent:
            os._exit(code)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        # drop the worker's descriptors, above all the flocked processing files: a task must
        # not keep its worker's locks alive after the worker died
        close_inherited()
        os.environ.clear()
        os.environ.update(env)
        code = call_handler(function, args, result_path, max_result)
    except BaseException:  # the child must always exit here
        traceback.print_exc()
    finally:
        try:
            flush_output()  # a handler may have closed or replaced them
        finally:
            os._exit(code)


def close_inherited(keep: int = -1) -> None:
    """Close every descriptor from 3 on but `keep`, those numbered past the soft
    RLIMIT_NOFILE too (opened before a prlimit lowered it): listed, not counted up to it."""
    try:
        numbers = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        numbers = list(range(3, os.sysconf("SC_OPEN_MAX")))
    for fd in numbers:
        if fd > 2 and fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the listing's own descriptor, closed by now


def flush_output() -> bool:
    """Flush sys.stdout and sys.stderr, whatever a handler made of them, and C's stdio
    buffers (a C library's printf), which os._exit would drop and a pool child would carry
    into the next attempt's log; False when a stream could not be flushed (closed, broken,
    replaced by something that is not a stream)."""
    flushed = True
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:  # a handler's object: any failure means "not flushed"
            flushed = False
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass
    return flushed


def die_with_parent() -> None:
    """prctl(PR_SET_PDEATHSIG, SIGKILL) on Linux; nothing elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def call_handler(function: Callable[..., Any], args: Any, result_path: Path,
                 max_result: int) -> int:
    try:
        if isinstance(args, dict):
            value = function(**args)
        elif isinstance(args, list):
            value = function(*args)
        elif args is None:
            value = function()
        else:
            value = function(args)
    except Cancel as exc:
        print(f"spool: cancelled by the handler: {exc}", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:  # a failing handler is an outcome, not a crash
        _print_user_traceback(exc)
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        try:
            data = ERROR_MARK + text[:MAX_ERROR].encode("utf-8", "replace")
            write_result(result_path, data[:max_result], max_result)  # read back within it
        except OSError as problem:  # the error stays "exit code 1"; the log says why
            print(f"spool: cannot record the handler's error: {problem}", file=sys.stderr)
        return 1
    if value is not None:
        write_result(result_path, json.dumps(value, default=str).encode(), max_result)
    return 0


class Raised(str):
    """The exception a handler raised, `Type: message`, as its result file reports it."""


def _print_user_traceback(exc: BaseException) -> None:
    """The traceback from the handler's own code on: spool's frames (this module) are left
    out, so the log starts where the user's code does."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb)


def write_result(path: Path, data: bytes, max_result: int) -> None:
    """Create the result file afresh (whatever stands there is unlinked first, never followed);
    past `max_result` only one byte more is written, enough for the worker to refuse it."""
    discard(path)
    fd = os.open(path, _RESULT_FLAGS, 0o600)
    try:
        view = memoryview(data)[:max_result + 1]
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def read_result(result_path: Path, max_result: int) -> tuple[Any, str | None]:
    """(result, error): the JSON the attempt left at `SPOOL_RESULT`, never read through a link
    nor past `max_result` bytes; the file is removed either way."""
    found = True
    try:
        data = read_bounded(result_path, max_result)
    except FileNotFoundError:
        found = False  # nothing to remove (most attempts leave no result)
        return None, None
    except OSError as exc:
        if exc.errno == errno.EFBIG:
            return None, f"result is larger than max_result_bytes ({max_result} bytes)"
        return None, f"result file {result_path} cannot be read: {exc.strerror or exc}"
    finally:
        try:
            if found:
                discard(result_path)
        except OSError:
            pass  # the scratch sweep of recover_holds clears it later
    if data.startswith(ERROR_MARK):  # no JSON and no text starts with a NUL byte
        return Raised(data[len(ERROR_MARK):].decode("utf-8", "replace")), None
    try:
        return json.loads(data), None
    except (ValueError, RecursionError):  # a command may write plain text
        return data.decode("utf-8", "replace").strip(), None
