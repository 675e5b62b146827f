"""Four processes submitting at once end with every job present exactly once and valid."""

from __future__ import annotations

import json
import multiprocessing
import os

from spool.layout import parse_pending_name


def _submit_batch(spool_dir: str, count: int, tag: int) -> list[str]:
    from spool import Spool

    sp = Spool(spool_dir, host=f"s{tag}")
    return [sp.submit("noop", {"tag": tag, "n": n}) for n in range(count)]


def test_four_processes_submit_8000_distinct_valid_jobs(spool_dir):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.starmap(_submit_batch, [(str(spool_dir), 2000, t) for t in range(4)])
    ids = [job_id for batch in results for job_id in batch]
    assert len(ids) == len(set(ids)) == 8000
    names = os.listdir(spool_dir / "pending")
    parsed = [parse_pending_name(n) for n in names]
    assert all(parsed) and sorted(p.id for p in parsed) == sorted(ids)
    for name in names[::97]:
        body = json.loads((spool_dir / "pending" / name).read_text())
        assert body["job"] == "noop" and body["id"] in name
    assert os.listdir(spool_dir / "tmp") == []


def test_unique_key_has_one_winner_across_processes(spool_dir):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        outcomes = pool.starmap(_submit_unique, [(str(spool_dir), i) for i in range(8)])
    assert sorted(outcomes).count("ok") == 1
    assert len(os.listdir(spool_dir / "pending")) == 1


def _submit_unique(spool_dir: str, tag: int) -> str:
    from spool import Conflict, Spool

    try:
        Spool(spool_dir, host=f"u{tag}").submit("noop", unique="only-one")
        return "ok"
    except Conflict:
        return "conflict"
