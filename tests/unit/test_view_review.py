"""Adversarial review of a worker's view of pending/ (spool.packednames, spool.claim.PendingView,
spool.feed.PendingFeed): each test is an input under which a due job was left unclaimed, or
under which the worker stopped doing what it must."""

from __future__ import annotations

import errno
import time
from datetime import datetime

from conftest import make_spool

from spool import Spool
from spool.layout import pending_name
from spool.packednames import SortedNames
from spool.timeutil import UTC, due_stamp
from spool.worker import Worker

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
CONFIG = """
[defaults]
heartbeat = "1s"
poll = "0.2s"
durable = false

[jobs.sleep]
command = ["sleep", "{seconds}"]
"""


def test_an_id_given_twice_stays_pending_while_one_of_its_names_is():
    """A stale view can hold two names of one id (a job renamed with a new DUE: inotify reports
    the new name, the old one stays until the walk finds it gone). Taking out the old name
    must not make the id look gone: a dependent would then be judged on a missing dependency."""
    old, new = pending_name(5, NOW, "build"), pending_name(0, NOW, "build")
    view = SortedNames([old, new])
    view.discard(old)
    assert "build" in view.ids


def failing_listing(monkeypatch, failures: list[int]):
    """Make pending/'s listings fail (EIO part way) on the calls numbered in `failures`."""
    import spool.claim

    real, calls = spool.claim.iter_names, [0]

    def listing(directory):
        calls[0] += 1
        if calls[0] in failures:
            yield from list(real(directory))[:1]
            raise OSError(errno.EIO, "Input/output error", str(directory))
        yield from real(directory)

    monkeypatch.setattr(spool.claim, "iter_names", listing)
    return calls


def test_a_listing_that_fails_does_not_stop_heartbeats(tmp_path, monkeypatch):
    """pending/ unreadable (EACCES, EIO) for longer than a heartbeat: the worker running a job
    must go on beating, or another host's reaper takes its running job and runs it twice."""
    sp = Spool(make_spool(tmp_path / "spool", CONFIG), host="h1")
    job_id = sp.submit("sleep", {"seconds": 60})
    worker = Worker(sp, capacity=1)
    worker.start(datetime.now(UTC))
    try:
        worker.step(datetime.now(UTC))
        assert job_id in worker.running
        failing_listing(monkeypatch, list(range(1, 100)))
        worker.beat_at = time.monotonic() - 60  # a heartbeat is due
        worker.view.refreshed_at = float("-inf")  # and a listing
        try:
            worker.step(datetime.now(UTC))
        except OSError:
            pass  # the loop would log it and carry on: the heartbeat is what matters
        assert time.monotonic() - worker.beat_at < 30, "no heartbeat while pending/ fails"
    finally:
        worker.shutdown(datetime.now(UTC))


def test_a_burst_worker_does_not_take_a_failed_listing_for_an_empty_queue(tmp_path,
                                                                           monkeypatch):
    """The listing after an adoption fails part way: the view is empty, but three jobs are
    still pending. The burst worker must list again before it decides nothing is due."""
    root = make_spool(tmp_path / "spool", CONFIG)
    sp = Spool(root, host="h1")
    ids = [sp.submit("sleep", {"seconds": 0}) for _ in range(3)]
    (root / "pending" / "dropped.json").write_text('{"job": "sleep", "args": {"seconds": 0}}')
    calls = failing_listing(monkeypatch, [2])  # 1: the first step's; 2: after the adoption
    assert Worker(sp, capacity=1, burst=True).run() == 0
    assert calls[0] > 2
    assert sorted(p.name for p in (root / "done").iterdir()) == sorted(
        [f"{job_id}.json" for job_id in ids] + ["dropped.json"])


def test_the_name_after_a_caller_given_id_is_found_by_bisection(monkeypatch):
    """10,000 jobs submitted for one time (`--at`) and a few of caller-given ids due then too:
    the walk past each caller-given id read every record of that time (a claim pass over
    1,000 such ids among 1,000,000 took a quarter of an hour). It bisects."""
    from spool import packednames

    stamp = due_stamp(NOW)[:-1]
    names = [pending_name(5, NOW, f"{stamp}-{i:012x}") for i in range(10_000)]
    users = [pending_name(5, NOW, f"nightly-{i}") for i in range(3)]
    view = SortedNames(names + users)
    unpacked = []
    real = packednames.unpack
    monkeypatch.setattr(packednames, "unpack", lambda record: unpacked.append(1) or real(record))
    assert view.following(users[0]) == users[1]
    assert view.following(pending_name(5, NOW, "0-early")) == names[0]
    assert view.following(pending_name(5, NOW, f"{stamp}-{5:012x}x")) == names[6]
    assert view.following(users[2]) is None
    assert len(unpacked) < 200


def test_due_work_behind_a_future_job_of_higher_priority_is_looked_at_again_soon(tmp_path):
    """A job of priority 0 due next year sorts first; a job of priority 5 is due now, but the
    host's slots are all held by another worker. The worker must look again soon (as it does
    when the first name is the due one), not sleep until next year's job or a heartbeat."""
    from types import SimpleNamespace

    from spool.feed import PendingFeed

    sp = Spool(make_spool(tmp_path / "spool", CONFIG), host="h1")
    feed = PendingFeed(sp.store)
    feed.watcher = SimpleNamespace(overflowed=False)  # type: ignore[assignment]  # inotify works
    now = datetime.now(UTC)
    feed.view.names = SortedNames([pending_name(0, now.replace(year=now.year + 1), "yearly"),
                                   pending_name(5, now, "now")])
    assert min(feed.waits(now, paused_seen=False, stopping=False)) <= 0.2
