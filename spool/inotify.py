"""A minimal inotify binding (ctypes): wake a daemon when names appear in a directory.

The standard library has none; where inotify is missing or useless (a network or FUSE
filesystem, `spool.mounts.is_network_fs`: events from other hosts never arrive) callers fall
back to polling.
"""

from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path

from spool.mounts import PROC_MOUNTS, is_network_fs, mount_for

IN_CREATE = 0x100
IN_MOVED_TO = 0x80
IN_Q_OVERFLOW = 0x4000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")


class Watcher:
    """Watches directories for new names; `fd` is for select, `read()` gives (dir, name)."""

    def __init__(self) -> None:
        # the interpreter's own symbols hold libc's; find_library("c") would run
        # `ldconfig -p` (a fork and exec at every worker start)
        libc = ctypes.CDLL(None, use_errno=True)
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._dirs: dict[int, Path] = {}
        self.overflowed = False  # events were lost: only a listing knows the names now

    def watch(self, directory: Path) -> None:
        wd = self._add(self.fd, os.fsencode(directory), IN_CREATE | IN_MOVED_TO)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")
        self._dirs[wd] = directory

    def read(self) -> list[tuple[Path, str]]:
        """New names since the last read (empty when none)."""
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        events, offset = [], 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            self.overflowed = self.overflowed or bool(mask & IN_Q_OVERFLOW)
            raw = data[offset + _EVENT.size: offset + _EVENT.size + length]
            offset += _EVENT.size + length
            if wd in self._dirs:
                events.append((self._dirs[wd], os.fsdecode(raw.rstrip(b"\0"))))
        return events

    def close(self) -> None:
        os.close(self.fd)


def make_watcher(*directories: Path, mounts: Path = PROC_MOUNTS) -> Watcher | None:
    """A watcher on local filesystems; None where inotify cannot help (a network or FUSE
    filesystem, per `mounts`; no inotify)."""
    if any(on_network_fs(d, mounts) for d in directories):
        return None
    try:
        watcher = Watcher()
        for directory in directories:
            watcher.watch(directory)
    except (OSError, AttributeError):
        return None
    return watcher


def on_network_fs(directory: Path, mounts: Path = PROC_MOUNTS) -> bool:
    """Whether `directory` lives on a network or FUSE filesystem."""
    mount = mount_for(directory, mounts)
    return bool(mount and is_network_fs(mount.fstype))
