"""Chaos: 3 hosts x 2 workers, 2 cron daemons and a reaper share one spool while workers are
killed with SIGKILL at random and restarted. Afterwards every job and every cron fire is in
done/ exactly once, nothing is in two states, and no job ran more often than its attempts."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from conftest import CONFIG, cli_env, make_spool, start_cli, state_files, wait_until

CHAOS_SECONDS = float(os.environ.get("SPOOL_CHAOS_SECONDS", "45"))
JOBS = 2000
HOSTS = ("a", "b", "c")

CHAOS_CONFIG = CONFIG.replace('lease = "3s"', 'lease = "3s"\nmax_attempts = 25') + """
[schedules.pulse]
every = "2s"
job = "record"
args = {path = "@RUNS@", tag = "cron"}
overlap = "allow"
"""

SUBMITTER = """
import sys
from spool import Spool
spool_dir, runs, count, tag = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sp = Spool(spool_dir, host=tag)
for n in range(count):
    print(sp.submit("record", {"path": runs, "tag": f"{tag}-{n}", "seconds": 0.02},
                    max_attempts=25), flush=True)
"""


@pytest.mark.slow
def test_cluster_survives_random_kills(tmp_path):
    runs = tmp_path / "runs.jsonl"
    spool_dir = make_spool(tmp_path / "spool", CHAOS_CONFIG.replace("@RUNS@", str(runs)))
    log = tmp_path / "daemons.log"
    rng = random.Random(20261122)
    workers = {(host, i): start_cli(spool_dir, "worker", "--capacity", "2", host=host, log=log)
               for host in HOSTS for i in range(2)}
    crons = [start_cli(spool_dir, "cron", host=h, log=log) for h in ("a", "b")]
    reaper = start_cli(spool_dir, "reap", host="r", log=log)
    submitters = [subprocess.Popen([sys.executable, "-c", SUBMITTER, str(spool_dir), str(runs),
                                    str(JOBS // 2), f"sub{k}"], stdout=subprocess.PIPE,
                                   text=True, env=cli_env()) for k in range(2)]
    kills = 0
    deadline = time.monotonic() + CHAOS_SECONDS
    try:
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.2, 1.0))
            key = rng.choice(sorted(workers))
            workers[key].kill()
            workers[key].wait()
            kills += 1
            workers[key] = start_cli(spool_dir, "worker", "--capacity", "2", host=key[0],
                                     log=log)
        submitted = [line.strip() for s in submitters for line in s.communicate(timeout=120)[0]
                     .splitlines() if line.strip()]
        for cron in crons:
            cron.send_signal(signal.SIGTERM)
            cron.wait(30)
        wait_until(lambda: _drained(spool_dir), 240, "pending and processing to drain")
    finally:
        for proc in [*workers.values(), *crons, reaper, *submitters]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*workers.values(), *crons, reaper, *submitters]:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()

    files = state_files(spool_dir)
    every_id = [i for ids in files.values() for i in ids]
    assert len(every_id) == len(set(every_id)), "a job is in two state directories"
    assert len(submitted) == JOBS and set(submitted) <= set(files["done"]), "a job was lost"
    fires = [n for n in os.listdir(spool_dir / "cron") if n.startswith("pulse@")]
    assert fires and set(fires) <= set(files["done"]), "a cron fire was lost"
    # a task SIGKILLed while appending may leave half a line: count job ids, not parsed lines
    executions = Counter(re.findall(r'"job": "([^"]+)"', runs.read_text()))
    reruns = 0
    for job_id in files["done"]:
        body = json.loads((spool_dir / "done" / f"{job_id}.json").read_text())
        assert body["outcome"] == "completed"
        assert 1 <= executions[job_id] <= body["attempts"], job_id
        reruns += executions[job_id] - 1
    print(f"\nchaos: {len(submitted)} jobs + {len(fires)} cron fires, {kills} worker kills, "
          f"{reruns} re-runs, {len(files['dead'])} dead")
    assert files["dead"] == []


def _drained(spool_dir) -> bool:
    files = state_files(spool_dir)
    return not files["pending"] and not files["processing"] and not os.listdir(
        spool_dir / "pending")
