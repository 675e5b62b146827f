"""What keeps a worker's cost per job flat with the length of pending/: the next due stamp by
bisection, and a burst worker that learns new names from inotify instead of listing pending/
whenever nothing runs (a listing only without inotify, after lost events, or every `refresh`)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from conftest import make_spool
from hypothesis import given
from hypothesis import strategies as st

from spool import Spool
from spool.claim import PendingView
from spool.layout import pending_name
from spool.packednames import SortedNames
from spool.timeutil import UTC, due_stamp
from spool.worker import Worker

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


@given(st.lists(st.tuples(st.integers(0, 9), st.integers(-3, 3),
                          st.from_regex(r"[a-z0-9]{4,8}", fullmatch=True)), max_size=40))
def test_next_due_is_the_earliest_future_stamp(jobs):
    view = PendingView(None)  # type: ignore[arg-type]
    view.names = SortedNames({pending_name(priority, NOW + timedelta(seconds=shift), job_id)
                         for priority, shift, job_id in jobs})
    future = [name[2:25] for name in view.names if name[2:25] > due_stamp(NOW)]
    assert view.next_due(NOW) == (min(future) if future else None)


@pytest.fixture
def worker(tmp_path):
    sp = Spool(make_spool(tmp_path / "spool"), host="h1", clock=lambda: NOW)
    worker = Worker(sp, capacity=1, burst=True)
    if worker.feed.watch() is None:
        pytest.skip("no inotify here")
    worker.start(NOW)
    listings = []
    refresh = worker.view.refresh
    worker.view.refresh = lambda mono: (listings.append(mono), refresh(mono))  # type: ignore
    worker.listings = listings  # type: ignore[attr-defined]
    yield worker
    worker.feed.close()


def test_an_idle_burst_worker_does_not_list_pending(worker):
    worker.spool.submit("noop", at=NOW + timedelta(days=1))
    assert not worker.feed.anything_due(NOW, worker.ledger)
    assert not worker.feed.anything_due(NOW, worker.ledger)
    assert worker.listings == []


def test_a_burst_worker_sees_a_new_due_job_through_inotify(worker):
    assert not worker.feed.anything_due(NOW, worker.ledger)
    worker.spool.submit("noop")
    assert worker.feed.anything_due(NOW, worker.ledger)
    assert worker.listings == []


def test_lost_events_make_the_burst_worker_list_pending(worker):
    worker.spool.submit("noop")
    worker.feed.watcher.read()  # the event is consumed and lost, as in a queue overflow
    worker.feed.watcher.overflowed = True
    assert worker.feed.anything_due(NOW, worker.ledger)
    assert len(worker.listings) == 1 and not worker.feed.watcher.overflowed


def test_a_name_taken_by_another_worker_leaves_the_view(worker):
    worker.spool.submit("noop")
    worker.feed.take_events()
    [name] = worker.view.names
    (worker.store.layout.pending / name).unlink()  # claimed and moved on elsewhere
    assert not worker.feed.anything_due(NOW, worker.ledger)
    assert worker.view.names == []


def test_a_queue_overflow_is_noted(tmp_path):
    import os
    import struct

    from spool.inotify import IN_Q_OVERFLOW, Watcher

    watcher = Watcher()
    os.close(watcher.fd)
    read, write = os.pipe()
    os.set_blocking(read, False)
    watcher.fd = read
    os.write(write, struct.pack("iIII", -1, IN_Q_OVERFLOW, 0, 0))
    assert watcher.read() == [] and watcher.overflowed
    os.close(write)
    watcher.close()


def test_without_inotify_the_next_listing_is_due_a_poll_after_the_last(tmp_path):
    # a worker woken in between (a job's end, a heartbeat) must not push the next listing a
    # whole poll further: on NFS a job submitted on another host would wait up to two polls
    import time as clock
    from datetime import datetime

    from spool import Spool
    from spool.feed import PendingFeed
    from spool.timeutil import UTC

    spool = Spool(make_spool(tmp_path / "spool"), host="h")
    feed = PendingFeed(spool.store)  # never watched: as on a network filesystem
    poll = spool.config.defaults.poll
    feed.view.refresh(clock.monotonic() - 0.75 * poll)
    wait = min(feed.waits(datetime.now(UTC), False, False))
    assert wait <= 0.25 * poll + 0.01, wait
    feed.view.refresh(clock.monotonic() - 2 * poll)  # overdue: at once
    assert min(feed.waits(datetime.now(UTC), False, False)) <= 0.01


def test_a_listing_that_fails_is_tried_again_a_poll_later_not_at_once(tmp_path):
    import errno
    import time as clock
    from datetime import datetime

    from spool import Spool
    from spool.feed import PendingFeed
    from spool.timeutil import UTC

    spool = Spool(make_spool(tmp_path / "spool"), host="h")
    feed = PendingFeed(spool.store)  # without inotify
    poll = spool.config.defaults.poll

    def failing(mono: float) -> None:
        feed.view.refreshed_at = float("-inf")  # as a listing that fails part way leaves it
        raise OSError(errno.EIO, "Input/output error", str(spool.store.layout.pending))

    feed.view.refresh = failing
    with pytest.raises(OSError):
        feed.refresh_if_stale(clock.monotonic())
    assert min(feed.waits(datetime.now(UTC), False, False)) >= 0.9 * poll  # no busy loop
