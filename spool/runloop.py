"""The worker's event loop: select on a signal wake-up pipe and inotify, run `step`, and run
companion daemons (cron, reaper) from the same loop for `spool run`."""

from __future__ import annotations

import logging
import os
import selectors
import signal
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Callable

from spool.inotify import make_watcher

if TYPE_CHECKING:
    from spool.worker import Worker

log = logging.getLogger("spool.worker")


@dataclass
class Companion:
    """Another daemon's step run from the worker's loop (`spool run`: cron and reaper)."""

    name: str
    step: Callable[[datetime], object]
    next_wake: Callable[[datetime], float]
    due_at: float = 0.0

    def tick(self, now: datetime, mono: float) -> None:
        if mono < self.due_at:
            return
        try:
            self.step(now)
            self.due_at = mono + self.next_wake(now)
        except Exception:  # noqa: BLE001 - one daemon's failure must not stop the others
            log.exception("%s step failed; retrying in 5s", self.name)
            self.due_at = mono + 5.0


def run_worker(worker: Worker, clock: Callable[[], datetime]) -> int:
    """Loop `worker.step` until stopped, sleeping until a child exits, a name appears or a
    deadline passes; signals arrive through a wake-up pipe."""
    worker.watcher = make_watcher(worker.store.layout.pending, worker.store.layout.cancel)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    old_fd = signal.set_wakeup_fd(wake_w)
    previous = {sig: signal.signal(sig, worker.on_signal)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)}
    selector = selectors.DefaultSelector()
    selector.register(wake_r, selectors.EVENT_READ)
    if worker.watcher:
        selector.register(worker.watcher.fd, selectors.EVENT_READ)
    try:
        worker.start(clock())
        worker.notifier.send("READY=1", f"STATUS=capacity {worker.capacity} slots")
        while True:
            try:
                if not worker.step(clock()):
                    break
            except OSError as exc:  # a filesystem fault: log, back off, carry on
                log.error("filesystem error, retrying: %s", exc)
                time.sleep(min(5.0, worker.config.defaults.poll))
            except Exception:  # noqa: BLE001 - the outermost loop: log, back off, carry on
                log.exception("worker step failed; retrying")
                time.sleep(1.0)
            for companion in worker.companions if not worker.stopping else ():
                companion.tick(clock(), time.monotonic())
            if worker.reload_requested:
                worker.reload_requested = False
                worker.reload()
            for key, _ in selector.select(worker.next_wake(clock())):
                if key.fd == wake_r:
                    while True:
                        try:
                            if not os.read(wake_r, 512):
                                break
                        except BlockingIOError:
                            break
                elif worker.watcher:
                    for directory, name in worker.watcher.read():
                        if directory == worker.store.layout.pending:
                            worker.view.add(name)
    finally:
        worker.shutdown(clock())
        signal.set_wakeup_fd(old_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        selector.close()
        os.close(wake_r)
        os.close(wake_w)
        if worker.watcher:
            worker.watcher.close()
    return 0
