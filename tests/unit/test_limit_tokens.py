"""Limit tokens (DESIGN §12) on real temporary directories: config, pools, take and give back,
the NFS link rule, draining after `max` is lowered, parking, release by a mover, the sweep."""

from __future__ import annotations

import json
import os
from datetime import datetime

import pytest
from conftest import CONFIG, make_spool
from limitkit import LIMIT_TYPES

from spool import Spool
from spool.claim import PendingView, claim_due
from spool.config import parse_config
from spool.errors import ConfigError, InvalidInput
from spool.ledger import Ledger
from spool.limits import Limits, all_pools, holders, pool_dir, usage
from spool.limitspec import PoolRef, pool_key, pools_of
from spool.timeutil import UTC

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
LIMITS = CONFIG + LIMIT_TYPES


@pytest.fixture
def sp(tmp_path):
    sp = Spool(make_spool(tmp_path / "spool", LIMITS), host="h1", clock=lambda: NOW)
    sp.store.layout.host_processing("h1").mkdir()
    return sp


def tokens_of(sp, ref):
    return sorted(os.listdir(pool_dir(sp.store, ref)))


# -- config and pools ---------------------------------------------------------------------

@pytest.mark.parametrize("text, needle", [
    ('[limits.x]\nmax = 0\n', "limits.x.max"),
    ('[limits.x]\n', "limits.x.max"),
    ('[limits.x]\nmax = 1\nmin = 2\n', "limits.x.min"),
    ('[jobs.a]\ncommand = ["true"]\nlimits = ["nope"]\n', "unknown limit 'nope'"),
    ('[jobs.a]\ncommand = ["true"]\nlimits = "x"\n', "jobs.a.limits"),
])
def test_bad_limit_config_names_the_key(tmp_path, text, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        parse_config(text, tmp_path / "spool.toml")


def test_pools_of_expands_keys_from_args(sp):
    body = {"job": "per_account", "args": {"tag": "acme"}, "limits": ["pair"]}
    assert pools_of(sp.config, body) == (PoolRef("account", "acme"), PoolRef("pair"))
    assert PoolRef("account", "acme").key == pool_key("acme") != pool_key("acme2")
    assert PoolRef("pair").key == "_"
    assert pools_of(sp.config, {"job": "per_account", "args": {"tag": 7}})[0].value == "7"


@pytest.mark.parametrize("options, needle", [
    ({"args": {}}, "needs argument 'tag'"),
    ({"args": {"tag": "a"}, "limits": ["nope"]}, "unknown limit 'nope'"),
    ({"args": {"tag": "a"}, "limits": [3]}, "field 'limits'"),
    ({"args": [1]}, "must be an object"),
])
def test_submit_rejects_unknown_limits_and_missing_keys(sp, options, needle):
    with pytest.raises(InvalidInput, match=needle):
        sp.submit("per_account", **options)
    assert not os.listdir(sp.store.layout.pending)


# -- take and give back -------------------------------------------------------------------

def test_take_fills_lowest_tokens_then_reports_the_full_pool(sp):
    limits, full = Limits(sp.store), set()
    first, _ = limits.take([PoolRef("pair")], "a", 1, NOW, full)
    second, _ = limits.take([PoolRef("pair")], "b", 1, NOW, full)
    third, blocked = limits.take([PoolRef("pair")], "c", 1, NOW, full)
    assert [t.path.name for t in first + second] == ["0", "1"]
    assert third == [] and blocked == PoolRef("pair") and full == {PoolRef("pair")}
    token = json.loads(first[0].path.read_text())
    assert token["id"] == "a" and token["attempt"] == 1 and token["host"] == "h1"
    assert not os.listdir(sp.store.layout.tmp)  # the staged file went
    limits.give_back(first)
    assert tokens_of(sp, PoolRef("pair")) == ["1"]


def test_a_full_pool_in_one_pass_costs_no_link(sp, monkeypatch):
    limits, full = Limits(sp.store), set()
    limits.take([PoolRef("pair")], "a", 1, NOW, full)
    limits.take([PoolRef("pair")], "b", 1, NOW, full)
    limits.take([PoolRef("pair")], "c", 1, NOW, full)
    calls = []
    monkeypatch.setattr(os, "link", lambda *a: calls.append(a))
    monkeypatch.setattr(os, "listdir", lambda *a: calls.append(a) or [])
    for job in range(100):
        assert limits.take([PoolRef("pair")], f"j{job}", 1, NOW, full)[1] == PoolRef("pair")
    assert calls == []


def test_all_or_nothing_across_pools(sp):
    limits = Limits(sp.store)
    limits.take([PoolRef("account", "x")], "holder", 1, NOW, set())
    taken, blocked = limits.take([PoolRef("account", "x"), PoolRef("pair")][::-1], "j", 1, NOW,
                                 set())
    assert taken == [] and blocked == PoolRef("account", "x")
    assert tokens_of(sp, PoolRef("pair")) == []  # the pair token it took went back


def test_eexist_of_a_link_that_happened_is_ours(sp, monkeypatch):
    real = os.link

    def lost_reply(src, dst, **kwargs):
        real(src, dst, **kwargs)
        raise FileExistsError(17, "File exists", str(dst))

    monkeypatch.setattr(os, "link", lost_reply)
    taken, blocked = Limits(sp.store).take([PoolRef("pair")], "a", 1, NOW, set())
    assert blocked is None and [t.path.name for t in taken] == ["0"]


def test_eexist_of_someone_else_moves_on(sp):
    pool = pool_dir(sp.store, PoolRef("pair"))
    Limits(sp.store).take([PoolRef("pair")], "other", 1, NOW, set())
    full = set()
    real_listdir = os.listdir
    calls = []

    def stale_listing(path):  # NFS: a listing that misses the other host's token
        calls.append(path)
        return [] if len(calls) == 1 else real_listdir(path)

    os.listdir, saved = stale_listing, os.listdir
    try:
        taken, blocked = Limits(sp.store).take([PoolRef("pair")], "me", 1, NOW, full)
    finally:
        os.listdir = saved
    assert blocked is None and taken[0].path == pool / "1"
    assert json.loads((pool / "0").read_text())["id"] == "other"


def test_lowering_max_drains_the_higher_tokens(sp, tmp_path):
    limits = Limits(sp.store)
    held = [limits.take([PoolRef("pair")], f"j{i}", 1, NOW, set())[0] for i in range(2)]
    (sp.path / "spool.toml").write_text(LIMITS.replace("max = 2", "max = 1"))
    sp.reload_config()
    assert limits.take([PoolRef("pair")], "x", 1, NOW, set())[1] == PoolRef("pair")
    limits.give_back(held[0])  # token 0 goes, token 1 (above the new max) still runs
    assert limits.take([PoolRef("pair")], "x", 1, NOW, set())[1] == PoolRef("pair")
    limits.give_back(held[1])
    taken, blocked = limits.take([PoolRef("pair")], "x", 1, NOW, set())
    assert blocked is None and taken[0].path.name == "0"


def test_a_racing_claim_past_a_lowered_max_gives_its_token_back(sp):
    pool = pool_dir(sp.store, PoolRef("pair"))
    limits = Limits(sp.store)
    for i in range(2):
        limits.take([PoolRef("pair")], f"j{i}", 1, NOW, set())
    os.rename(pool / "0", pool / "3")  # a token above the max being drained
    os.unlink(pool / "1")
    real_link = os.link

    def racer_first(src, dst, **kwargs):  # another host took the last free place at once
        if not os.path.exists(pool / "2"):
            real_link(pool / "3", pool / "2")
        return real_link(src, dst, **kwargs)

    os.link, saved = racer_first, os.link
    try:
        taken, blocked = limits.take([PoolRef("pair")], "late", 1, NOW, set())
    finally:
        os.link = saved
    assert blocked == PoolRef("pair") and taken == []
    assert sorted(os.listdir(pool)) == ["2", "3"]  # ours went back


def test_give_back_never_removes_a_token_recreated_by_another(sp):
    limits = Limits(sp.store)
    taken, _ = limits.take([PoolRef("pair")], "a", 1, NOW, set())
    os.link(taken[0].path, sp.path / "keep")  # its inode stays in use, never reused
    os.unlink(taken[0].path)  # swept...
    other, _ = limits.take([PoolRef("pair")], "b", 1, NOW, set())  # ...and taken again
    assert other[0].path == taken[0].path
    limits.give_back(taken)
    assert json.loads(other[0].path.read_text())["id"] == "b"


def test_release_attempt_removes_only_that_attempt(sp):
    limits = Limits(sp.store)
    limits.take([PoolRef("pair"), PoolRef("account", "x")], "a", 2, NOW, set())
    limits.take([PoolRef("pair")], "a", 3, NOW, set())
    assert limits.release_attempt("a", 2, {"job": "limited"}) == 1  # the pools of its body
    assert limits.release_attempt("a", 2) == 1  # everywhere
    assert [(h.job_id, h.attempt) for h in holders(all_pools(sp.store))] == [("a", 3)]


# -- the reaper's sweep ---------------------------------------------------------------------

def test_sweep_frees_only_old_tokens_of_attempts_not_in_processing(sp):
    limits = Limits(sp.store)
    orphan, _ = limits.take([PoolRef("pair")], "gone", 1, NOW, set())
    running, _ = limits.take([PoolRef("pair")], "run", 1, NOW, set())
    (sp.store.layout.host_processing("h1") / "run.1.json").write_text("{}")
    made = os.lstat(orphan[0].path).st_mtime
    assert limits.sweep(lambda: made + 2.9, 3.0) == []  # younger than the lease
    assert limits.sweep(lambda: None, 3.0) == []  # no probe: no verdict
    assert limits.sweep(lambda: made + 3.1, 3.0) == [orphan[0].path]
    assert limits.sweep(lambda: made + 1e6, 3.0) == []
    assert running[0].path.exists()


def test_a_link_planted_where_a_pool_belongs_is_never_followed(sp, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    Limits(sp.store)._make_pool(PoolRef("pair"))
    os.rmdir(pool_dir(sp.store, PoolRef("pair")))
    os.rmdir(pool_dir(sp.store, PoolRef("pair")).parent)
    os.symlink(outside, sp.path / "limits" / "pair")
    taken, blocked = Limits(sp.store).take([PoolRef("pair")], "a", 1, NOW, set())
    assert taken == [] and blocked == PoolRef("pair")
    assert not os.listdir(outside)


def test_sweep_leaves_tokens_it_cannot_read(sp):
    pool = pool_dir(sp.store, PoolRef("pair"))
    Limits(sp.store)._make_pool(PoolRef("pair"))
    (pool / "0").write_text("junk")
    os.symlink("/etc/passwd", pool / "1")
    assert Limits(sp.store).sweep(lambda: 1e12, 3.0) == []
    assert sorted(os.listdir(pool)) == ["0", "1"]


def test_usage_names_holders_and_the_key_value(sp):
    Limits(sp.store).take([PoolRef("account", "acme"), PoolRef("pair")], "a", 1, NOW, set())
    pools = {(p["name"], p["key"]): p for p in usage(sp.store)}
    assert pools[("account", "acme")]["holders"] == ["a"]
    assert pools[("pair", "_")]["used"] == 1 and pools[("pair", "_")]["max"] == 2


# -- claiming -----------------------------------------------------------------------------

def claim_pass(sp, view, capacity=8):
    return claim_due(sp.store, view, Ledger("h1", capacity), NOW, os.getpid(), 100)


def test_claim_takes_tokens_and_parks_the_rest(sp):
    ids = sorted(sp.submit("limited") for _ in range(5))
    view = PendingView(sp.store)
    view.refresh(0)
    claimed = claim_pass(sp, view)
    assert [c.job_id for c in claimed] == ids[:2]
    assert [len(c.tokens) for c in claimed] == [1, 1]
    assert view.names == [] and len(view.parked.names) == 3
    Limits(sp.store).give_back(claimed[0].tokens)
    claimed2 = claim_pass(sp, view)
    assert [c.job_id for c in claimed2] == ids[2:3]
    view.refresh(1)  # a listing keeps parked names out of the walk
    assert view.names == [] and len(view.parked.names) == 2


def test_a_lost_claim_rename_gives_the_tokens_back(sp, monkeypatch):
    sp.submit("limited")
    view = PendingView(sp.store)
    view.refresh(0)
    monkeypatch.setattr(sp.store, "claim", lambda *a, **k: None)
    assert claim_pass(sp, view) == []
    assert tokens_of(sp, PoolRef("pair")) == []
