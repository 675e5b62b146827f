"""Review of flow control (limits, hold, pause): planted files and races that must not lose,
duplicate or over-admit a job, on real directories and, from the CLI, with real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from conftest import CONFIG, make_spool, spool_cli
from limitkit import LIMIT_TYPES

from spool import Spool
from spool.limits import TOKEN_BYTES, Limits, holders, pool_dir, usage
from spool.limitspec import PoolRef
from spool.timeutil import UTC

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


@pytest.fixture
def sp(tmp_path):
    sp = Spool(make_spool(tmp_path / "spool", CONFIG + LIMIT_TYPES), host="h1",
               clock=lambda: NOW)
    sp.store.layout.host_processing("h1").mkdir()
    return sp


def test_an_oversized_token_in_one_pool_does_not_stop_the_sweep_of_the_others(sp):
    planted = PoolRef("account", "acme")  # sorts before "pair"
    Limits(sp.store)._make_pool(planted)
    with open(pool_dir(sp.store, planted) / "0", "wb") as out:
        out.truncate(TOKEN_BYTES + 1)
    leaked, _ = Limits(sp.store).take([PoolRef("pair")], "gone", 1, NOW, set())
    assert Limits(sp.store).sweep(lambda: 1e12, 3.0) == [leaked[0].path]
    assert os.path.exists(pool_dir(sp.store, planted) / "0")  # never removed by spool
    used = {(p["name"], p["used"]) for p in usage(sp.store)}
    assert ("account", 1) in used and ("pair", 0) in used


def test_a_claim_that_stalls_past_the_lease_before_its_rename_does_not_run_over_max(
        sp, monkeypatch):
    """A claimer stopped (SIGSTOP, an NFS hang) between its tokens and its rename: the reaper
    frees its token as a dead claimer's and another attempt takes it; the claim must not then
    run a second holder of a `max = 1` pool."""
    from spool.claim import PendingView, claim_due
    from spool.ledger import Ledger

    stalled = sp.submit("per_account", args={"tag": "acme"}, id="a-stalled")
    other = sp.submit("per_account", args={"tag": "acme"}, id="b-other")
    acme = PoolRef("account", "acme")
    view = PendingView(sp.store)
    view.refresh(0)
    real_claim = sp.store.claim
    taken = []

    def claim_after_a_stall(*args, **kwargs):
        assert Limits(sp.store).sweep(lambda: 1e12, 3.0)  # the stalled claim's token went
        taken.extend(Limits(sp.store).take([acme], other, 1, NOW, set())[0])
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(sp.store, "claim", claim_after_a_stall)
    claimed = claim_due(sp.store, view, Ledger("h1", 8), NOW, os.getpid(), 1)
    assert claimed == []
    assert [h.job_id for h in holders([pool_dir(sp.store, acme)])] == [other]
    job, body = sp.store.get(stalled)
    assert job.state == "pending" and body["attempts"] == 0  # back, its attempt given back
    assert body["history"][-1]["outcome"] == "interrupted"


def test_give_back_never_removes_a_token_recreated_with_a_reused_inode(sp):
    from spool.limits import Token

    limits = Limits(sp.store)
    taken, _ = limits.take([PoolRef("pair")], "a", 1, NOW, set())
    os.unlink(taken[0].path)  # swept: its inode number is free again...
    other, _ = limits.take([PoolRef("pair")], "b", 1, NOW, set())  # ...and reused here
    assert other[0].path == taken[0].path
    limits.give_back([Token(taken[0].path, other[0].inode, "a", 1)])
    assert holders([pool_dir(sp.store, PoolRef("pair"))]).__next__().job_id == "b"
    assert limits.lost([Token(taken[0].path, other[0].inode, "a", 1)])


def test_a_job_with_many_long_limit_keys_runs_and_leaves_no_token(sp):
    """Its token would be larger than a reader accepts: it must stay readable (else the claim
    takes it for swept, and releases, which read it, never remove it)."""
    from spool.claim import PendingView, claim_due
    from spool.ledger import Ledger

    keys = [f"account:{n:03d}" + "x" * 1000 for n in range(70)]
    sp.submit("noop", limits=keys)
    view = PendingView(sp.store)
    view.refresh(0)
    [claimed] = claim_due(sp.store, view, Ledger("h1", 8), NOW, os.getpid(), 1)
    assert len(claimed.tokens) == 70
    assert Limits(sp.store).release_attempt(claimed.job_id, 1) == 70  # recovery's release
    assert [h for pool in sorted((sp.path / "limits" / "account").iterdir())
            for h in holders([pool])] == []


def test_an_unreadable_pool_parks_its_jobs_without_stopping_other_claims(sp, monkeypatch):
    """A pool directory a claimer cannot list (another user's, mode 000): its jobs wait, the
    error is logged, and every other job is still claimed."""
    import spool.limits as limits_module
    import spool.parking as parking_module
    from spool.claim import PendingView, claim_due
    from spool.ledger import Ledger

    def unreadable(directory):
        if "limits" in str(directory):
            raise PermissionError(13, "Permission denied", str(directory))
        return os.listdir(directory)

    sp.submit("limited", id="a-limited")
    view = PendingView(sp.store)
    view.refresh(0)
    Limits(sp.store).take([PoolRef("pair")], "x", 1, NOW, set())
    Limits(sp.store).take([PoolRef("pair")], "y", 1, NOW, set())
    assert claim_due(sp.store, view, Ledger("h1", 8), NOW, os.getpid(), 8) == []  # parked
    monkeypatch.setattr(parking_module, "list_names", unreadable)
    monkeypatch.setattr(limits_module, "list_names", unreadable)
    sp.submit("noop", id="b-noop")
    view.refresh(1)
    claimed = claim_due(sp.store, view, Ledger("h1", 8), NOW, os.getpid(), 8)
    assert [c.job_id for c in claimed] == ["b-noop"]


def test_an_unreadable_pool_does_not_stop_the_sweep_of_the_others(sp, monkeypatch):
    import spool.limits as limits_module

    planted = PoolRef("account", "acme")  # sorts before "pair"
    Limits(sp.store)._make_pool(planted)
    leaked, _ = Limits(sp.store).take([PoolRef("pair")], "gone", 1, NOW, set())
    listing = limits_module.list_names

    def unreadable(directory):
        if str(directory) == str(pool_dir(sp.store, planted)):
            raise PermissionError(13, "Permission denied", str(directory))
        return listing(directory)

    monkeypatch.setattr(limits_module, "list_names", unreadable)
    assert Limits(sp.store).sweep(lambda: 1e12, 3.0) == [leaked[0].path]


def test_a_stalled_claim_given_back_keeps_who_owns_the_job(tmp_path, monkeypatch):
    """The give-back rewrites the job file as spool's user: the owner of a job of an `allow`
    type goes with it (allow), or a user spool's own may not be would run as allowed."""
    from spool.claim import PendingView, claim_due
    from spool.ledger import Ledger

    guarded = CONFIG + LIMIT_TYPES + """
[jobs.guarded]
command = ["true"]
allow = ["root"]
limits = ["account:{tag}"]
"""
    sp = Spool(make_spool(tmp_path / "spool", guarded), host="h1", clock=lambda: NOW)
    sp.store.layout.host_processing("h1").mkdir()
    sp.submit("guarded", args={"tag": "acme"}, id="a-stalled")
    [name] = os.listdir(sp.path / "pending")
    os.chown(sp.path / "pending" / name, 54321, 54321)  # submitted by a user not allowed
    view = PendingView(sp.store)
    view.refresh(0)
    real_claim = sp.store.claim

    def claim_after_a_stall(*args, **kwargs):
        assert Limits(sp.store).sweep(lambda: 1e12, 3.0)
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(sp.store, "claim", claim_after_a_stall)
    assert claim_due(sp.store, view, Ledger("h1", 8), NOW, os.getpid(), 1) == []
    job, body = sp.store.get("a-stalled")
    assert job.state == "pending" and body["owner"] == 54321


# -- from the CLI, with real processes --------------------------------------------------

@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return make_spool(tmp_path / "spool", CONFIG)


def test_resume_never_unlinks_through_a_link_planted_as_paused(spool_dir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "all").write_text("")
    (outside / "job.noop").write_text("")
    os.rmdir(spool_dir / "paused")
    os.symlink(outside, spool_dir / "paused")
    result = spool_cli(spool_dir, "resume", "--all")
    assert result.returncode != 0
    assert "paused" in result.stderr.splitlines()[-1] and "not a directory" in result.stderr
    assert spool_cli(spool_dir, "resume", "noop").returncode != 0
    assert sorted(os.listdir(outside)) == ["all", "job.noop"]
    # nor is what lies behind it obeyed: the link is not the spool's paused/
    assert "paused" not in spool_cli(spool_dir, "status").stdout
    spool_cli(spool_dir, "submit", "noop")
    assert spool_cli(spool_dir, "worker", "--burst").returncode == 0
    assert len(os.listdir(spool_dir / "done")) == 1


def places(spool_dir: Path, job_id: str) -> list[str]:
    """Every place a job's file stands, tmp/ holds included."""
    found = [state for state in ("held", "done", "dead")
             if (spool_dir / state / f"{job_id}.json").exists()]
    found += ["pending" for name in os.listdir(spool_dir / "pending")
              if name.endswith(f"-{job_id}.json")]
    found += ["tmp" for name in os.listdir(spool_dir / "tmp") if job_id in name]
    return found


def test_release_racing_cancel_and_sigkill_leaves_each_job_in_one_place(spool_dir):
    from spool.recovery import recover_holds

    sp = Spool(spool_dir, host="a")
    ids = [sp.submit("noop", delay=600) for _ in range(12)]
    for job_id in ids:
        sp.hold(job_id)
    procs = []
    for index, job_id in enumerate(ids):
        for verb in ("release", "cancel"):
            procs.append((index, subprocess.Popen(
                [sys.executable, "-m", "spool.cli", "--spool", str(spool_dir), "--host", "a",
                 verb, job_id], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    for index, proc in procs:
        if index % 3 == 0:  # a third of them killed at some moment
            try:
                proc.wait(timeout=0.02 * index)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait()
    recover_holds(sp.store, datetime.now(UTC))
    for job_id in ids:
        where = places(spool_dir, job_id)
        assert len(where) == 1 and where[0] in ("held", "pending", "done"), (job_id, where)
