"""A worker's pending feed: its sorted view of `pending/` (`spool.claim.PendingView`), kept
current by inotify and listings, and the adoption of the drops the view saw.

Invariant: every name in `pending/` reaches the view within `refresh` seconds — at once through
inotify on a local filesystem, by a listing where inotify cannot help (no inotify, a network
filesystem, lost events) or when the view runs dry. A listing of 100,000 names is never made per
idle moment: a burst worker's cost stays flat with the length of `pending/`. Adoption is bounded
to a quarter of a heartbeat per step (docs/protocol.md, Slots and Liveness).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING

from spool.claim import PendingView
from spool.dependencies import check_dependencies
from spool.drops import adopt_pass
from spool.inotify import Watcher, make_watcher
from spool.parking import unpark_all
from spool.pause import read_pauses
from spool.store import Store
from spool.timeutil import parse_due

if TYPE_CHECKING:
    from spool.ledger import HostLedger


class PendingFeed:
    """The pending view of one worker and the inotify watcher that feeds it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.view = PendingView(store)
        self.watcher: Watcher | None = None
        self.listed_at = float("-inf")  # when a step last tried a listing
        self.adoption_failed = False  # (a full disk, EACCES): the next try waits a poll

    def watch(self) -> int | None:
        """Watch pending/ and cancel/ with inotify; the descriptor to wait on, or None where
        inotify cannot help (listings every `poll` then bring new names)."""
        self.watcher = make_watcher(self.store.layout.pending, self.store.layout.cancel)
        return self.watcher.fd if self.watcher else None

    def close(self) -> None:
        if self.watcher:
            self.watcher.close()

    def take_events(self) -> None:
        """Add the names inotify reported in pending/ to the view."""
        for directory, name in self.watcher.read() if self.watcher else ():
            if directory == self.store.layout.pending:
                self.view.add(name)

    def refresh_if_stale(self, mono: float) -> None:
        """A step's listing, at most once per `poll` (or second): `refresh` seconds after the
        last one, or sooner when the view ran dry or inotify's events are not complete."""
        defaults = self.store.config.defaults
        since = mono - self.view.refreshed_at
        if since > min(defaults.poll, 1.0) and (
                since > defaults.refresh or not (self.view.names or self.view.parked)
                or self.watcher is None or self.watcher.overflowed):
            self._refresh(mono)  # without (complete) inotify, new names come from listings

    def refresh_unless_watched(self) -> None:
        """Bring the view up to date: from inotify's events when they are complete (a
        listing of 100,000 names per idle moment would make a burst cost grow with pending/),
        from a listing without inotify, after lost events, or `refresh` seconds after the
        last one."""
        mono = time.monotonic()
        self.take_events()
        if self.watcher is None or self.watcher.overflowed \
                or mono - self.view.refreshed_at > self.store.config.defaults.refresh:
            self._refresh(mono)

    def _refresh(self, mono: float) -> None:
        if self.watcher:
            self.watcher.overflowed = False  # the listing sees what the lost events said
        self.listed_at = mono  # tried: a listing that fails is tried again a poll later
        self.view.refresh(mono)

    def waits(self, now: datetime, paused_seen: bool, stopping: bool) -> list[float]:
        """Seconds until the view needs the worker: a due time, drops left to adopt, due work
        another worker of this host holds the slots for, a listing without inotify."""
        view, poll = self.view, self.store.config.defaults.poll
        waits = []
        if view.drops and not stopping:
            # a bounded adoption pass left some for the next step (after one that failed,
            # at once would be a busy loop of errors)
            waits.append(poll if self.adoption_failed else 0.0)
        due = view.next_due(now)
        if due:
            waits.append((parse_due(due) - now).total_seconds())
        if next(view.due(now), None) is not None:  # the first name may be a future one
            # due work but no free slot: another worker of this host holds them; look again
            # (due work held back by a pause waits for a resume: a poll interval is enough)
            waits.append(poll if paused_seen else min(poll, 0.05))
        if (self.watcher is None or not view.names) and not stopping:
            # new names come from listings: the next is due a poll after the last, however
            # often the worker woke in between (a job's end, a heartbeat), or a job submitted
            # on another host waited up to two polls
            last = max(view.refreshed_at, self.listed_at)
            waits.append(max(0.0, last + poll - time.monotonic()) + 0.001)
        elif view.parked or self.watcher is None or not view.names:
            waits.append(poll)  # a pool freed on another host: look
        return waits

    def adopt(self, now: datetime) -> bool:
        """Adopt drops for at most a quarter of a heartbeat (docs/protocol.md, Slots and Liveness:
        a burst of thousands of drops must not delay heartbeats); the rest waits for the next step.
        True when drops are left for it."""
        view = self.view
        if not view.drops:
            return False
        until = time.monotonic() + max(0.02, self.store.config.defaults.heartbeat / 4)
        try:
            _, left = adopt_pass(self.store, now, list(view.drops), until)
        except OSError:
            self.adoption_failed = True
            raise
        self.adoption_failed = False
        view.drops = dict.fromkeys(left)
        if not left:
            view.refresh(time.monotonic())
            view.drops = {}  # what is left was seen just now (young or taken): later
        return bool(view.drops)

    def anything_due(self, now: datetime, ledger: HostLedger) -> bool:
        """Whether a burst worker has work left: a drop to adopt, or a due job that fits the
        host's capacity, is not paused and whose dependencies are met."""
        self.refresh_unless_watched()
        if self.adopt(now):
            return True
        pauses = read_pauses(self.store)  # paused work does not keep a burst worker
        if pauses.host(self.store.host):
            return False
        unpark_all(self.view)  # waiting for a limit token is waiting for running work
        with ledger.locked() as held:
            for name in self.view.due(now):
                info = self.view.job_info(name)
                if info is None:  # taken by another worker since the view saw it
                    self.view.remove(name)
                elif info.slots <= held.capacity and not pauses.job(info.job) and (
                        not info.after or check_dependencies(self.store, info.after)):
                    return True
        return False
