"""Which mount a path lives on, from /proc/mounts (used by inotify fallback and doctor)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

PROC_MOUNTS = Path("/proc/mounts")


class Mount(NamedTuple):
    device: str
    point: str
    fstype: str
    options: tuple[str, ...]


def read_mounts(source: Path = PROC_MOUNTS) -> list[Mount]:
    try:
        lines = source.read_text().splitlines()
    except OSError:
        return []
    mounts = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 4:
            point = parts[1].replace("\\040", " ")
            mounts.append(Mount(parts[0], point, parts[2], tuple(parts[3].split(","))))
    return mounts


def mount_for(path: Path, source: Path = PROC_MOUNTS) -> Mount | None:
    """The mount with the longest mount point containing `path`."""
    target = os.path.realpath(path)
    best = None
    for mount in read_mounts(source):
        point = mount.point.rstrip("/") or "/"
        if target == point or target.startswith(point if point == "/" else point + "/"):
            if best is None or len(point) >= len(best.point.rstrip("/") or "/"):
                best = mount
    return best
