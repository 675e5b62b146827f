"""The worker's event loop: select on a signal wake-up pipe, inotify and the output pipes of
running attempts, run `step`, and run companion daemons (cron, reaper) from the same loop for
`spool run`.

The loop never exits on a fault (docs/protocol.md, Links, FIFOs and group members): a start-up that
fails (a full disk, no free inodes, EACCES on the host lock) is logged with the path and retried
with backoff, a step that fails is logged and retried; only SIGTERM/SIGINT (or a burst worker with
nothing left) end it. SIGSTOP/SIGCONT and interrupted waits are just wake-ups.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

if TYPE_CHECKING:
    from spool.output import Output
    from spool.pool import Child
    from spool.worker import Worker

log = logging.getLogger("spool.worker")
START_BACKOFF_MAX = 30.0


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
        except Exception:  # one daemon's failure must not stop the others
            log.exception("%s step failed; retrying in 5s", self.name)
            self.due_at = mono + 5.0


class Loop:
    """The selector and the signal wake-up pipe of one worker."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.outputs: dict[int, Output] = {}
        self.replies: dict[int, Child] = {}

    def add_watcher(self) -> None:
        fd = self.worker.feed.watch()
        if fd is not None:
            self.selector.register(fd, selectors.EVENT_READ, "watch")

    def wait(self, timeout: float, full: bool = False) -> bool:
        """Wait up to `timeout` for a wake-up (`full`: for the whole of it, unless a stop is
        requested); output of running attempts is copied to their logs meanwhile without
        ending the wait. False when the wait timed out."""
        deadline = time.monotonic() + timeout
        while True:
            self._sync_outputs()
            events = self.selector.select(max(0.0, deadline - time.monotonic()))
            woken = False
            for key, _ in events:
                if key.data == "output":
                    self.worker.attempts.drain(key.fd)
                elif key.data == "reply":  # a pool child reported its attempt's outcome
                    self.worker.attempts.pool.read(key.fd)
                    woken = True
                elif key.data == "wake":
                    self._empty_wake_pipe()
                    woken = True
                else:
                    woken = True
                    self.worker.feed.take_events()
            if time.monotonic() >= deadline or (woken and (not full or self.worker.stopping)):
                return woken

    def _sync_outputs(self) -> None:
        """Wait on the pipes of the attempts running now, and on the sockets of the pool
        children running one (a closed descriptor's number may come back as another's, even
        a socket's as a pipe's: registrations are matched by object, not number, and every
        stale one goes before any is added)."""
        outputs = self.worker.attempts.output_fds()
        replies = self.worker.attempts.pool.reply_fds()
        self._drop_stale(self.outputs, outputs)
        self._drop_stale(self.replies, replies)
        self._add(self.outputs, outputs, "output")
        self._add(self.replies, replies, "reply")

    def _drop_stale(self, registered: dict[int, Any], current: dict[int, Any]) -> None:
        for fd, thing in list(registered.items()):
            if current.get(fd) is not thing:
                self.selector.unregister(fd)
                del registered[fd]

    def _add(self, registered: dict[int, Any], current: dict[int, Any], tag: str) -> None:
        for fd, thing in current.items():
            if fd not in registered:
                self.selector.register(fd, selectors.EVENT_READ, tag)
                registered[fd] = thing

    def _empty_wake_pipe(self) -> None:
        while True:
            try:
                if not os.read(self.wake_r, 512):
                    return
            except BlockingIOError:
                return

    def close(self) -> None:
        self.selector.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        self.worker.feed.close()


def start_worker(worker: Worker, loop: Loop, clock: Callable[[], datetime]) -> bool:
    """`worker.start`, retried with backoff while the filesystem refuses it; False when a stop
    was requested meanwhile. A burst worker is a one-shot command, not a daemon: it fails at
    once, with the error, like `cron --once`."""
    failures = 0
    while not worker.stopping:
        try:
            worker.start(clock())
            return True
        except Exception as exc:  # full disk, EACCES, EIO...: wait, never exit
            if worker.burst:
                raise
            failures += 1
            wait = min(START_BACKOFF_MAX, 0.5 * 2 ** failures)
            log.error("worker cannot start (retry in %gs): %s", wait, worker.describe(exc),
                      exc_info=not isinstance(exc, OSError))
            loop.wait(wait, full=True)
    return False


def run_worker(worker: Worker, clock: Callable[[], datetime]) -> int:
    """Loop `worker.step` until stopped, sleeping until a child exits, a name appears or a
    deadline passes; signals arrive through a wake-up pipe."""
    loop = Loop(worker)
    old_fd = signal.set_wakeup_fd(loop.wake_w)
    previous = {sig: signal.signal(sig, worker.on_signal)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)}
    started = False
    try:
        loop.add_watcher()
        started = start_worker(worker, loop, clock)
        if not started:
            return 0
        worker.notifier.send("READY=1", f"STATUS=capacity {worker.capacity} slots")
        while True:
            try:
                if not worker.step(clock()):
                    break
            except OSError as exc:  # a filesystem fault: log, back off, carry on
                log.error("filesystem error, retrying: %s", worker.describe(exc))
                loop.wait(min(5.0, worker.config.defaults.poll), full=True)
            except Exception:  # the outermost loop: log, back off, carry on
                log.exception("worker step failed; retrying")
                loop.wait(1.0, full=True)
            for companion in worker.companions if not worker.stopping else ():
                companion.tick(clock(), time.monotonic())
            if worker.reload_requested:
                worker.reload_requested = False
                worker.reload()
            loop.wait(worker.next_wake(clock()))
    finally:
        if started:
            worker.shutdown(clock())
        signal.set_wakeup_fd(old_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        loop.close()
    return 0
