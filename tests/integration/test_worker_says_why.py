"""A worker's log says why it does what it does (issue: "the operator's spool"): a rejected
drop with its error, a job buried as invalid with the reason, and the start and end of a
drain on SIGTERM."""

from __future__ import annotations

import json
import signal

from conftest import spool_cli, start_cli, wait_until


def test_the_worker_log_names_rejections_and_the_drain(spool_dir, tmp_path):
    (spool_dir / "pending" / "typo.json").write_text('{"job": "nosuchtype"}')
    log = tmp_path / "worker.log"
    running = spool_cli(spool_dir, "submit", "sh", json.dumps({"script": "sleep 1"}))
    job_id = running.stdout.strip()
    worker = start_cli(spool_dir, "worker", "--capacity", "2", host="w", log=log)
    try:
        wait_until(lambda: f"claim {job_id}" in log.read_text(), 30, "the job to start")
        wait_until(lambda: "rejected drop" in log.read_text(), 30, "the drop's rejection")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    text = log.read_text()
    rejected = [line for line in text.splitlines() if "rejected drop" in line]
    assert "typo.json" in rejected[0] and "nosuchtype" in rejected[0], rejected
    assert "stop requested" in text and "draining 1 running job(s)" in text, text
    assert "drain complete" in text, text
    assert text.index("drain complete") > text.index(f"finish {job_id}"), text
