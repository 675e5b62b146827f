"""Which mount a path lives on, from /proc/mounts, and whether it is a network filesystem
(used by the inotify fallback and by doctor, so both decide alike).

On a network or FUSE filesystem inotify sees only this client's own changes, never another
host's, so workers poll there.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

PROC_MOUNTS = Path("/proc/mounts")

# network and cluster filesystems, and FUSE (any `fuse.*`: sshfs, fuse-nfs, s3fs, glusterfs...)
NETWORK_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "glusterfs", "lustre", "ceph", "cephfs",
    "9p", "afs", "coda", "gfs", "gfs2", "ocfs2", "gpfs", "beegfs", "orangefs", "pvfs2",
    "panfs", "davfs", "virtiofs", "vboxsf", "vmhgfs", "moosefs", "lizardfs", "sshfs",
    "fuse", "fuseblk",
})
_ESCAPE = re.compile(r"\\([0-7]{3})")


class Mount(NamedTuple):
    device: str
    point: str
    fstype: str
    options: tuple[str, ...]


def is_network_fs(fstype: str) -> bool:
    """Whether `fstype` (the third field of /proc/mounts) is a network, cluster or FUSE
    filesystem, where inotify misses other clients' changes."""
    kind = fstype.lower()
    return kind in NETWORK_FS or kind.startswith(("nfs", "fuse"))


def read_mounts(source: Path = PROC_MOUNTS) -> list[Mount]:
    """The mounts listed in `source`; empty when it cannot be read. Mount points keep any
    byte (octal escapes decoded, names that are not UTF-8 surrogate-escaped like os.listdir)."""
    try:
        lines = os.fsdecode(source.read_bytes()).splitlines()
    except OSError:
        return []
    mounts = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 4:
            mounts.append(Mount(_unescape(parts[0]), _unescape(parts[1]), parts[2],
                                tuple(parts[3].split(","))))
    return mounts


def _unescape(field: str) -> str:
    """A /proc/mounts field with `\\040` (space), `\\011`, `\\012` and `\\134` decoded."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def mount_for(path: Path, source: Path = PROC_MOUNTS) -> Mount | None:
    """The mount with the longest mount point containing `path` (the last one listed wins a
    tie: it is mounted over the others)."""
    target = os.path.realpath(path)
    best = None
    for mount in read_mounts(source):
        point = mount.point.rstrip("/") or "/"
        inside = target == point or target.startswith(point if point == "/" else point + "/")
        if inside and (best is None or len(point) >= len(best.point.rstrip("/") or "/")):
            best = mount
    return best
