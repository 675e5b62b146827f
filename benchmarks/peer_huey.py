"""huey's side of workload 2, run by the peers' interpreter (`benchmarks/.peers`):

    peer_huey.py enqueue sqlite|file DIR N      queue N no-op tasks (untimed by the caller)
    peer_huey.py consume sqlite|file DIR N W    a consumer with W threads; exits once N ran

The no-op task counts itself (`next` on a shared counter, atomic under the GIL) so that the
consumer exits the moment the N-th task has run: the caller times the whole process, start-up
included, as it times spool's burst worker.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
from pathlib import Path

from huey import FileHuey, SqliteHuey

KIND, WHERE, N = sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
if KIND == "sqlite":
    huey = SqliteHuey("bench", filename=str(WHERE / "huey.db"))
else:
    # thread workers share one process: huey's file storage wants a thread lock then
    huey = FileHuey("bench", path=str(WHERE / "files"), use_thread_lock=True)

ran = itertools.count(1)
all_ran = threading.Event()


@huey.task()
def noop() -> None:
    if next(ran) >= N:
        all_ran.set()


def consume(workers: int) -> None:
    def leave() -> None:
        all_ran.wait()
        os._exit(0)

    threading.Thread(target=leave, daemon=True).start()
    huey.create_consumer(workers=workers, worker_type="thread", periodic=False).run()


if __name__ == "__main__":
    if sys.argv[1] == "enqueue":
        for _ in range(N):
            noop()
    else:
        consume(int(sys.argv[5]))
