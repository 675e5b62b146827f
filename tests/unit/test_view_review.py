"""Adversarial review of a worker's view of pending/ (spool.packednames, spool.claim.PendingView,
spool.feed.PendingFeed): each test is an input under which a due job was left unclaimed, or
under which the worker stopped doing what it must."""

from __future__ import annotations

import errno
import itertools
import os
import time
from datetime import datetime, timedelta

import pytest
from conftest import make_spool
from hypothesis import given, settings
from hypothesis import strategies as st

from spool import Spool
from spool.claim import PendingView
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


edge_times = st.sampled_from([
    datetime(1, 1, 1, tzinfo=UTC), datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), NOW, NOW.replace(microsecond=999999),
    NOW - timedelta(microseconds=1), NOW + timedelta(microseconds=1), NOW + timedelta(days=1)])
edge_ids = st.one_of(
    st.builds(lambda when, token: f"{due_stamp(when)[:-1]}-{token:012x}", edge_times,
              st.sampled_from([0, 1, 2**48 - 1])),
    st.sampled_from([f"{due_stamp(NOW)[:-1]}-ABCDEF012345", f"{due_stamp(NOW)[:-1]}-abcdef01234",
                     f"{due_stamp(NOW)[:-1]}-abcdef0123456", f"{due_stamp(NOW)[:-1]}-abcdef01234g",
                     f"{due_stamp(NOW)[:-1]}_abcdef012345", "0", "zzz", "A", "nightly.1",
                     f"{due_stamp(NOW)[:-1]}-abcdef012345.x", "99999999T999999.999999-ffffffffffff"]))
edge_names = st.lists(st.builds(pending_name, st.integers(0, 9), edge_times, edge_ids),
                      max_size=40)


@settings(max_examples=300, deadline=None)
@given(edge_names, st.lists(st.booleans(), max_size=40), edge_times)
def test_the_walk_answers_as_a_sorted_list_at_the_edges(names, removals, now):
    """Due times at the ends of the calendar, ids that almost pack, and names taken out during
    the walk (claims): the walk yields exactly the due names, in name order, each once."""
    from spool import packednames

    sizes = packednames.FIRST_CHUNK, packednames.CHUNK, packednames.BLOCK
    packednames.FIRST_CHUNK, packednames.CHUNK, packednames.BLOCK = 5, 3, 2
    try:
        view = PendingView(None)  # type: ignore[arg-type]
        view.names = SortedNames(names)
        expected = sorted(set(names))
        stamp = due_stamp(now)
        walked = []
        for step, name in enumerate(view.due(now)):
            walked.append(name)
            if step < len(removals) and removals[step]:
                view.remove(name)
        future = [name[2:25] for name in expected if name[2:25] > stamp]
        assert view.next_due(now) == (min(future) if future else None)
    finally:
        packednames.FIRST_CHUNK, packednames.CHUNK, packednames.BLOCK = sizes
    assert walked == [name for name in expected if name[2:25] <= stamp]


def test_a_view_whose_names_all_wait_for_a_limit_token_is_not_listed_every_second(tmp_path,
                                                                                 monkeypatch):
    """Every pending job waits for a full pool: its names are parked, out of the walk. The
    view has not run dry: with inotify working, it is listed every `refresh`, not every
    second (each listing of 1,000,000 parked names took seconds, then parked them again)."""
    import os
    from types import SimpleNamespace

    from limitkit import LIMIT_TYPES

    from spool.claim import claim_due
    from spool.feed import PendingFeed
    from spool.ledger import Ledger

    sp = Spool(make_spool(tmp_path / "spool", CONFIG + LIMIT_TYPES), host="h1")
    sp.store.layout.host_processing("h1").mkdir()
    for _ in range(5):
        sp.submit("limited")
    feed = PendingFeed(sp.store)
    feed.watcher = SimpleNamespace(overflowed=False)  # type: ignore[assignment]
    feed.refresh_if_stale(100.0)
    claim_due(sp.store, feed.view, Ledger("h1", 8), datetime.now(UTC), os.getpid(), 100)
    assert not feed.view.names and len(feed.view.parked.names) == 3
    calls = failing_listing(monkeypatch, [])
    feed.refresh_if_stale(105.0)  # 5 s later: past `poll`, well before `refresh`
    assert calls[0] == 0


def test_a_parked_job_is_still_pending_to_its_dependents():
    """A job waiting for a limit token is parked, out of the walk, but still pending: a job
    that runs after it must find it in the view's ids, not in a listing of pending/ taken
    every claim pass (1,000,000 names each second while the pool stays full)."""
    from spool.limitspec import PoolRef

    view = PendingView(None)  # type: ignore[arg-type]
    first, dependent = pending_name(5, NOW, "first"), pending_name(5, NOW, "second")
    view.names = SortedNames([first, dependent])
    view.park(first, PoolRef("pair"))
    assert "first" in view.ids and "second" in view.ids and "third" not in view.ids


op_names = st.builds(pending_name, st.integers(0, 9), edge_times, edge_ids) | st.sampled_from(
    ["report.json", ".hidden.json", "5-20261231T235960.000000Z-leap.json", "no-suffix"])
operations = st.lists(st.tuples(st.sampled_from(["create", "notify", "delete", "refresh", "park",
                                                 "unpark", "walk"]), op_names, st.integers(0, 5)),
                      max_size=40)


@settings(max_examples=150, deadline=None)
@given(operations)
def test_the_view_kept_by_events_listings_and_parking_finds_every_due_job(ops):
    """Files come and go (with or without an inotify event), names are parked and returned,
    walks take names out as claims do: after a listing and an unparking, the walk yields every
    due canonical file of pending/, in name order, and nothing else."""
    import tempfile
    from pathlib import Path
    from types import SimpleNamespace

    from spool import packednames
    from spool.layout import is_temporary_name, parse_pending_name
    from spool.limitspec import PoolRef
    from spool.parking import unpark_all

    sizes = packednames.FIRST_CHUNK, packednames.CHUNK, packednames.BLOCK
    packednames.FIRST_CHUNK, packednames.CHUNK, packednames.BLOCK = 5, 3, 2
    try:
        with tempfile.TemporaryDirectory() as directory:
            pending = Path(directory)
            view = PendingView(SimpleNamespace(layout=SimpleNamespace(pending=pending)))  # type: ignore[arg-type]
            now = NOW
            for op, name, count in ops:
                if op in ("create", "notify"):
                    (pending / name).touch()
                    if op == "notify":
                        view.add(name)
                elif op == "delete":
                    (pending / name).unlink(missing_ok=True)
                elif op == "refresh":
                    view.refresh(0.0)
                elif op == "park" and view.names:
                    view.park(view.names.first(), PoolRef("pair"))  # type: ignore[arg-type]
                elif op == "unpark":
                    unpark_all(view)
                elif op == "walk":
                    for step, walked in enumerate(view.due(now)):
                        assert walked[2:25] <= due_stamp(now)
                        if step < count:
                            view.remove(walked)
            view.refresh(0.0)
            unpark_all(view)
            files = os.listdir(pending)
            canonical = sorted(f for f in files if parse_pending_name(f))
            assert list(view.due(now)) == [f for f in canonical if f[2:25] <= due_stamp(now)]
            assert sorted(view.drops) == sorted(f for f in files if not parse_pending_name(f)
                                                and not is_temporary_name(f))
    finally:
        packednames.FIRST_CHUNK, packednames.CHUNK, packednames.BLOCK = sizes


def test_an_adoption_that_fails_is_retried_after_a_poll_not_at_once(tmp_path, monkeypatch):
    """A drop cannot be adopted (a full disk: ENOSPC from the adopted file's write): the step
    goes on to its heartbeat, and the next try waits a poll interval instead of spinning
    (drops left to adopt would otherwise ask for a step at once, for ever)."""
    import spool.feed

    def full_disk(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    root = make_spool(tmp_path / "spool", CONFIG)
    sp = Spool(root, host="h1")
    (root / "pending" / "dropped.json").write_text('{"job": "sleep", "args": {"seconds": 0}}')
    worker = Worker(sp, capacity=1)
    worker.start(datetime.now(UTC))
    try:
        worker.step(datetime.now(UTC))  # lists pending/: the drop is seen
        monkeypatch.setattr(spool.feed, "adopt_pass", full_disk)
        (root / "pending" / "dropped2.json").write_text('{"job": "sleep"}')
        worker.feed.view.add("dropped2.json")  # as inotify reports it
        worker.beat_at = time.monotonic() - 60
        worker.step(datetime.now(UTC))
        assert time.monotonic() - worker.beat_at < 30
        assert worker.next_wake(datetime.now(UTC)) >= 0.1
    finally:
        worker.shutdown(datetime.now(UTC))


@pytest.mark.xfail(strict=True, reason="heartbeats go on between the pieces of a listing "
                   "(every LISTING_TICK names), not during one system call that blocks for "
                   "seconds: that needs heartbeats on their own (DESIGN §4, Heartbeats)")
def test_a_slow_listing_does_not_hold_back_heartbeats(tmp_path, monkeypatch):
    """A listing of 1,000,000 names on a slow network filesystem takes longer than a heartbeat:
    the worker's heartbeats must go on meanwhile (files never age past `heartbeat` plus a small
    margin), or another host's reaper judges the running job's worker gone."""
    import spool.claim

    sp = Spool(make_spool(tmp_path / "spool", CONFIG), host="h1")
    job_id = sp.submit("sleep", {"seconds": 60})
    worker = Worker(sp, capacity=1)
    worker.start(datetime.now(UTC))
    beats: list[float] = []
    real_beat = worker.beat
    monkeypatch.setattr(worker, "beat",
                        lambda now, mono: beats.append(mono) or real_beat(now, mono))
    real_listing = spool.claim.iter_names

    def slow_listing(directory):  # 3 heartbeats long
        yield from real_listing(directory)
        time.sleep(3.0)

    try:
        worker.step(datetime.now(UTC))
        assert job_id in worker.running
        monkeypatch.setattr(spool.claim, "iter_names", slow_listing)
        worker.view.refreshed_at = float("-inf")
        start = time.monotonic()
        worker.beat_at = start
        while time.monotonic() - start < 4.0:
            worker.step(datetime.now(UTC))
            time.sleep(0.05)
        assert max(b - a for a, b in itertools.pairwise([start, *beats])) < 2.0
    finally:
        worker.shutdown(datetime.now(UTC))


def test_the_running_jobs_heartbeats_go_on_during_a_long_listing(tmp_path, monkeypatch):
    """A listing slow name by name (a million names, NFS): the running attempt's processing
    file is touched every heartbeat meanwhile, so no reaper mistakes its worker for gone."""
    import spool.claim

    sp = Spool(make_spool(tmp_path / "spool", CONFIG), host="h1")
    job_id = sp.submit("sleep", {"seconds": 60})
    worker = Worker(sp, capacity=1)
    worker.start(datetime.now(UTC))
    real_listing = spool.claim.iter_names
    ages: list[float] = []  # of the processing file, while the listing runs

    def slow_listing(directory):  # 3 heartbeats long, in small pieces
        yield from real_listing(directory)
        for n in range(60):
            time.sleep(0.05)
            ages.append(time.time() - os.stat(running).st_mtime)
            yield f".slow{n}"  # a name every scan skips

    try:
        worker.step(datetime.now(UTC))
        assert job_id in worker.running
        running = worker.running[job_id].claimed.path
        monkeypatch.setattr(spool.claim, "iter_names", slow_listing)
        monkeypatch.setattr(spool.claim, "LISTING_TICK", 2)
        start = time.time()
        worker.feed.view.refresh(time.monotonic())
        assert time.time() - start >= 3.0
        assert max(ages) < 2.0, f"the processing file aged {max(ages):.2f}s during the listing"
    finally:
        worker.shutdown(datetime.now(UTC))
