"""Two hosts on two NFS mounts of one spool: a mixed load (CLI, API, hand drops) submitted on
both mounts runs every job exactly once; two cron daemons enqueue every fire exactly once
(DESIGN §3 rules 3 and 5, §6, §10)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta

import pytest

from conftest import cli_env

pytestmark = pytest.mark.nfs

API_SUBMITTER = """
import json, sys
from spool import Spool
root, host, handler_log, prefix, count = sys.argv[1:6]
sp = Spool(root, host=host)
for n in range(int(count)):
    tag = f"{prefix}.{n}"
    if n % 2:
        print(sp.submit("hmark", {"path": handler_log, "tag": tag}), tag, flush=True)
    else:
        print(sp.submit("mark", {"tag": tag, "seconds": "0"}), tag, flush=True)
"""


def _drop(cluster, host: str, n: int) -> str:
    """A hand-dropped job file in `host`'s view of pending/, in one of three shapes: with an
    `id` field, with a file stem that is a valid id, with a name that is not one."""
    tag = cluster.tag(f"drop-{host}-{n}")
    body = {"job": "mark", "args": {"tag": tag, "seconds": "0"}}
    if n % 3 == 0:
        body["id"], name = tag, f"from {host} {n}.json"
    elif n % 3 == 1:
        name = f"{tag}.json"
    else:
        name = f"drop #{n} on {host}.json"
    pending = cluster.path(host) / "pending"
    if n % 2:  # as a careful script does: write a dotfile, then rename it
        (pending / f".{name}.part").write_text(json.dumps(body))
        os.rename(pending / f".{name}.part", pending / name)
    else:      # as a person does: write it in place
        (pending / name).write_text(json.dumps(body))
    return tag


def test_mixed_load_on_both_mounts_runs_every_job_exactly_once(cluster):
    cluster.create()
    handler_log = cluster.runs_dir / "handler.jsonl"
    for host in ("a", "b"):
        cluster.start(host, "worker", "--capacity", "3")
        cluster.start(host, "reap")
    submitters = {host: subprocess.Popen(
        [sys.executable, "-c", API_SUBMITTER, str(cluster.path(host)), host, str(handler_log),
         cluster.tag(f"api-{host}"), "60"], stdout=subprocess.PIPE, text=True, env=cli_env())
        for host in ("a", "b")}
    tags = []
    for n in range(30):
        for host in ("a", "b"):
            tags.append(_drop(cluster, host, n))
    for n in range(4):
        for host in ("a", "b"):
            tag = cluster.tag(f"cli-{host}-{n}")
            # these outlive the lease: the other host's reaper must leave them alone
            result = cluster.cli(host, "submit", "mark", "-a", f"tag={tag}", "-a", "seconds=5")
            assert result.returncode == 0, result.stderr
            tags.append(tag)
    for host, proc in submitters.items():
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"API submitter on {host} failed"
        tags += [line.split()[1] for line in out.splitlines()]
    assert len(tags) == len(set(tags)) == 60 + 8 + 120

    cluster.wait(lambda: len(cluster.done_ids()) >= len(tags), 180,
                 f"{len(tags)} jobs in done/ (see the spool process logs)")
    live_leftovers = cluster.tmp_leftovers()
    cluster.stop_all()

    states = cluster.states()
    every = [i for ids in states.values() for i in ids]
    duplicates = [i for i, count in Counter(every).items() if count > 1]
    assert not duplicates, f"jobs in two states: {duplicates}"
    dead = {i: cluster.job("dead", i).get("error") for i in states["dead"]}
    assert not dead, f"jobs ended dead: {dead}"
    assert states["pending"] == states["processing"] == []
    assert [n for n in os.listdir(cluster.path("a") / "pending") if n[:1] != "."] == []

    bodies = {i: cluster.job("done", i) for i in states["done"]}
    done_tags = Counter(body["args"]["tag"] for body in bodies.values())
    assert done_tags == Counter(tags), "a job was lost or finished twice under two ids"
    assert all(body["outcome"] == "completed" for body in bodies.values())

    executions = Counter(run.job for run in cluster.starts())
    executions.update(json.loads(line)["job"] for line in handler_log.read_text().splitlines())
    twice = {i: n for i, n in executions.items() if n != 1}
    assert not twice, f"jobs executed more than once: {twice}"
    assert set(executions) == set(bodies)
    finishes = Counter(e["id"] for e in cluster.events() if e.get("event") == "finish")
    assert {i: n for i, n in finishes.items() if n != 1} == {}
    assert set(finishes) == set(bodies)
    hosts = Counter(body["history"][-1]["host"] for body in bodies.values())
    assert set(hosts) == {"a", "b"}, f"both hosts' workers run jobs: {hosts}"

    assert live_leftovers == [], "tmp/ holds files no live process owns"
    assert cluster.tmp_leftovers() == [], "tmp/ not empty after every process stopped"


EVERY = """
[schedules.tick]
every = "1s"
job = "mark"
args = {tag = "@TAG@", seconds = "0"}
overlap = "allow"
catchup = "all"   # a daemon starved of CPU for a second still enqueues every fire
"""


def test_two_cron_daemons_on_two_mounts_enqueue_each_fire_exactly_once(cluster):
    cluster.create(EVERY.replace("@TAG@", cluster.tag("tick")))
    crons = [cluster.start(host, "cron") for host in ("a", "b")]
    for host in ("a", "b"):
        cluster.start(host, "worker", "--capacity", "2")
    cron_dir = cluster.path("a") / "cron"
    cluster.wait(lambda: len([n for n in os.listdir(cron_dir) if n.startswith("tick@")]) >= 6,
                 40, "six fires of tick")
    assert [cluster.stop(cron) for cron in crons] == [0, 0]
    fires = sorted(n for n in os.listdir(cron_dir) if n.startswith("tick@"))
    cluster.wait(lambda: set(fires) <= cluster.done_ids(), 60, "every fire to run")
    cluster.stop_all()

    submits = Counter(e["id"] for e in cluster.events() if e.get("event") == "submit")
    assert {f: submits[f] for f in fires} == dict.fromkeys(fires, 1), "a fire enqueued twice"
    executions = Counter(run.job for run in cluster.starts())
    assert {f: executions[f] for f in fires} == dict.fromkeys(fires, 1)
    scheduled = {i for i in cluster.done_ids() if i.startswith("tick@")}
    assert scheduled == set(fires), "a job of the schedule without its fire marker"
    for fire in fires:
        assert cluster.job("done", fire)["meta"]["schedule"] == "tick"
    times = [datetime.strptime(f.split("@")[1], "%Y%m%dT%H%M%SZ") for f in fires]
    gaps = [t for prev, t in itertools.pairwise(times) if t - prev != timedelta(seconds=1)]
    assert not gaps, f"fires missing before {gaps}: {fires}"
