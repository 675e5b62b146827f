"""`spool doctor`: checks of a spool and the filesystem under it, one finding per line.

Each finding is (level, message) with level OK, WARN or FAIL; the message says what to do.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import stat
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Callable

from spool.api import Spool
from spool.claim import try_lock_orphan
from spool.config import load_config
from spool.errors import SpoolError
from spool.files import discard, stage
from spool.layout import OPTIONAL_DIRS, SUBDIRS
from spool.mounts import PROC_MOUNTS, Mount, is_network_fs, mount_for
from spool.units import check_worker_unit

Finding = tuple[str, str]


def diagnose(sp: Spool, mounts: Path = PROC_MOUNTS) -> list[Finding]:
    """Every check, in order; a check that cannot run is itself a finding. A damaged layout
    is reported entry by entry, and the checks that need it are skipped, saying so."""
    broken = broken_layout(sp.path)
    findings = _layout(sp, broken)
    checks: list[tuple[str, Callable[[Spool], list[Finding]]]] = [
        ("config", _config), ("filesystem", lambda s: _filesystem(s, mounts)),
        ("systemd", check_worker_unit)]
    if broken:
        findings.append(("WARN", "skipped the rename, lock, clock, stuck and unclaimable job "
                         "checks: repair the layout first"))
    else:
        checks += [("rename", _create_and_rename), ("locks", _lock), ("clock", _clock),
                   ("stuck", _stuck), ("unclaimable", _unclaimable)]
    for name, check in checks:
        try:
            findings.extend(check(sp))
        except (OSError, SpoolError) as exc:
            findings.append(("FAIL", f"{name}: {exc}"))
    return findings


def broken_layout(root: Path) -> list[tuple[str, str]]:
    """(directory, problem) for each spool directory that is missing or not a directory."""
    broken = []
    for sub in SUBDIRS:
        try:
            mode = os.lstat(root / sub).st_mode
        except FileNotFoundError:
            if sub in OPTIONAL_DIRS:
                continue  # an older spool: hold and pause create it when first used
            broken.append((sub, "is missing: 'spool init' recreates missing directories"))
            continue
        except OSError as exc:
            broken.append((sub, f"cannot be examined: {exc.strerror or exc}"))
            continue
        if stat.S_ISLNK(mode):
            broken.append((sub, "is a symbolic link (spool never follows links inside the "
                           "spool): put a directory there"))
        elif not stat.S_ISDIR(mode):
            broken.append((sub, f"is {_kind(mode)}, not a directory: move it away, then run "
                           "'spool init'"))
    return broken


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a directory"


def _layout(sp: Spool, broken: list[tuple[str, str]]) -> list[Finding]:
    if broken:
        return [("FAIL", f"layout: {sp.path / sub} {problem}") for sub, problem in broken]
    unwritable = [sub for sub in SUBDIRS if not os.access(sp.path / sub, os.W_OK | os.X_OK)
                  and (sub not in OPTIONAL_DIRS or os.path.lexists(sp.path / sub))]
    if unwritable:
        return [("FAIL", f"permissions: cannot write {', '.join(unwritable)} in {sp.path}: "
                 "give this user write access (or use 'spool init --group')")]
    return [("OK", f"layout and permissions of {sp.path}")]


def _config(sp: Spool) -> list[Finding]:
    config = load_config(sp.layout.config_path)  # not sp.config: that refuses a damaged layout
    return [("OK", f"{sp.layout.config_path}: {len(config.jobs)} job types, "
             f"{len(config.schedules)} schedules")]


def _filesystem(sp: Spool, mounts: Path) -> list[Finding]:
    mount = mount_for(sp.path, mounts)
    if mount is None:
        return [("WARN", "filesystem: cannot tell (no /proc/mounts)")]
    if mount.fstype.startswith("nfs"):
        return nfs_advice(mount)
    if is_network_fs(mount.fstype):
        return [("WARN", f"filesystem: {mount.fstype} {mount.device} on {mount.point} is a "
                 "network or FUSE filesystem: workers poll pending/ every `poll` (inotify sees "
                 "no other client's changes); spool is built for local disks and NFS: check "
                 "the rename and lock lines below, and prefer NFS (hard mount) for a cluster")]
    return [("OK", f"filesystem: {mount.fstype} on {mount.point} (local: inotify wake-ups)")]


def nfs_advice(mount: Mount) -> list[Finding]:
    """What the mount options of an NFS spool mean for spool."""
    opts = {o.split("=")[0]: (o.split("=", 1)[1] if "=" in o else "") for o in mount.options}
    found: list[Finding] = [("OK", f"filesystem: {mount.fstype} {mount.device} on {mount.point}"
                             " (workers poll: inotify sees no other host's changes)")]
    if "soft" in opts:
        found.append(("FAIL", "nfs: 'soft' mount: an I/O timeout can fail a rename that "
                      "happened; remount with 'hard'"))
    else:
        found.append(("OK", "nfs: hard mount"))
    if "nolock" in opts or opts.get("local_lock") in ("all", "flock"):
        found.append(("OK", "nfs: locks are local to this host (enough: spool's locks are "
                      "per host)"))
    cache = max(int(opts.get(k, 0) or 0) for k in ("actimeo", "acdirmax", "acregmax"))
    if "noac" in opts:
        found.append(("OK", "nfs: attribute cache off (noac): fresh listings, more traffic"))
    elif cache == 0 or cache > 3:
        shown = f"{cache}s" if cache else "the default (up to 60s)"
        found.append(("WARN", f"nfs: attribute cache {shown}: new jobs may be seen late by "
                      "other hosts; mount with actimeo=1 (or acdirmax=1) for latency"))
    else:
        found.append(("OK", f"nfs: attribute cache {cache}s"))
    if opts.get("lookupcache") not in ("none", "positive"):
        found.append(("WARN", "nfs: lookupcache=all may hide new names for a while; "
                      "consider lookupcache=positive"))
    return found


def _create_and_rename(sp: Spool) -> list[Finding]:
    tmp = sp.layout.tmp
    staged = Path(stage(tmp, b"doctor", False, "doctor", host=sp.host))
    first, second = tmp / f"{staged.name}.a", tmp / f"{staged.name}.b"
    try:
        os.link(staged, first)
        try:
            os.link(staged, first)
            return [("FAIL", "exclusive create: link(2) onto an existing name succeeded")]
        except FileExistsError:
            pass
        os.rename(first, second)
        if first.exists() or not second.exists():
            return [("FAIL", "rename: the file did not move atomically")]
    finally:
        for path in (staged, first, second):
            discard(path)
    return [("OK", "rename and exclusive create (link) behave atomically")]


def _lock(sp: Spool) -> list[Finding]:
    probe = sp.layout.hosts / f".doctor.{os.getpid()}.{secrets.token_hex(4)}.lock"
    fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        code = ("import fcntl,os,sys\nfd=os.open(sys.argv[1],os.O_RDONLY)\n"
                "try:\n fcntl.flock(fd,fcntl.LOCK_EX|fcntl.LOCK_NB)\n sys.exit(0)\n"
                "except OSError:\n sys.exit(3)\n")
        result = subprocess.run([sys.executable, "-c", code, str(probe)], timeout=30)
    finally:
        os.close(fd)
        discard(probe)
    if result.returncode == 3:
        return [("OK", "locks: a held flock excludes another process")]
    return [("FAIL", "locks: another process could take a held flock: two workers of this host "
             "could exceed its slots; enable locking on this filesystem")]


def _clock(sp: Spool) -> list[Finding]:
    probe = sp.layout.tmp / f"doctor-clock.{os.getpid()}"
    before = time.time()
    probe.write_bytes(b"")
    skew = probe.stat().st_mtime - (before + time.time()) / 2
    discard(probe)
    lease = sp.config.defaults.lease
    if abs(skew) > lease / 2:
        return [("FAIL", f"clock: this host and the file server differ by {skew:+.1f}s; "
                 "run NTP (spool's staleness checks do not depend on it, but ages shown do)")]
    if abs(skew) > 2:
        return [("WARN", f"clock: {skew:+.1f}s from the file server's clock; run NTP")]
    return [("OK", f"clock: {skew:+.2f}s from the file server's clock")]


def _stuck(sp: Spool) -> list[Finding]:
    lease = sp.config.defaults.lease
    stuck = []
    for path in sp.store.processing_paths():
        if path.parent.name == sp.host:
            fd = try_lock_orphan(path)
            if fd is not None:
                os.close(fd)
                stuck.append(f"{path.name} (no worker holds it)")
        else:
            try:
                age = time.time() - path.stat().st_mtime
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ESTALE):
                    continue
                raise
            if age > 2 * lease:
                stuck.append(f"{path.parent.name}/{path.name} (heartbeat {age:.0f}s old)")
    if stuck:
        return [("WARN", f"stuck processing files: {', '.join(stuck[:10])}: run 'spool reap' "
                 "(or start a worker on their host)")]
    return [("OK", "no stuck processing files")]


def _unclaimable(sp: Spool) -> list[Finding]:
    ids = sp.status()["unclaimable"]
    if ids:
        return [("WARN", f"unclaimable jobs (more slots than any host): {', '.join(ids[:10])}: "
                 "raise a host's --capacity or lower the job's slots")]
    return [("OK", "no unclaimable jobs")]

