"""Adversarial review of a worker's view of pending/ (spool.packednames, spool.claim.PendingView,
spool.feed.PendingFeed): each test is an input under which a due job was left unclaimed, or
under which the worker stopped doing what it must."""

from __future__ import annotations

from datetime import datetime

from spool.layout import pending_name
from spool.packednames import SortedNames
from spool.timeutil import UTC

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


def test_an_id_given_twice_stays_pending_while_one_of_its_names_is():
    """A stale view can hold two names of one id (a job renamed with a new DUE: inotify reports
    the new name, the old one stays until the walk finds it gone). Taking out the old name
    must not make the id look gone: a dependent would then be judged on a missing dependency."""
    old, new = pending_name(5, NOW, "build"), pending_name(0, NOW, "build")
    view = SortedNames([old, new])
    view.discard(old)
    assert "build" in view.ids
