"""`spool reap`: return jobs whose worker died, finish half-done moves, clear stale markers,
apply retention.

Staleness never compares one host's clock with a time another host wrote, and never trusts a
wall clock that may jump: a processing file is stale when its mtime has not changed for `lease`
seconds as measured by this reaper on CLOCK_BOOTTIME between its own observations (kept in
`hosts/<host>.reaper.json`, tagged with the boot id, so that `reap --once` from a timer works
too; observations of another boot are discarded). On first sight, a file whose mtime is older
than the file server's own clock (the mtime of a probe the reaper just wrote) by more than two
leases is stale at once; claimers make a processing file's mtime fresh at the claim.
This host's own processing files are judged by their flock instead.

A pass costs what changed: markers and retention walk their directories a bounded amount per
pass, resuming where the last pass stopped, and rest between walks (spool.sweep). Limit tokens
are read on every pass: a pool holds at most `max` tokens, so that costs the running jobs, not
the queue.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable

import json
import logging
import os
import time
from datetime import datetime
from pathlib import Path

from spool.api import Spool
from spool.ledger import HostLedger, boot_id
from spool.orphans import recover_orphans
from spool.errors import InvalidInput, SpoolError
from spool.files import create_private, discard, read_state, replace_file
from spool.layout import parse_processing_name
from spool.limits import Limits
from spool.recovery import recover_holds, recover_orphan
from spool.sweep import Sweeps

log = logging.getLogger("spool.reaper")


def boot_clock() -> float:
    """Seconds since boot, counting suspend, never jumping with the wall clock."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class Reaper:
    """The reaper's observations and one `step(now)`."""

    def __init__(self, spool: Spool, clock: Callable[[], float] = boot_clock) -> None:
        self.spool = spool
        self.store = spool.store
        self.obs_path = self.store.layout.hosts / f"{spool.host}.reaper.json"
        self.boot = boot_id()
        self.clock = clock
        self.sweeps = Sweeps(self.store, lambda: spool.config, clock)

    def _load(self) -> dict[str, Any]:
        try:
            state = read_state(self.obs_path)
        except (OSError, InvalidInput):
            return {}
        if state.get("boot") != self.boot:
            return {}  # another boot's clock readings mean nothing now
        return state

    def step(self, now: datetime) -> list[str]:
        """One pass; returns the names of the processing files it reaped."""
        state = self._load()
        reaped = self.reap_stale(now, state)
        tasks: list[tuple[str, Callable[[], object]]] = [
            ("recover", lambda: recover_holds(self.store, now)), ("limits", self.sweep_tokens),
            ("sweeps", lambda: self.sweeps.step(now, state))]
        for name, task in tasks:
            try:
                task()
            except (OSError, SpoolError) as exc:
                log.error("reaper %s: %s", name, exc)
        self._save(state)
        return reaped

    def _save(self, state: dict[str, Any]) -> None:
        state["boot"] = self.boot
        replace_file(self.obs_path, json.dumps(state).encode(), self.store.layout.tmp,
                     self.spool.config.defaults.durable, host=self.spool.host,
                     mode=self.store.mode)

    def reap_stale(self, now: datetime, state: dict[str, Any]) -> list[str]:
        """Reap processing files whose heartbeat stopped; updates `state["files"]`."""
        lease = self.spool.config.defaults.lease
        files = state.get("files")
        seen: dict[str, Any] = files if isinstance(files, dict) else {}
        current: dict[str, list[float]] = {}
        probe_time: float | None = None
        reaped = self._recover_own(now)
        for path in list(self.store.processing_paths()):
            host = path.parent.name
            if host == self.spool.host:
                continue
            try:
                info = os.lstat(path)
            except OSError:
                continue
            key = f"{host}/{path.name}"
            mtime, first = (seen.get(key) or [None, None])[:2]
            if mtime != info.st_mtime_ns:
                current[key] = [info.st_mtime_ns, self.clock()]
                if mtime is not None:
                    continue
                if probe_time is None:
                    probe_time = self._probe()
                stale = probe_time is not None and probe_time - info.st_mtime > 2 * lease
            else:
                current[key] = [mtime, first]
                stale = self.clock() - first >= lease
            if stale:
                log.warning("reap %s: heartbeat unchanged for the lease (%gs)", key, lease)
                if recover_orphan(self.store, path, now, inode=info.st_ino,
                                  started_at=self._started_hint(path)):
                    reaped.append(path.name)
                current.pop(key, None)
        state["files"] = current
        return reaped

    def sweep_tokens(self) -> None:
        """Limit tokens whose attempt is not in processing/, older than the lease by the file
        server's clock (docs/protocol.md, Limit tokens): their claimer died between token and
        rename, or before releasing them."""
        for path in Limits(self.store).sweep(self._probe, self.spool.config.defaults.lease):
            log.warning("freed limit token %s: its attempt is not in processing/", path)

    def _recover_own(self, now: datetime) -> list[str]:
        """This host's orphans (flock free), under the host lock, whose pruning first stops
        any task their dead worker left running (docs/protocol.md, Slots and Liveness: never two
        runs at once)."""
        if not any(self.store.processing_paths(self.spool.host)):
            return []
        ledger = HostLedger(self.store.layout, self.spool.host, self.store.durable)
        with ledger.locked() as book:
            return recover_orphans(self.store, book, set(), {}, now)

    def _started_hint(self, path: Path) -> str | None:
        """When the lost attempt started, as its host's ledger says (a hint, for history)."""
        parsed = parse_processing_name(path.name)
        try:
            ledger = read_state(self.store.layout.hosts / f"{path.parent.name}.json")
            entry = ledger["running"][parsed[0]] if parsed else None
        except (OSError, InvalidInput, KeyError, TypeError):
            return None
        if isinstance(entry, dict) and parsed and entry.get("attempt") == parsed[1]:
            started = entry.get("started_at")
            return started if isinstance(started, str) else None
        return None

    def _probe(self) -> float | None:
        """The file server's clock: mtime of a file written just now."""
        probe = self.store.scratch_path("probe")
        try:
            create_private(probe, b"", False, self.store.mode)
            return os.lstat(probe).st_mtime
        except OSError as exc:
            log.warning("cannot write the clock probe %s: %s", probe, exc)
            return None
        finally:
            discard(probe)
