"""Pending jobs parked on a full limit pool (docs/protocol.md, Limit tokens), so that a claim pass
costs the same whether one job or 10,000 wait for a pool: a parked name leaves the view's walk, and
each pass looks once at each pool with parked names (one listing) and returns as many of them, in
claim order, as the pool has free tokens. A listing of `pending/` (the view's refresh) keeps parked
names out and forgets those that are gone.
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import TYPE_CHECKING

from spool.files import list_names
from spool.limits import pool_dir, token_indexes
from spool.limitspec import PoolRef

if TYPE_CHECKING:
    from spool.claim import PendingView
    from spool.packednames import SortedNames
    from spool.store import Store


class Parking:
    """Sorted parked names per pool."""

    def __init__(self) -> None:
        self.by_pool: dict[PoolRef, list[str]] = {}
        self.names: set[str] = set()
        self.ids: Counter[str] = Counter()  # of the names: still pending, to dependents

    def __bool__(self) -> bool:
        return bool(self.names)

    def add(self, pool: PoolRef, name: str) -> None:
        if name not in self.names:
            bisect.insort(self.by_pool.setdefault(pool, []), name)
            self.names.add(name)
            self.ids[name[26:-5]] += 1

    def take(self, pool: PoolRef, count: int | None) -> list[str]:
        """The first `count` names parked on `pool` (all with None), no longer parked."""
        waiting = self.by_pool.get(pool, [])
        taken = waiting[:] if count is None else waiting[:count]
        del waiting[:len(taken)]
        if not waiting:
            self.by_pool.pop(pool, None)
        self.names.difference_update(taken)
        for job_id in (name[26:-5] for name in taken):
            self.ids[job_id] -= 1
            if not self.ids[job_id]:
                del self.ids[job_id]
        return taken

    def unparked(self, names: SortedNames) -> None:
        """Take the parked names out of `names` (a fresh listing); parked names not in it are
        gone and forgotten."""
        if not self.names:
            return
        for pool in list(self.by_pool):
            kept = [name for name in self.by_pool[pool] if name in names]
            if kept:
                self.by_pool[pool] = kept
            else:
                del self.by_pool[pool]
        self.names = {name for name in self.names if name in names}
        self.ids = Counter(name[26:-5] for name in self.names)
        for name in self.names:
            names.discard(name)


def reopen_parked(store: Store, view: PendingView) -> None:
    """Return parked names to the walk, as many per pool as it has free tokens (all of them
    when the limit is no longer declared: their claim then says why)."""
    for pool in list(view.parked.by_pool):
        limit = store.config.limits.get(pool.name)
        if limit is None:
            room = None
        else:
            try:
                room = limit.max - len(token_indexes(list_names(pool_dir(store, pool))))
            except OSError:  # unreadable (EACCES, EIO): its jobs wait, logged by their claim
                continue
            if room <= 0:
                continue
        for name in view.parked.take(pool, room):
            view.add(name)


def unpark_all(view: PendingView) -> None:
    """Every parked name back into the walk (the config changed: pools may have too)."""
    for pool in list(view.parked.by_pool):
        for name in view.parked.take(pool, None):
            view.add(name)
