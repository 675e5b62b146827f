"""Concurrency limits on real NFS (DESIGN §10, §12): tokens made by `link(2)` through two
independent NFS clients hold the cluster to `max`, per key too; a killed worker's token returns
with its job; a dead claimer's token is freed after the lease by the server's clock; a lowered
`max` drains. Task records go to the local disk, outside the export."""

from __future__ import annotations

import os
import time

import pytest
from limitkit import LIMIT_TYPES, overlap_of, records, tokens

from spool.api import utc_now
from spool.limits import Limits
from spool.limitspec import PoolRef

pytestmark = pytest.mark.nfs


def workers(cluster, per_host: int = 2, capacity: int = 4) -> list:
    procs = [cluster.start(host, "worker", "--capacity", str(capacity))
             for host in ("a", "b") for _ in range(per_host)]
    cluster.wait(lambda: all("capacity" in log.read_text() for log in cluster.logs_dir.iterdir()
                             if "-worker-" in log.name), 30, "the workers to start")
    return procs


def test_two_nfs_clients_never_run_more_than_max(cluster):
    cluster.create(LIMIT_TYPES)
    out = cluster.work / "runs.jsonl"
    sp = cluster.api("a")
    ids = sp.submit_many([{"job": "limited", "args": {"path": str(out), "seconds": 0.05}}
                          for _ in range(40)])
    workers(cluster)
    cluster.wait(lambda: len(cluster.done_ids("a")) == 40, 120, "40 jobs done")
    runs = records(out)
    assert sorted(r["job"] for r in runs) == sorted(ids)
    assert overlap_of(runs) <= 2
    assert {r["pid"] for r in runs} and len({r["job"] for r in runs}) == 40
    cluster.wait(lambda: tokens(cluster.path("b")) == [], 10, "no token left (seen from b)")


def test_a_partitioned_limit_on_nfs(cluster):
    cluster.create(LIMIT_TYPES)
    out = cluster.work / "runs.jsonl"
    accounts = ["x", "y", "z"]
    cluster.api("b").submit_many([{"job": "per_account",
                                   "args": {"path": str(out), "tag": acct, "seconds": 0.3}}
                                  for _ in range(4) for acct in accounts])
    workers(cluster, per_host=1)
    cluster.wait(lambda: len(cluster.done_ids("a")) == 12, 120, "12 jobs done")
    runs = records(out)
    for acct in accounts:
        assert overlap_of([r for r in runs if r["tag"] == acct]) == 1
    assert overlap_of(runs) > 1


def test_a_killed_workers_token_returns_with_its_job(cluster):
    cluster.create(LIMIT_TYPES)
    marker = cluster.work / "started"
    job_id = cluster.api("a").submit("slow_limited", {"seconds": 120, "marker": str(marker)})
    worker = cluster.start("a", "worker", "--capacity", "4")
    cluster.wait(marker.exists, 30, "the task to start")
    held = tokens(cluster.path("a"))
    assert held == ["pair/_/0"]
    cluster.kill(worker)
    os.kill(int(marker.read_text()), 9)  # its task (a handler child) would die with it anyway
    cluster.start("b", "reap")

    def moved() -> bool:
        if cluster.states("b")["processing"]:
            assert tokens(cluster.path("b")) == held, "token freed while its attempt runs"
            return False
        return True

    cluster.wait(moved, 60, "the reaper on b to take the job back")
    cluster.wait(lambda: tokens(cluster.path("b")) == [], 15, "the token to go with it")
    cluster.wait(lambda: cluster.states("a")["dead"] == [job_id], 15, "the job buried (lost)")


def test_a_dead_claimers_token_is_freed_after_the_lease_by_the_servers_clock(cluster):
    cluster.create(LIMIT_TYPES)
    limits = Limits(cluster.api("a").store)
    orphan, _ = limits.take([PoolRef("pair")], "never-claimed", 1, utc_now(), set())
    made = os.lstat(orphan[0].path).st_mtime  # stamped by the server
    path_b = cluster.path("b") / "limits" / "pair" / "_" / orphan[0].path.name

    def reaped() -> bool:
        assert cluster.cli("b", "reap", "--once").returncode == 0
        if path_b.exists():
            return False
        assert cluster.server_time("b") - made > 4.0, "freed before the lease (4 s)"
        return True

    assert not reaped()
    cluster.wait(reaped, 60, "the reaper on b to free the orphan token")


def test_lowering_max_with_sighup_drains_on_nfs(cluster):
    cluster.create(LIMIT_TYPES.replace("max = 2", "max = 3", 1))
    out = cluster.work / "runs.jsonl"
    cluster.api("a").submit_many([{"job": "limited", "args": {"path": str(out), "seconds": 0.5}}
                                  for _ in range(24)])
    procs = workers(cluster, per_host=1)
    cluster.wait(lambda: len(tokens(cluster.path("a"))) >= 2, 60, "tokens held")
    config = cluster.path("a") / "spool.toml"
    config.write_text(config.read_text().replace("max = 3", "max = 1", 1))
    cluster.wait(lambda: "max = 1" in (cluster.path("b") / "spool.toml").read_text(), 15,
                 "mount B to see the new config")
    for proc in procs:
        proc.send_signal(1)
    cluster.wait(lambda: sum("reloaded" in log.read_text() for log in cluster.logs_dir.iterdir())
                 >= 2, 30, "both workers to reload")
    cluster.wait(lambda: len(tokens(cluster.path("a"))) <= 1, 30, "the pool to drain to 1")
    drained = time.time()
    cluster.wait(lambda: len(cluster.done_ids("a")) == 24, 120, "24 jobs done")
    late = [r for r in records(out) if r["start"] > drained + 1.0]  # attribute-cache margin
    assert overlap_of(late) <= 1
