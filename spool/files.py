"""Small file primitives: private staging in `tmp/`, fsync of directories, bounded reads that
never follow a link nor block on a FIFO, and the write-then-rename replacement of non-job state
files (host ledgers, reaper and cron state).

Every create refuses symbolic links (O_NOFOLLOW with O_EXCL), so nothing a group member plants
inside the spool can make a daemon write outside it. Job files are moved only by `spool.store`.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any
from collections.abc import Iterator

from spool.errors import InvalidInput
from spool.jsonvalues import load_json
from spool.layout import tmp_name

TRANSIENT_ERRNOS = {errno.ENOENT, errno.ESTALE}
STATE_BYTES = 64 << 20  # ledgers and observations of hosts with very many jobs stay below
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def file_mode(root: Path | str) -> int:
    """The mode of files spool creates: group-writable in a spool made with `init --group`
    (its root is setgid), applied with fchmod so the caller's umask cannot narrow it."""
    try:
        shared = os.stat(root).st_mode & stat.S_ISGID
    except OSError:
        shared = 0
    return 0o664 if shared else 0o644


def create_private(path: str | Path, data: bytes, durable: bool, mode: int = 0o644) -> None:
    """Write `data` to a new file at `path`, which must not exist (a link there is refused);
    the file is complete (and fsynced when `durable`) before this returns, else removed."""
    try:
        fd = os.open(path, _CREATE, mode)
    except FileExistsError:
        raise
    except OSError:
        discard(path)  # some filesystems leave the entry of a create that failed (ENOSPC)
        raise
    try:
        try:
            if mode & 0o020:  # a group spool: the caller's umask must not narrow the mode
                os.fchmod(fd, mode)
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)  # may report the write error itself (NFS, full disk)
    except OSError as exc:
        discard(path)
        if exc.filename is None:  # write and close errors carry no path: name it
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    except BaseException:
        discard(path)
        raise


def stage(tmp_dir: Path | str, data: bytes, durable: bool, tag: str = "stage", *,
          host: str, subject: str | None = None, mode: int = 0o644) -> str:
    """Write `data` to a fresh private file in `tmp_dir` and return its path (docs/protocol.md,
    Names in tmp/: the name carries host, pid and a random part; nobody acts on it before it
    is complete)."""
    path = f"{tmp_dir}/{tmp_name(tag, host, os.getpid(), subject)}"
    create_private(path, data, durable, mode)
    return path


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def open_append(path: Path | str, mode: int = 0o644) -> int:
    """An O_APPEND descriptor of a regular file (created when missing): a symbolic link or a
    special file is refused, and a hard link (to a file outside, maybe) loses its name here
    to a fresh file, so nothing outside the spool is ever written through it."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags, mode)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if info.st_nlink != 1:  # a hard link planted to a file outside: drop the name only
            os.close(fd)
            fd = -1
            discard(path)
            fd = os.open(path, flags | os.O_EXCL, mode)
            info = os.fstat(fd)
        if info.st_size == 0 and mode & 0o020:
            os.fchmod(fd, mode)
        os.set_blocking(fd, True)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise
    return fd


def make_dir(path: Path | str, mode: int) -> None:
    """Create a directory of the spool if missing, group-writable when files are (`mode`
    from `file_mode`): setgid is inherited from the parent, the write bit is not."""
    try:
        os.mkdir(path, 0o775 if mode & 0o020 else 0o755)
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise OSError(errno.ENOTDIR, "exists and is not a directory", str(path)) from None
        return
    if mode & 0o020:  # through a descriptor: never chmod what a planted link points at
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchmod(fd, 0o2775)
        finally:
            os.close(fd)


def touch_marker(path: Path | str, mode: int = 0o644) -> None:
    """Create an empty marker file if missing; a link or special file there is refused."""
    try:
        fd = os.open(path, _CREATE, mode)
    except FileExistsError:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EEXIST, "exists and is not a regular file", str(path)) from None
        return
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def fsync_dir(path: Path | str) -> None:
    """Make a directory's entries durable (rename and link are directory writes)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def discard(path: Path | str) -> bool:
    """Remove a staging or scratch file; False when it was already gone."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def replace_file(path: Path, data: bytes, tmp_dir: Path, durable: bool, *, host: str,
                 mode: int = 0o644) -> None:
    """Write-then-rename for a state file that only this host writes (ledger, observations)."""
    staged = stage(tmp_dir, data, durable, "state", host=host, subject=path.name, mode=mode)
    try:
        os.replace(staged, path)
    except BaseException:
        discard(staged)
        raise
    if durable:
        fsync_dir(path.parent)


def read_bounded(path: Path | str, limit: int) -> bytes:
    """The bytes of the regular file at `path`, never through a symlink and never blocking on
    a FIFO or device (those are OSError naming the path); OSError(EFBIG) past `limit` bytes."""
    return read_with_stat(path, limit)[0]


def read_with_stat(path: Path | str, limit: int) -> tuple[bytes, os.stat_result]:
    """`read_bounded`, with the file's stat taken from the descriptor that was read."""
    fd = os.open(path, _READ)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
        return read_open(fd, info, limit, path), info
    finally:
        os.close(fd)


def read_open(fd: int, info: os.stat_result, limit: int, path: Path | str) -> bytes:
    """The bytes of the regular file open at `fd` (`info`: its fstat), from its start; OSError
    (EFBIG) past `limit` bytes. Reads past the size `info` gave in small pieces only: asking
    for all of `limit` would allocate it (megabytes) to learn that the file ends."""
    if info.st_size > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
    data = os.pread(fd, min(limit, info.st_size) + 1, 0)
    while len(data) <= limit:
        chunk = os.pread(fd, min(1 << 16, limit + 1 - len(data)), len(data))
        if not chunk:
            break
        data += chunk
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
    return data


def read_state(path: Path | str, limit: int = STATE_BYTES) -> dict[str, Any]:
    """A JSON object spool keeps beside the jobs (ledger, observations, markers); OSError or
    InvalidInput when it is unreadable, too big, too deep or not an object."""
    value = load_json(read_bounded(path, limit), str(path))
    if not isinstance(value, dict):
        raise InvalidInput(f"{path}: not a JSON object")
    return value


def list_names(directory: Path | str) -> list[str]:
    """Entry names of `directory` (empty when it is missing); a listing is only a hint."""
    try:
        return os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []


def iter_names(directory: Path | str) -> Iterator[str]:
    """`list_names` one name at a time: a listing of 1,000,000 names never stands in memory."""
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                yield entry.name
    except (FileNotFoundError, NotADirectoryError):
        return
