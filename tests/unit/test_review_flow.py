"""Review of flow control (DESIGN §12): planted files and races that must not lose, duplicate
or over-admit a job."""

from __future__ import annotations

import os
from datetime import datetime

import pytest
from conftest import CONFIG, make_spool
from limitkit import LIMIT_TYPES

from spool import Spool
from spool.limits import TOKEN_BYTES, Limits, pool_dir, usage
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
