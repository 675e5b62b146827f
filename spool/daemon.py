"""The loop around a daemon's `step(now)`: sleep until the next wake-up, SIGHUP reloads,
SIGTERM/SIGINT stop, and any error of one step is logged and retried with backoff."""

from __future__ import annotations

import logging
import signal
from datetime import datetime
from collections.abc import Callable

from spool.notify import Notifier

log = logging.getLogger("spool.daemon")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def loop(name: str, step: Callable[[datetime], object], next_wake: Callable[[datetime], float],
         clock: Callable[[], datetime], reload: Callable[[], None] | None = None) -> int:
    """Run `step` until a stop signal; the signals are taken synchronously (sigtimedwait)."""
    watched = {signal.SIGHUP, *STOP_SIGNALS}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    notifier = Notifier()
    notifier.send("READY=1", f"STATUS={name} running")
    failures = 0
    try:
        while True:
            try:
                step(clock())
                failures = 0
                wait = next_wake(clock())
            except Exception as exc:  # a daemon logs and carries on
                failures += 1
                wait = min(60.0, 2.0 ** failures)
                log.exception("%s step failed (retry in %gs): %s", name, wait, exc)
            notifier.send("WATCHDOG=1")
            try:
                received = signal.sigtimedwait(watched, max(0.01, wait))
            except InterruptedError:  # SIGSTOP/SIGCONT or another signal: not a stop request
                continue
            if received is None or received.si_signo not in (signal.SIGHUP, *STOP_SIGNALS):
                continue
            if received.si_signo == signal.SIGHUP:
                if reload:
                    reload()
                continue
            notifier.send("STOPPING=1")
            log.info("%s stopping on signal %d", name, received.si_signo)
            return 0
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
