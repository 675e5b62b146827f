"""The reaper's sweeps: markers and retention, a bounded amount per pass (docs/protocol.md, The
reaper's sweeps).

A sweep walks one directory's names in sorted order and resumes where the last pass stopped
(its cursor and a queue of at most `QUEUE` names are kept in the reaper's observations): a pass
does at most `BUDGET` per-name steps (a stat, a marker read, a deletion) and at most one
listing. A walk that reaches the end rests for its interval (`MARKERS_EVERY`, `RETENTION_EVERY`),
so the passes in between cost nothing per finished job or marker.

Retention only needs the finished files that can be due before the next walk: a name that
carries its creation time (a generated id, a cron fire) younger than the shortest retention
cannot be, so the walk skips it without a stat, and the next walk need not start before the
oldest of those can be due (nor before any file it saw but kept is), nor later than six hours or
the shortest retention after it ended. A stamp in the future is not believed (the file is
stat'ed). The first walk of a reaper (no observations, or another boot) and then one walk a
day (`FULL_EVERY`) stat every name, whatever it says: a file whose mtime was set back, or a
caller's own id made to look like a generated one, is deleted at most a day late.
"""

from __future__ import annotations

import heapq
import logging
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard

from spool.catalog import Located
from spool.config import Config
from spool.errors import InvalidInput, SpoolError
from spool.files import discard, list_names, read_state
from spool.layout import parse_processing_name
from spool.markers import STALE_MARKER_AGE
from spool.timeutil import DUE_LENGTH
from spool.store import Store

log = logging.getLogger("spool.reaper")

BUDGET = 128  # steps per pass, over all walks: a stat, a marker read, a deletion
LISTED = 256  # names of a listing that cost one step
QUEUE = 512  # names kept from one listing; the rest wait for the next listing
MARKERS_EVERY = 3600.0  # seconds a finished marker walk rests (a submit frees a stale key itself)
RETENTION_EVERY = 300.0  # ... a finished retention walk, at least
REST_AT_MOST = 21600.0  # a retention walk rests no longer (restored files, clock jumps)
FULL_EVERY = 86400.0  # a retention walk that stats every name, whatever it says, this often
WALKS = ("cancel", "unique", "done", "dead")

# a generated id (`new_id`, `derived_id`) starts with its creation time; a cron fire ends with
# its fire time (never after its job was created)
_GENERATED = re.compile(r"(\d{8}T\d{6})\.\d{6}-")
_FIRE = re.compile(r"@(?:manual\.)?(\d{8}T\d{6})Z\.json")


def name_stamp(name: str) -> str | None:
    """The creation time a finished file's name carries, as `YYYYMMDDTHHMMSS`, if any."""
    found = _GENERATED.match(name)
    if found is None:
        found = _FIRE.search(name)
        if found is None or found.end() != len(name):
            return None
    return found.group(1)


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y%m%dT%H%M%S")


class Holders:
    """Where markers' jobs stand, for one pass: pending/ and processing/ are listed at most once
    per pass, and only when a marker needs them. A job found nowhere is looked for again the
    usual way, so a listing taken earlier in the pass never makes a marker look stale."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: set[str] | None = None
        self._processing: set[str] | None = None
        self._finished = [(state, str(store.layout.state_dir(state)))
                          for state in ("done", "dead", "held")]

    def find(self, job_id: str, pending: bool = True) -> Located | None:
        """Where the job stands; without `pending`, None also when it is pending (or gone)."""
        layout = self.store.layout
        for state, directory in self._finished:
            if os.path.lexists(path := f"{directory}/{job_id}.json"):
                return Located(state, Path(path))
        if self._processing is None:
            self._processing = {parsed[0] for path in self.store.processing_paths()
                                if (parsed := parse_processing_name(path.name))}
        if job_id in self._processing:
            return Located("processing", layout.processing)
        if not pending:
            return None
        if self._pending is None:  # `P-DUE-ID.json`; a drop that looks canonical only keeps
            # a marker a little longer
            self._pending = {name[DUE_LENGTH + 3:-5] for name in list_names(layout.pending)}
        if job_id in self._pending:
            return Located("pending", layout.pending)
        return self.store.locate(job_id)


class Sweeps:
    """Markers and retention, resumed pass after pass from `state["sweeps"]`."""

    def __init__(self, store: Store, config: Callable[[], Config],
                 clock: Callable[[], float]) -> None:
        self.store = store
        self.config = config
        self.clock = clock

    def step(self, now: datetime, state: dict[str, Any]) -> None:
        """One pass's share: `BUDGET` steps, a listing costing one step per `LISTED` names."""
        saved = state.get("sweeps")
        walks: dict[str, Any] = saved if isinstance(saved, dict) else {}
        budget = BUDGET
        holders = Holders(self.store)
        for name in WALKS:
            walk = walks.get(name)
            if not _valid(walk):
                walk = walks[name] = {"after": None, "queue": [], "rest_until": 0.0}
            if walk.get("shortest", self._shortest()) != self._shortest():
                walk["rest_until"] = 0.0  # a retention changed: a resting walk starts again
            if self.clock() < walk["rest_until"]:
                continue
            while budget > 0:
                if not walk["queue"]:
                    try:
                        listed = self._list(name, walk, now)
                    except OSError as exc:  # the other walks go on; this one tries later
                        log.error("reaper %s: %s", name, exc)
                        walk["rest_until"] = self.clock() + RETENTION_EVERY
                        break
                    budget -= 1 + listed // LISTED
                    if not walk["queue"]:
                        break  # the walk is over and rests
                    continue
                entry = walk["queue"].pop(0)
                budget -= 1
                walk["after"] = entry
                try:
                    self._visit(name, entry, now, walk, holders)
                except (OSError, SpoolError) as exc:
                    log.error("reaper %s %s: %s", name, entry, exc)
        state["sweeps"] = walks

    def _list(self, name: str, walk: dict[str, Any], now: datetime) -> int:
        """Fill the walk's queue from a listing, or end the walk when nothing is left: it
        rests; returns how many names the listing had."""
        after = walk["after"]
        listing = list_names(self._directory(name))
        names = [n for n in listing if not n.startswith(".") and (after is None or n > after)]
        if name in ("done", "dead"):
            if after is None:  # a new walk: the first, and one a day, stats every name
                walk["due_from"], walk["shortest"] = None, self._shortest()
                walk["full"] = self.clock() - walk.get("full_at", -FULL_EVERY) >= FULL_EVERY
            names = self._retention_candidates(names, walk, now)
        walk["queue"] = heapq.nsmallest(QUEUE, names) if len(names) > QUEUE else sorted(names)
        if walk["queue"]:
            return len(listing)
        walk["after"] = None
        if walk.pop("full", False):
            walk["full_at"] = self.clock()
        rest = MARKERS_EVERY if name in ("cancel", "unique") else RETENTION_EVERY
        due_from = walk.get("due_from")
        if name in ("done", "dead") and isinstance(due_from, (int, float)):
            # nothing seen can be due before due_from, nothing finished later before a
            # retention from now
            rest = max(rest, min(due_from - now.timestamp(), self._shortest(), REST_AT_MOST))
        walk["rest_until"] = self.clock() + rest
        return len(listing)

    def _retention_candidates(self, names: list[str], walk: dict[str, Any],
                              now: datetime) -> list[str]:
        """Names that may be due before this walk ends and the next one starts; a name that
        says it is younger than that is skipped, and the youngest of them says when the next
        walk must start at the latest. A full walk takes every name."""
        if walk.get("full"):
            return [entry for entry in names if entry.endswith(".json")]
        # the next walk starts at most RETENTION_EVERY after this one ends: look that far ahead
        horizon = _stamp(now.timestamp() + RETENTION_EVERY - self._shortest())
        latest = _stamp(now.timestamp())

        def young(entry: str) -> bool:  # a generated id's stamp, checked cheaply
            return horizon < entry[:15] <= latest and entry[8:9] == "T" and entry[15:16] == "."

        stamps = [entry[:15] for entry in names if young(entry)]
        candidates = []
        for entry in names:
            if not entry.endswith(".json") or young(entry):
                continue
            stamp = name_stamp(entry) if "@" in entry else None
            if stamp is None or stamp <= horizon or stamp > latest:
                candidates.append(entry)  # a stamp in the future says nothing: stat it
            else:
                stamps.append(stamp)
        oldest_young = min(stamps, default=None)
        if oldest_young is not None:
            try:
                created = datetime.strptime(oldest_young, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
                _due_from(walk, created.timestamp() + self._shortest())
            except ValueError:  # a name that only looks like a stamp: a walk ends soon
                _due_from(walk, now.timestamp())
        return candidates

    def _shortest(self) -> float:
        config = self.config()
        return min([config.defaults.retention, *(j.retention for j in config.jobs.values())])

    def _directory(self, name: str) -> Path:
        layout = self.store.layout
        return {"cancel": layout.cancel, "unique": layout.unique}.get(name) or \
            layout.state_dir(name)

    def _visit(self, name: str, entry: str, now: datetime, walk: dict[str, Any],
               holders: Holders) -> None:
        if name == "cancel":
            where = holders.find(entry)
            if where is None or where.state in ("done", "dead"):
                discard(self.store.layout.cancel / entry)
        elif name == "unique":
            self._visit_marker(entry, now, holders)
        else:
            self._visit_finished(name, entry, now, walk)

    def _visit_marker(self, entry: str, now: datetime, holders: Holders) -> None:
        """A unique key whose job is finished or gone is released (docs/protocol.md,
        Markers); id markers live until their job is purged."""
        path = self.store.layout.unique / entry
        try:
            marker = read_state(path, 65536)
        except (OSError, InvalidInput):
            return
        if "key" not in marker:
            return
        found = marker.get("id")
        holder = found if isinstance(found, str) and found else None
        where = holders.find(holder, pending=False) if holder else None
        if where is None:
            try:
                if now.timestamp() - os.lstat(path).st_mtime <= STALE_MARKER_AGE:
                    return  # its submit may be in flight: not stale wherever its job is
            except OSError:
                return
            where = holders.find(holder) if holder else None
        if where is not None and where.state not in ("done", "dead"):
            return
        if self.store.markers.is_stale("key", path, holder, now):
            self.store.markers.release(path, holder)

    def _visit_finished(self, state: str, entry: str, now: datetime,
                        walk: dict[str, Any]) -> None:
        """Purge one finished file (with its log) past its job type's retention; until its
        body is read, the shortest retention decides whether it is worth reading. A file not
        due yet says when the next walk must start at the latest."""
        config = self.config()
        path = self.store.layout.state_dir(state) / entry
        try:
            mtime = os.lstat(path).st_mtime
        except OSError:
            return
        age = now.timestamp() - mtime
        if age < self._shortest():
            _due_from(walk, mtime + self._shortest())
            return
        try:
            jtype = config.job_type(self.store.read(path).get("job") or "")
        except (OSError, SpoolError, AttributeError) as exc:
            log.warning("retention: %s is unreadable (%s); it ages out with the [defaults] "
                        "retention", path, exc)
            jtype = None
        retention = jtype.retention if jtype else config.defaults.retention
        if age >= retention:
            self.store.purge(path, now)
        else:
            _due_from(walk, mtime + retention)


def _due_from(walk: dict[str, Any], due: float) -> None:
    """Lower the walk's earliest due time of a file it saw but did not purge."""
    current = walk.get("due_from")
    if not isinstance(current, (int, float)) or due < current:
        walk["due_from"] = due


def _valid(walk: object) -> TypeGuard[dict[str, Any]]:
    """Whether a walk read back from the observations file has the fields a pass uses."""
    return isinstance(walk, dict) and isinstance(walk.get("queue"), list) and \
        all(isinstance(n, str) for n in walk["queue"]) and \
        isinstance(walk.get("rest_until"), (int, float)) and \
        (walk.get("after") is None or isinstance(walk.get("after"), str)) and \
        all(isinstance(walk.get(key, 0.0), (int, float))
            for key in ("full_at", "shortest")) and \
        (walk.get("due_from") is None or isinstance(walk.get("due_from"), (int, float)))
