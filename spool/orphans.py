"""This host's side of liveness for a worker: its processing directory must be a real
directory, and its orphans — processing files whose flock is free, their worker gone — are
recovered under the host lock, their lost attempt's start time taken from the ledger."""

from __future__ import annotations

import errno
import logging
import os
import stat
from datetime import datetime

from spool.claim import try_lock_orphan
from spool.files import make_dir
from spool.layout import parse_processing_name
from spool.ledger import Ledger
from spool.recovery import recover_orphan
from spool.store import Store

log = logging.getLogger("spool.worker")


WRITTEN = ("tmp", "pending", "processing", "done", "dead", "logs", "hosts", "cancel")


def make_host_dir(store: Store) -> None:
    """Create `processing/<host>` if missing (group-writable in a group spool, whatever the
    umask); what stands there instead is left for `host_dir_ok` to report."""
    try:
        make_dir(store.layout.host_processing(store.host), store.mode)
    except NotADirectoryError:
        pass
    except OSError as exc:
        if exc.errno != errno.ENOTDIR:
            raise


def host_dir_ok(store: Store, report: bool = False) -> bool:
    """Whether `processing/<host>` and the directories a worker writes into are real
    directories (lstat): a link a group member planted would send claimed files, logs or
    outcomes out of the spool, so nothing is claimed or recovered through it."""
    layout = store.layout
    for path in (layout.host_processing(store.host), *(layout.root / d for d in WRITTEN)):
        try:
            mode = os.lstat(path).st_mode
        except OSError as exc:
            if report:
                log.error("%s cannot be checked: %s; claiming nothing", path, exc)
            return False
        if not stat.S_ISDIR(mode):
            if report:
                what = "a symbolic link" if stat.S_ISLNK(mode) else "not a directory"
                log.error("%s is %s, not the directory this worker writes into: claiming "
                          "nothing until it is a real directory", path, what)
            return False
    return True


def recover_orphans(store: Store, ledger: Ledger, busy: set[str],
                    hints: dict[tuple[str, object], object], now: datetime) -> list[str]:
    """Requeue or finish this host's processing files whose flock is free, but those of the
    jobs in `busy` (this worker's own); call under the host lock. `hints` has the start times
    of ledger entries pruned earlier, for the lost attempt's history. Returns the names of
    the files recovered."""
    recovered = []
    for path in list(store.processing_paths(store.host)):
        parsed = parse_processing_name(path.name)
        if not parsed or parsed[0] in busy:
            continue
        owner = ledger.running.get(parsed[0])
        if owner and owner.get("attempt") == parsed[1] \
                and str(owner.get("worker_pid")) in ledger.workers:
            continue  # a live worker runs it: its flock may be between two holds (a retry)
        fd = try_lock_orphan(path)
        if fd is None:
            continue
        entry = ledger.running.get(parsed[0]) or ledger.gone.get(parsed[0])
        started = entry.get("started_at") if entry and entry.get("attempt") == parsed[1] \
            else hints.get(parsed)
        try:
            where = recover_orphan(store, path, now, inode=os.fstat(fd).st_ino,
                                   started_at=started if isinstance(started, str) else None,
                                   lock_fd=fd)  # closed by the recovery at the right moment
            log.warning("recovered orphan %s -> %s", path.name, where)
            recovered.append(path.name)
        except OSError as exc:
            log.error("cannot recover orphan %s: %s", path, exc)
    return recovered
