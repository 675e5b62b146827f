"""RQ's side of workloads 2 and 3, run by the peers' interpreter (`benchmarks/.peers`):

    peer_rq.py enqueue URL N           queue N `peer_tasks.noop` jobs on queue "bench"
    peer_rq.py count URL               print how many jobs finished on "bench"
    peer_rq.py latency URL N FILE      N times: enqueue `peer_tasks.stamp`, wait until the idle
                                       worker's stamp appears in FILE; print the delays (ms)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from redis import Redis
from rq import Queue

import peer_tasks


def latency(queue: Queue, n: int, path: Path) -> list[float]:
    """Milliseconds from just before `enqueue` to the job's first line, `n` times."""
    samples = []
    for _ in range(n):
        seen = len(peer_tasks.stamps(path))
        start = time.time()
        queue.enqueue(peer_tasks.stamp, str(path))
        samples.append(peer_tasks.delay_ms(path, seen, start))
        time.sleep(0.02)
    return samples


if __name__ == "__main__":
    queue = Queue("bench", connection=Redis.from_url(sys.argv[2]))
    if sys.argv[1] == "enqueue":
        for _ in range(int(sys.argv[3])):
            queue.enqueue(peer_tasks.noop)
    elif sys.argv[1] == "count":
        print(queue.finished_job_registry.count)
    else:
        print(json.dumps(latency(queue, int(sys.argv[3]), Path(sys.argv[4]))))
