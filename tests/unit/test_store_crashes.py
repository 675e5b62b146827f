"""Every transition is write-then-rename: a crash (an exception) between any two steps loses
no job, leaves no half-written file in a state directory, and recovery completes or rolls back."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pytest

from crashkit import Crash, crash_on_rename
from conftest import make_spool, state_files
from spool import Spool
from spool import recovery
from spool.claim import hold_processing_file
from spool.drops import adopt_drop
from spool.operations import cancel, retry
from spool.recovery import recover_holds, recover_orphan, settle
from spool.timeutil import UTC

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


@pytest.fixture
def sp(tmp_path):
    return Spool(make_spool(tmp_path / "spool"), host="h1", clock=lambda: NOW)


def recover(sp: Spool, monkeypatch) -> None:
    """What a restarted worker and the reaper do: orphans, then holds of dead processes."""
    monkeypatch.undo()
    monkeypatch.setattr(recovery, "pid_alive", lambda pid: False)
    for path in list(sp.store.processing_paths()):
        recover_orphan(sp.store, path, NOW)
    recover_holds(sp.store, NOW)


def assert_once(sp: Spool, job_id: str, allowed: set[str]) -> str:
    states = state_files(sp.path)
    where = [state for state, ids in states.items() for i in ids if i == job_id]
    assert len(where) == 1, f"{job_id} found in {where}: {states}"
    assert where[0] in allowed
    for state in ("done", "dead"):
        for name in os.listdir(sp.path / state):
            if name.endswith(".json"):
                json.loads((sp.path / state / name).read_text())  # never half-written
    return where[0]


def claim(sp: Spool, job_id: str) -> Path:
    name = next(n for n in sp.store.pending_names() if job_id in n)
    host_dir = sp.store.layout.host_processing("h1")
    host_dir.mkdir(exist_ok=True)
    return sp.store.claim(name, job_id, 1, host_dir, NOW)


def test_submit_crash_before_rename_leaves_nothing(sp, monkeypatch):
    crash_on_rename(monkeypatch, 1)
    with pytest.raises(Crash):
        sp.submit("noop")
    monkeypatch.undo()
    assert state_files(sp.path)["pending"] == []


@pytest.mark.parametrize("step", [1, 2])
@pytest.mark.parametrize("outcome,expect", [("completed", "done"), ("failed", "pending"),
                                            ("timeout", "pending")])
def test_finish_or_requeue_crash_at_every_step(sp, monkeypatch, step, outcome, expect):
    job_id = sp.submit("noop")
    path = claim(sp, job_id)
    held = hold_processing_file(sp.store, path, 1)
    crash_on_rename(monkeypatch, step)
    with pytest.raises(Crash):
        settle(sp.store, path, held.body, 1, outcome, NOW, inode=held.inode)
    os.close(held.fd)
    recover(sp, monkeypatch)
    assert assert_once(sp, job_id, {expect}) == expect
    if expect == "done":
        assert json.loads((sp.path / "done" / f"{job_id}.json").read_text())["outcome"] == outcome


@pytest.mark.parametrize("step", [1, 2])
def test_cancel_pending_crash(sp, monkeypatch, step):
    job_id = sp.submit("noop")
    crash_on_rename(monkeypatch, step)
    with pytest.raises(Crash):
        cancel(sp.store, job_id, NOW)
    recover(sp, monkeypatch)
    state = assert_once(sp, job_id, {"pending", "done"})
    if state == "done":
        assert json.loads((sp.path / "done" / f"{job_id}.json").read_text())["outcome"] == "cancelled"


@pytest.mark.parametrize("step", [1, 2])
def test_retry_crash(sp, monkeypatch, step):
    job_id = sp.submit("noop", max_attempts=1)
    path = claim(sp, job_id)
    held = hold_processing_file(sp.store, path, 1)
    settle(sp.store, path, held.body, 1, "failed", NOW, inode=held.inode)
    os.close(held.fd)
    crash_on_rename(monkeypatch, step)
    with pytest.raises(Crash):
        retry(sp.store, job_id, NOW)
    recover(sp, monkeypatch)
    state = assert_once(sp, job_id, {"pending", "dead"})
    if state == "pending":
        assert sp.get(job_id).attempts == 0


@pytest.mark.parametrize("step", [1, 2])
@pytest.mark.parametrize("content", ['{"job": "noop"}', '{"job": "nosuch"}'])
def test_adoption_crash(sp, monkeypatch, step, content):
    (sp.path / "pending" / "dropped.json").write_text(content)
    crash_on_rename(monkeypatch, step)
    with pytest.raises(Crash):
        adopt_drop(sp.store, "dropped.json", NOW)
    recover(sp, monkeypatch)
    # a crash may hand the drop back to pending/ to be adopted again: finish that
    adopt_drop(sp.store, "dropped.json", NOW)
    state = assert_once(sp, "dropped", {"pending", "dead"})
    assert state == ("pending" if "noop" in content else "dead")
    if state == "dead":
        assert (sp.path / "dead" / "dropped.orig").read_text() == content
