"""Adversarial review findings in the job-moving code: each reproduced a flaw before its fix. Crashes are simulated by an exception at a chosen syscall, as in test_store_crashes."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from crashkit import Crash, crash_on_rename
from conftest import make_spool, state_files
from spool import Spool, recovery
from spool.drops import adopt_drop, adopt_drops
from spool.operations import retry
from spool.recovery import recover_holds
from spool.timeutil import UTC

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


@pytest.fixture
def sp(tmp_path):
    return Spool(make_spool(tmp_path / "spool"), host="h1", clock=lambda: NOW)


def drop(sp: Spool, name: str, content: str, age: float = 60.0) -> Path:
    path = sp.path / "pending" / name
    path.write_text(content)
    old = NOW.timestamp() - age
    os.utime(path, (old, old))
    return path


def every_file(root: Path) -> dict[str, bytes]:
    out = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            if path.is_file() and not path.is_symlink():
                out[str(path.relative_to(root))] = path.read_bytes()
    return out


# -- finding 1 ---------------------------------------------------------------------------


def test_retry_of_invalid_drop_killed_between_renames_is_recovered(sp, monkeypatch):
    drop(sp, "later.json", '{"job": "notyet"}')
    [job_id] = adopt_drops(sp.store, NOW)
    assert (sp.path / "dead" / f"{job_id}.orig").exists()
    crash_on_rename(monkeypatch, 2)  # 1: record -> tmp/retry hold, 2: .orig -> pending/
    with pytest.raises(Crash):
        retry(sp.store, job_id, NOW)
    monkeypatch.undo()
    monkeypatch.setattr(recovery, "pid_alive", lambda pid: False)  # the CLI process is gone
    recover_holds(sp.store, NOW)  # what every worker start and reaper pass does
    # the original is back in pending/ (or the rejection stands again): nothing lost
    names = os.listdir(sp.path / "pending") + os.listdir(sp.path / "dead")
    assert f"{job_id}.json" in names


# -- finding 3 ---------------------------------------------------------------------------


def test_duplicate_id_drop_whose_adopter_dies_is_not_deleted(sp, monkeypatch):
    sp.submit("noop", id="taken")
    content = '{"job": "echo", "id": "taken", "args": {"message": "a different job"}}'
    drop(sp, "x.json", content)
    crash_on_rename(monkeypatch, 2)  # 1: drop -> tmp/adopt hold; 2: hold -> dead/ID.orig
    with pytest.raises(Crash):
        adopt_drop(sp.store, "x.json", NOW)
    monkeypatch.undo()
    monkeypatch.setattr(recovery, "pid_alive", lambda pid: False)
    recover_holds(sp.store, NOW)
    adopt_drops(sp.store, NOW)  # anything handed back to pending/ is adopted again
    # the dropped bytes must survive somewhere (dead/ID.orig beside its rejection, §7/§11)
    assert content.encode() in every_file(sp.path).values()


# -- finding 4 ---------------------------------------------------------------------------


def test_a_stalled_adoption_and_another_hosts_recovery_make_one_copy(tmp_path, monkeypatch):
    root = make_spool(tmp_path / "spool")
    sp_a = Spool(root, host="a", clock=lambda: NOW)
    sp_b = Spool(root, host="b", clock=lambda: NOW)
    drop(sp_a, "my job.json", '{"job": "noop"}')  # no usable id: a derived one
    real = sp_a.store.adopt

    def stalled(*args, **kwargs):
        # host a hangs right after taking the drop (hard NFS mount, partition) for two
        # hours; host b's reaper and worker go on
        later = datetime.now(UTC) + timedelta(hours=2)
        recover_holds(sp_b.store, later)
        adopt_drops(sp_b.store, later)
        return real(*args, **kwargs)

    monkeypatch.setattr(sp_a.store, "adopt", stalled)
    assert adopt_drops(sp_a.store, NOW) == []  # a notices it lost the drop, and stops
    copies = [n for n in os.listdir(root / "pending") if not n.startswith(".")]
    assert len(copies) == 1 and state_files(root)["pending"], copies


# -- finding 2 ---------------------------------------------------------------------------

WIDE = """
[defaults]
heartbeat = "1s"
lease = "3s"
durable = false

[jobs.wide]
command = ["sleep", "30"]
slots = 2
"""


def plant_canonical(root: Path, job_id: str, body: dict) -> None:
    """A hand-made canonical pending file (validated at its first claim, attempts._validate)."""
    from spool.layout import pending_name

    (root / "pending" / pending_name(5, NOW - timedelta(days=1), job_id)).write_text(
        json.dumps({"id": job_id, **body}))


def test_slots_of_a_hand_made_canonical_file_come_from_its_job_type(tmp_path):
    from spool.worker import Worker

    root = make_spool(tmp_path / "spool", WIDE)
    for job_id in ("w1", "w2"):
        plant_canonical(root, job_id, {"job": "wide"})
    worker = Worker(Spool(root, host="h1"), capacity=2)
    now = datetime.now(UTC)
    worker.start(now)
    try:
        worker.step(now)
        running_slots = sum(run.body["slots"] for run in worker.running.values())
        assert running_slots <= 2, f"{running_slots} slots running on a 2-slot host"
    finally:
        worker.shutdown(datetime.now(UTC))


def test_a_job_type_bigger_than_the_host_is_never_run_from_a_hand_made_file(tmp_path):
    from conftest import CONFIG
    from spool.worker import Worker

    root = make_spool(tmp_path / "spool", CONFIG)
    plant_canonical(root, "huge", {"job": "big"})
    worker = Worker(Spool(root, host="h1"), capacity=4)
    now = datetime.now(UTC)
    worker.start(now)
    try:
        worker.step(now)
        assert not worker.running and not os.listdir(root / "done"), "a 64-slot job ran"
    finally:
        worker.shutdown(datetime.now(UTC))


# -- finding 6 ---------------------------------------------------------------------------


def test_a_completed_job_whose_settle_failed_once_is_not_requeued_as_lost(sp, monkeypatch):
    """Review finding 6, fixed meanwhile by 12551b0 (orphan recovery skips what a live worker
    of the host records as running): kept as a regression test."""
    import errno
    import fcntl

    from spool import settling
    from spool.claim import PendingView, claim_due
    from spool.ledger import HostLedger
    from spool.reaper import Reaper
    from spool.settling import Unsettled, settle_once

    job_id = sp.submit("noop")
    sp.store.layout.host_processing("h1").mkdir()
    book = HostLedger(sp.store.layout, "h1", False)
    view = PendingView(sp.store)
    view.refresh(0)
    with book.locked(4) as ledger:  # what Worker.start and claim_and_start do
        ledger.workers[str(os.getpid())] = {"boot_id": book.boot, "started_at": "x"}
        [held] = claim_due(sp.store, view, ledger, NOW, os.getpid(), 4)
    real_stage, real_relock = sp.store._stage, settling.relock
    full = {"disk": True}

    def stage(body, tag="stage", subject=None):
        if full["disk"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_stage(body, tag, subject)

    def contended_relock(item):
        # the host's reaper (recover_orphans -> try_lock_orphan) holds the flock right now
        fd = os.open(item.path, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            return real_relock(item)
        finally:
            os.close(fd)

    monkeypatch.setattr(sp.store, "_stage", stage)
    monkeypatch.setattr(settling, "relock", contended_relock)
    entry = {"attempt": 1, "host": "h1", "worker": os.getpid(),
             "started_at": "2026-11-22T12:00:00Z",
             "ended_at": "2026-11-22T12:00:01Z"}
    pending = Unsettled(held, held.body, "completed",
                        {"error": None, "exit_code": 0, "result": None, "entry": entry,
                         "job": None})
    assert not settle_once(sp.store, os.getpid(), pending, NOW)  # disk full: kept, retried
    full["disk"] = False  # space comes back; the reaper's pass happens to come first
    Reaper(sp).step(NOW)
    settle_once(sp.store, os.getpid(), pending, NOW)
    done = sp.path / "done" / f"{job_id}.json"
    assert done.exists() and json.loads(done.read_text())["outcome"] == "completed", \
        state_files(sp.path)


# -- finding 8 ---------------------------------------------------------------------------


def test_handing_a_drop_back_never_replaces_another_drop(sp, monkeypatch):
    first = '{"job": "echo", "args": {"message": "first"}}'
    second = '{"job": "echo", "args": {"message": "second"}}'
    drop(sp, "job1.json", first)
    crash_on_rename(monkeypatch, 2)  # 1: drop -> tmp/adopt hold; 2: staged -> pending/
    with pytest.raises(Crash):
        adopt_drop(sp.store, "job1.json", NOW)
    monkeypatch.undo()
    drop(sp, "job1.json", second)  # the drop vanished: its script drops it again
    monkeypatch.setattr(recovery, "pid_alive", lambda pid: False)
    recover_holds(sp.store, NOW)
    contents = every_file(sp.path).values()
    assert first.encode() in contents and second.encode() in contents


# -- finding 9 ---------------------------------------------------------------------------

NAPS = """
[defaults]
heartbeat = "1s"
lease = "3s"
durable = false

[jobs.nap]
command = ["sleep", "30"]
"""


def test_the_ledger_a_group_member_can_edit_does_not_raise_the_capacity(tmp_path):
    from spool.worker import Worker

    root = make_spool(tmp_path / "spool", NAPS)
    os.chmod(root, 0o2775)  # `init --group`: setgid root, group-writable files
    sp = Spool(root, host="h1")
    for _ in range(4):
        sp.submit("nap")
    worker = Worker(sp, capacity=1)
    worker.start(datetime.now(UTC))
    try:
        ledger_path = root / "hosts" / "h1.json"  # group-writable, as every file (DESIGN §7)
        with open(ledger_path, "r+") as ledger:  # a group member writes into it in place
            data = json.load(ledger)
            data["capacity"] = 8
            ledger.seek(0)
            ledger.truncate()
            json.dump(data, ledger)
        for _ in range(4):
            worker.step(datetime.now(UTC))
        assert len(worker.running) <= 1, f"{len(worker.running)} jobs on a 1-slot host"
    finally:
        worker.shutdown(datetime.now(UTC))


def test_a_damaged_ledger_does_not_wedge_the_worker(tmp_path):
    from spool.worker import Worker

    root = make_spool(tmp_path / "spool", NAPS)
    sp = Spool(root, host="h1")
    job_id = sp.submit("nap")
    (root / "hosts" / "h1.json").write_text('{"capacity": 2, "workers": [], "running": []}')
    worker = Worker(sp, capacity=1)
    try:
        worker.start(datetime.now(UTC))
        worker.step(datetime.now(UTC))
        assert job_id in worker.running
    finally:
        worker.shutdown(datetime.now(UTC))
