"""Daemons stop only when asked: SIGSTOP/SIGCONT and interrupted waits never end them."""

from __future__ import annotations

import signal
import time

import pytest

from conftest import start_cli, wait_until


@pytest.mark.parametrize("command", ["reap", "cron"])
def test_sigstop_and_sigcont_never_stop_a_daemon(spool_dir, tmp_path, command):
    log = tmp_path / "daemon.log"
    daemon = start_cli(spool_dir, command, host="d", log=log)
    try:
        wait_until(lambda: (spool_dir / "hosts").exists() and log.exists(), 30, "start")
        for _ in range(5):
            daemon.send_signal(signal.SIGSTOP)
            time.sleep(0.05)  # stopped for a moment, as a debugger or a frozen VM would
            daemon.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert daemon.poll() is None, log.read_text()
            time.sleep(0.1)
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    assert "stopping on signal 15" in log.read_text()
