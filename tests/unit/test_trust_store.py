"""The store and recovery keep their promises on a bad day: a killed or starved writer never
puts a partial body in a state directory, a stale copy never runs again, ids stay unique, a
hold survives whatever its host is called, and nothing planted in the spool is followed out."""

from __future__ import annotations

import errno
import json
import os
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from conftest import make_spool, state_files
from spool import Spool
from spool import recovery
from spool.claim import hold_processing_file
from spool.errors import Conflict
from spool.layout import parse_tmp_name
from spool.recovery import recover_holds, recover_orphan, settle
from spool.timeutil import UTC

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


def spool_at(tmp_path: Path, host: str = "h1") -> Spool:
    root = tmp_path / "spool"
    if not root.exists():
        make_spool(root)
    return Spool(root, host=host, clock=lambda: NOW)


def claim(sp: Spool, job_id: str, host: str | None = None) -> Path:
    name = next(n for n in sp.store.pending_names() if job_id in n)
    host_dir = sp.store.layout.host_processing(host or sp.host)
    host_dir.mkdir(exist_ok=True)
    path = sp.store.claim(name, job_id, 1, host_dir, NOW)
    assert path is not None
    return path


def every_job_file_parses(root: Path) -> None:
    for state in ("pending", "done", "dead"):
        for name in os.listdir(root / state):
            if name.endswith(".json"):
                assert json.loads((root / state / name).read_bytes()), f"{state}/{name}"


def test_a_full_disk_while_staging_an_outcome_leaves_no_partial_body(tmp_path, monkeypatch):
    sp = spool_at(tmp_path)
    job_id = sp.submit("noop")
    path = claim(sp, job_id)
    held = hold_processing_file(sp.store, path, 1)
    real_write = os.write

    def short_write(fd, data):  # the disk fills after a few bytes of the staged outcome
        if b'"outcome"' in bytes(data):
            real_write(fd, bytes(data)[:7])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", short_write)
    with pytest.raises(OSError):
        settle(sp.store, path, held.body, 1, "completed", NOW, inode=held.inode,
               lock_fd=held.fd)
    monkeypatch.undo()
    assert not [n for n in os.listdir(sp.path / "tmp") if "finish" in n]  # removed, not left
    monkeypatch.setattr(recovery, "pid_alive", lambda pid: False)
    recover_orphan(sp.store, path, NOW)
    recover_holds(sp.store, NOW + timedelta(hours=2))
    files = state_files(sp.path)
    assert files["pending"] == [job_id] and files["done"] == []
    every_job_file_parses(sp.path)


def test_a_partial_staged_outcome_of_a_killed_writer_is_never_renamed_over_the_body(tmp_path,
                                                                                    monkeypatch):
    sp = spool_at(tmp_path)
    job_id = sp.submit("noop")
    path = claim(sp, job_id)
    # what a worker SIGKILLed in the middle of writing its staged outcome leaves behind
    (sp.path / "tmp" / f"finish-done,h1,99999999,0badc0de,{job_id}.1").write_text('{"id": "')
    monkeypatch.setattr(recovery, "pid_alive", lambda pid: False)
    assert recover_orphan(sp.store, path, NOW) == "pending"  # lost, not "completed" from junk
    recover_holds(sp.store, NOW + timedelta(hours=2))
    every_job_file_parses(sp.path)
    assert state_files(sp.path)["pending"] == [job_id]


def test_the_flock_is_closed_before_the_fill_renames_over_the_file(tmp_path, monkeypatch):
    sp = spool_at(tmp_path)
    job_id = sp.submit("noop")
    path = claim(sp, job_id)
    held = hold_processing_file(sp.store, path, 1)
    real_rename, seen = os.rename, []

    def rename(src, dst, *args, **kwargs):
        if str(dst).endswith(f"done/{job_id}.json") and "finish-done" in str(src):
            with pytest.raises(OSError):
                os.fstat(held.fd)  # closed: the fill never replaces a file we hold open
            seen.append(dst)
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    settle(sp.store, path, held.body, 1, "completed", NOW, inode=held.inode, lock_fd=held.fd)
    assert seen and json.loads((sp.path / "done" / f"{job_id}.json").read_text())["outcome"]


def test_a_stale_processing_copy_of_a_finished_job_is_set_aside_not_run_again(tmp_path):
    sp = spool_at(tmp_path)
    job_id = sp.submit("noop")
    path = claim(sp, job_id)
    held = hold_processing_file(sp.store, path, 1)
    backup = path.read_bytes()
    settle(sp.store, path, held.body, 1, "completed", NOW, inode=held.inode, lock_fd=held.fd)
    restored = sp.path / "processing" / "other" / path.name  # restored from a backup
    restored.parent.mkdir()
    restored.write_bytes(backup)
    assert recover_orphan(sp.store, restored, NOW) == "aside"
    files = state_files(sp.path)
    assert files == {"pending": [], "processing": [], "done": [job_id], "dead": []}
    assert json.loads((sp.path / "done" / f"{job_id}.json").read_text())["outcome"] == "completed"
    asides = [n for n in os.listdir(sp.path / "tmp") if n.startswith("aside,")]
    assert len(asides) == 1 and (sp.path / "tmp" / asides[0]).read_bytes() == backup


def test_a_finish_never_replaces_an_existing_terminal_record(tmp_path):
    sp = spool_at(tmp_path)
    job_id = sp.submit("noop")
    path = claim(sp, job_id)
    held = hold_processing_file(sp.store, path, 1)
    (sp.path / "done" / f"{job_id}.json").write_text(f'{{"id": "{job_id}", "outcome": "x"}}')
    assert settle(sp.store, path, held.body, 1, "completed", NOW, inode=held.inode,
                  lock_fd=held.fd) is None
    assert json.loads((sp.path / "done" / f"{job_id}.json").read_text())["outcome"] == "x"


@pytest.mark.parametrize("host", ["a.b", "node-1.example.org"])
def test_a_crash_hold_survives_a_host_name_with_dots(tmp_path, monkeypatch, host):
    sp = spool_at(tmp_path, host)
    job_id = sp.submit("noop")
    path = claim(sp, job_id)
    held = hold_processing_file(sp.store, path, 1)
    real_rename = os.rename

    def crash_after_hold(src, dst, *args, **kwargs):
        if "pending" in str(dst):
            raise KeyboardInterrupt("killed between the hold and the requeue")
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", crash_after_hold)
    with pytest.raises(KeyboardInterrupt):
        settle(sp.store, path, held.body, 1, "failed", NOW, inode=held.inode, lock_fd=held.fd)
    monkeypatch.undo()
    holds = [parse_tmp_name(n) for n in os.listdir(sp.path / "tmp")]
    assert [(h.verb, h.host) for h in holds if h] == [("requeue", host)]
    later = NOW + timedelta(days=2)  # long past any scratch age
    other = Spool(sp.path, host="reaper-host", clock=lambda: later)
    recover_holds(other.store, later)  # another host's view: the hold is old, not scratch
    monkeypatch.setattr(recovery, "pid_alive", lambda pid: False)
    recover_holds(sp.store, later)
    assert state_files(sp.path)["pending"] == [job_id]
    assert sp.get(job_id).attempts == 1


def test_an_old_style_hold_in_tmp_is_requeued_not_deleted(tmp_path):
    sp = spool_at(tmp_path)
    job_id = sp.submit("noop")
    path = claim(sp, job_id)
    hold = sp.path / "tmp" / f"{job_id}.1.requeue.a.b.4242"  # an earlier release's name
    os.rename(path, hold)
    old = (NOW - timedelta(hours=2)).timestamp()
    os.utime(hold, (old, old))
    recover_holds(sp.store, NOW)
    assert state_files(sp.path)["pending"] == [job_id]


def test_an_id_is_unique_across_every_state(tmp_path):
    sp = spool_at(tmp_path)
    generated = sp.submit("noop")
    with pytest.raises(Conflict):
        sp.submit("noop", id=generated)  # no marker guards a generated id: the states do
    path = claim(sp, generated)
    with pytest.raises(Conflict):
        sp.submit("noop", id=generated)
    held = hold_processing_file(sp.store, path, 1)
    settle(sp.store, path, held.body, 1, "completed", NOW, inode=held.inode, lock_fd=held.fd)
    with pytest.raises(Conflict):
        sp.submit("noop", id=generated)


def test_a_dropped_file_naming_an_existing_job_is_rejected_as_a_duplicate(tmp_path):
    from spool.drops import adopt_drops

    sp = spool_at(tmp_path)
    existing = sp.submit("noop", args={"n": 1})
    (sp.path / "pending" / "copy.json").write_text(json.dumps({"id": existing, "job": "noop"}))
    adopt_drops(sp.store, NOW)
    files = state_files(sp.path)
    assert files["pending"] == [existing] and len(files["dead"]) == 1
    record = json.loads((sp.path / "dead" / f"{files['dead'][0]}.json").read_text())
    assert record["outcome"] == "invalid" and "already exists" in record["error"]
    assert sp.get(existing).args == {"n": 1}


def test_cancel_refuses_a_planted_link_and_touches_nothing_outside(tmp_path):
    sp = spool_at(tmp_path)
    job_id = sp.submit("noop")
    claim(sp, job_id)
    outside = tmp_path / "victim"
    os.symlink(outside, sp.path / "cancel" / job_id)
    with pytest.raises(OSError):
        sp.store.request_cancel(job_id)
    assert not outside.exists()


def test_the_journal_never_writes_through_a_planted_link(tmp_path):
    sp = spool_at(tmp_path, "j")
    outside = tmp_path / "victim"
    outside.write_text("precious\n")
    (sp.path / "events" / "j").mkdir()
    os.symlink(outside, sp.path / "events" / "j" / f"{NOW:%Y-%m-%d}.jsonl")
    sp.submit("noop")
    assert outside.read_text() == "precious\n"


def test_the_journal_never_writes_into_a_linked_host_directory(tmp_path):
    sp = spool_at(tmp_path, "k")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, sp.path / "events" / "k")
    sp.submit("noop")
    assert os.listdir(elsewhere) == []


def test_files_are_group_writable_in_a_group_spool_whatever_the_umask(tmp_path):
    root = tmp_path / "spool"
    make_spool(root)
    from spool.layout import Layout

    Layout(root).create(group=os.getgid())
    sp = Spool(root, host="g", clock=lambda: NOW)
    old = os.umask(0o077)
    try:
        job_id = sp.submit("noop")
    finally:
        os.umask(old)
    pending = next((root / "pending").iterdir())
    assert pending.stat().st_mode & 0o060 == 0o060, oct(pending.stat().st_mode)
    journal = next((root / "events" / "g").iterdir())
    assert journal.stat().st_mode & 0o060 == 0o060
    assert (root / "processing").stat().st_mode & 0o1000  # sticky: members can't swap dirs
    assert job_id
