"""Claiming: the NFS rule for ENOENT after a rename that happened, slots, order, faults."""

from __future__ import annotations

import errno
import os
from datetime import datetime, timedelta

import pytest

from conftest import make_spool
from spool import Spool
from spool.claim import PendingView, claim_due
from spool.ledger import Ledger
from spool.timeutil import UTC

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


@pytest.fixture
def sp(tmp_path):
    sp = Spool(make_spool(tmp_path / "spool"), host="h1", clock=lambda: NOW)
    sp.store.layout.host_processing("h1").mkdir()
    return sp


def claim(sp, capacity=4):
    view = PendingView(sp.store)
    view.refresh(0)
    ledger = Ledger("h1", capacity)
    return claim_due(sp.store, view, ledger, NOW, os.getpid(), 100), ledger


def test_enoent_from_a_rename_that_happened_is_still_our_claim(sp, monkeypatch):
    job_id = sp.submit("noop")
    real = os.rename

    def retransmitted(src, dst):
        real(src, dst)
        if "/processing/" in str(dst):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(src))

    monkeypatch.setattr(os, "rename", retransmitted)
    claimed, ledger = claim(sp)
    assert [c.path.name for c in claimed] == [f"{job_id}.1.json"]
    assert job_id in ledger.running


def test_enoent_when_another_worker_won_is_skipped(sp, monkeypatch):
    sp.submit("noop")

    def lost(src, dst):
        os.unlink(src)  # another host renamed it away first
        raise FileNotFoundError(errno.ENOENT, "gone", str(src))

    monkeypatch.setattr(os, "rename", lost)
    claimed, ledger = claim(sp)
    assert claimed == [] and ledger.running == {}


def test_claims_in_priority_then_due_order_within_free_slots(sp):
    late = sp.submit("noop", priority=5)
    urgent = sp.submit("noop", priority=1)
    future = sp.submit("noop", priority=0, delay=3600)
    wide = sp.submit("noop", priority=2, slots=3)
    claimed, ledger = claim(sp, capacity=2)
    ids = [c.path.name.rsplit(".", 2)[0] for c in claimed]
    assert ids == [urgent, late]  # wide needs 3 slots, future is not due
    assert ledger.used == 2 and wide not in ids and future not in ids


def test_view_skips_future_jobs_of_each_priority(sp):
    sp.submit("noop", priority=3, delay=60)
    now_job = sp.submit("noop", priority=7)
    view = PendingView(sp.store)
    view.refresh(0)
    assert [n.split("-", 2)[2][:-5] for n in view.due(NOW)] == [now_job]
    assert next(iter(view.due(NOW + timedelta(seconds=61)))).startswith("3-")
