"""`spool reap`: return jobs whose worker died, finish half-done moves, clear stale markers,
apply retention.

Staleness never compares one host's clock with a time another host wrote: a processing file is
stale when its mtime has not changed for `lease` seconds as measured by this reaper's own clock
between its own observations, kept in `hosts/<host>.reaper.json` so that `reap --once` from a
timer works too. On first sight, a file whose mtime is older than the file server's own clock
(the mtime of a probe the reaper just wrote) by more than two leases is stale at once.
This host's own processing files are judged by their flock instead.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime

from spool.api import Spool
from spool.claim import try_lock_orphan
from spool.errors import SpoolError
from spool.files import discard, list_names, replace_file
from spool.recovery import recover_holds, recover_orphan

log = logging.getLogger("spool.reaper")


class Reaper:
    """The reaper's observations and one `step(now)`."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.store = spool.store
        self.obs_path = self.store.layout.hosts / f"{spool.host}.reaper.json"

    def _load(self) -> dict[str, list[float]]:
        try:
            return json.loads(self.obs_path.read_bytes())
        except (OSError, ValueError):
            return {}

    def step(self, now: datetime) -> list[str]:
        """One pass; returns the ids it reaped."""
        reaped = self.reap_stale(now)
        for task in (recover_holds, self.clear_markers, self.apply_retention):
            try:
                task(self.store, now) if task is recover_holds else task(now)
            except (OSError, SpoolError) as exc:
                log.error("reaper %s: %s", getattr(task, "__name__", task), exc)
        return reaped

    def reap_stale(self, now: datetime) -> list[str]:
        lease = self.spool.config.defaults.lease
        seen = self._load()
        current: dict[str, list[float]] = {}
        probe_time = self._probe()
        reaped = []
        for path in list(self.store.processing_paths()):
            host = path.parent.name
            if host == self.spool.host:
                fd = try_lock_orphan(path)
                if fd is not None:
                    try:
                        if recover_orphan(self.store, path, now, inode=os.fstat(fd).st_ino):
                            reaped.append(path.name)
                    finally:
                        os.close(fd)
                continue
            try:
                info = os.stat(path)
            except OSError:
                continue
            key = str(path.relative_to(self.store.layout.processing))
            mtime, first = seen.get(key, [None, None])
            if mtime != info.st_mtime_ns:
                current[key] = [info.st_mtime_ns, now.timestamp()]
                stale = mtime is None and probe_time is not None and \
                    probe_time - info.st_mtime > 2 * lease
            else:
                current[key] = [mtime, first]
                stale = now.timestamp() - first >= lease
            if stale:
                log.warning("reap %s: heartbeat unchanged for the lease (%gs)", key, lease)
                if recover_orphan(self.store, path, now, inode=info.st_ino):
                    reaped.append(path.name)
                current.pop(key, None)
        replace_file(self.obs_path, json.dumps(current).encode(), self.store.layout.tmp,
                     self.spool.config.defaults.durable)
        return reaped

    def _probe(self) -> float | None:
        """The file server's clock: mtime of a file written just now."""
        probe = self.store.layout.tmp / f"probe.{self.spool.host}.{os.getpid()}"
        try:
            probe.write_bytes(b"")
            return probe.stat().st_mtime
        except OSError:
            return None
        finally:
            discard(probe)

    def clear_markers(self, now: datetime) -> None:
        """Cancel requests and unique keys of jobs that are finished or gone."""
        for name in list_names(self.store.layout.cancel):
            where = self.store.locate(name)
            if where is None or where.state in ("done", "dead"):
                discard(self.store.layout.cancel / name)
        for name in list_names(self.store.layout.unique):
            path = self.store.layout.unique / name
            try:
                marker = json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue
            if "key" in marker and self.store.markers.is_stale("key", path, marker.get("id"), now):
                self.store.markers.release(path, marker.get("id"))

    def apply_retention(self, now: datetime) -> None:
        """Purge done/ and dead/ files (and their logs) older than their retention."""
        config = self.spool.config
        shortest = min([config.defaults.retention, *(j.retention for j in config.jobs.values())])
        for state in ("done", "dead"):
            directory = self.store.layout.state_dir(state)
            for name in self.store.terminal_names(state):
                path = directory / name
                try:
                    age = now.timestamp() - path.stat().st_mtime
                    if age < shortest:
                        continue
                    jtype = config.job_type(self.store.read(path).get("job") or "")
                except (OSError, SpoolError):
                    continue
                if age >= (jtype.retention if jtype else config.defaults.retention):
                    self.store.purge(path, now)
