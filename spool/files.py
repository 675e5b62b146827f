"""Small file primitives: staging in `tmp/`, fsync of directories, bounded reads, and the
write-then-rename replacement of non-job state files (host ledgers, reaper and cron state).

Job files are moved only by `spool.store`.
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

TRANSIENT_ERRNOS = {errno.ENOENT, errno.ESTALE}


def stage(tmp_dir: Path | str, data: bytes, durable: bool, tag: str = "stage") -> str:
    """Write `data` to a fresh file in `tmp_dir` (fsynced when `durable`) and return its path."""
    path = f"{tmp_dir}/{tag}.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except OSError:
        discard(path)  # some filesystems leave the entry of a create that failed (ENOSPC)
        raise
    try:
        try:
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)  # may report the write error itself (NFS, full disk)
    except BaseException:
        discard(path)
        raise
    return path


def stage_as(path: Path, data: bytes, durable: bool) -> None:
    """Write `data` to exactly `path` (a deterministic staging name), replacing any old copy."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def fsync_dir(path: Path) -> None:
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


def replace_file(path: Path, data: bytes, tmp_dir: Path, durable: bool) -> None:
    """Write-then-rename for a state file that only this host writes (ledger, observations)."""
    staged = stage(tmp_dir, data, durable, tag=f"state.{path.name}")
    try:
        os.replace(staged, path)
    except BaseException:
        discard(staged)
        raise
    if durable:
        fsync_dir(path.parent)


def read_bounded(path: Path, limit: int) -> bytes:
    """The file's bytes, never following a symlink; OSError(EFBIG) past `limit` bytes."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        data = os.read(fd, limit + 1)
        while len(data) <= limit:
            chunk = os.read(fd, limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
    return data


def list_names(directory: Path) -> list[str]:
    """Entry names of `directory` (empty when it is missing); a listing is only a hint."""
    try:
        return os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
