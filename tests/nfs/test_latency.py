"""Pickup latency across mounts (DESIGN §4): inotify never sees another client's changes, so a
worker on a network filesystem polls, and a job submitted on another host starts within `poll`
plus the mount's attribute-cache time, whatever its view of pending/ holds."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.nfs
BOUND = 5.0  # poll (0.2 s) + attribute cache (~1 s) + a generous margin: not a speed target


@pytest.mark.parametrize("future", [0, 2000])
def test_job_submitted_on_one_mount_starts_on_the_other_hosts_idle_worker(cluster, future):
    cluster.create()
    sp = cluster.api("a")
    if future:
        sp.submit_many([{"job": "mark", "args": {"tag": cluster.tag(f"later{n}"), "seconds": "0"},
                         "delay": 3600} for n in range(future)])
    warm = sp.submit("mark", {"tag": cluster.tag("warm"), "seconds": "0"})
    cluster.start("b", "worker", "--capacity", "2")
    # once it ran the warm-up job, the worker is idle with every future job in its view
    cluster.wait(lambda: warm in cluster.done_ids("b"), 60, "host b's worker to run a first job")

    result = cluster.cli("a", "submit", "mark", "-a", f"tag={cluster.tag('now')}",
                         "-a", "seconds=0")
    submitted = time.time()
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    try:
        [run] = cluster.wait(lambda: cluster.starts(job_id), 3 * BOUND,
                             "the job to start on host b")
    except AssertionError as exc:
        if not str(exc).startswith("timed out"):
            raise
        raise AssertionError(
            f"a job submitted on mount A did not start on host b's idle worker within "
            f"{3 * BOUND:g}s (bound {BOUND:g}s) while {future} future jobs were pending") from None
    latency = run.time - submitted
    print(f"\npickup latency across mounts with {future} future jobs pending: {latency:.2f}s")
    assert run.host == "b" and latency <= BOUND
