"""The worker's parts without a worker process: a stale view racing another worker of the host,
slots held by processes in the ledger, backoff that cannot overflow, argv and handler errors,
results and logs that stay bounded and never go through links."""

from __future__ import annotations

import fcntl
import json
import os
import sys
from datetime import datetime

import pytest
from conftest import make_spool

from spool import Spool
from spool.claim import PendingView, claim_due
from spool.config import Backoff
from spool.errors import InvalidInput
from spool.commands import expand_argv
from spool.execution import (
    StartError,
    load_handler,
    read_result,
    write_result,
)
from spool.ledger import HostLedger, Ledger, process_start
from spool.output import Output
from spool.policy import backoff_delay, decide
from spool.timeutil import UTC

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


@pytest.fixture
def sp(tmp_path):
    sp = Spool(make_spool(tmp_path / "spool"), host="h1", clock=lambda: NOW)
    sp.store.layout.host_processing("h1").mkdir()
    return sp


def stale_view(sp: Spool) -> PendingView:
    view = PendingView(sp.store)
    view.refresh(0)
    for name in view.names:
        view.job_info(name)  # what this worker saw of each job before the other claimed it
    return view


def claimed_by_another_worker(sp: Spool, job_id: str) -> int:
    """Another worker of this host claims `job_id` and holds its flock (returned fd)."""
    [name] = [n for n in sp.store.pending_names() if job_id in n]
    path = sp.store.claim(name, job_id, 1, sp.store.layout.host_processing("h1"), NOW)
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


# -- a stale view ----------------------------------------------------------------------------

def test_a_job_another_worker_of_the_host_holds_in_the_ledger_is_never_taken(sp, monkeypatch):
    theirs, mine = sp.submit("noop", priority=1), sp.submit("noop", priority=2)
    view = stale_view(sp)
    fd = claimed_by_another_worker(sp, theirs)
    ledger = Ledger("h1", 4, running={theirs: {"slots": 1, "attempt": 1, "worker_pid": 1}})
    real = os.rename

    def retransmitted(src, dst):  # NFS: every claiming rename reports ENOENT
        try:
            real(src, dst)
        finally:
            if "/processing/" in str(dst):
                raise FileNotFoundError(2, "No such file or directory", str(src))

    monkeypatch.setattr(os, "rename", retransmitted)
    try:
        claimed = claim_due(sp.store, view, ledger, NOW, os.getpid(), 10)
    finally:
        os.close(fd)
    assert [c.job_id for c in claimed] == [mine]
    assert ledger.running[theirs]["worker_pid"] == 1 and ledger.running[mine]["attempt"] == 1


def test_a_held_flock_after_enoent_is_not_ours_and_the_pass_goes_on(sp):
    theirs, mine = sp.submit("noop", priority=1), sp.submit("noop", priority=2)
    view = stale_view(sp)
    fd = claimed_by_another_worker(sp, theirs)  # not yet in the ledger we see
    try:
        ledger = Ledger("h1", 4)
        claimed = claim_due(sp.store, view, ledger, NOW, os.getpid(), 10)
    finally:
        os.close(fd)
    assert [c.job_id for c in claimed] == [mine] and set(ledger.running) == {mine}
    for item in claimed:
        os.close(item.fd)


# -- slots are held by processes -------------------------------------------------------------

def test_an_entry_stays_while_its_task_lives_and_goes_once_it_is_dead(sp):
    hosts = HostLedger(sp.store.layout, "h1", durable=False)
    me = os.getpid()
    alive = {"slots": 2, "attempt": 1, "worker_pid": me, "task_pid": me,
             "task_start": process_start(me), "task_boot": hosts.boot}
    dead = {**alive, "task_start": "1"}  # the pid now belongs to another process
    with hosts.locked(4) as ledger:
        ledger.workers[str(me)] = {"boot_id": hosts.boot}
        ledger.running = {"reaped-alive": alive, "reaped-dead": dead}
    with hosts.locked() as ledger:  # neither file is in processing/h1 (reaped)
        assert set(ledger.running) == {"reaped-alive"} and ledger.used == 2
        assert set(ledger.gone) == {"reaped-dead"}
        ledger.workers.clear()  # even when the worker is gone
    with hosts.locked() as ledger:
        assert set(ledger.running) == {"reaped-alive"}
        ledger.running["reaped-alive"]["task_start"] = "1"  # the task ended
    with hosts.locked() as ledger:
        assert ledger.running == {}


def test_a_planted_ledger_link_is_never_read(sp, tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"capacity": 99, "workers": {"1": {"secret": "x"}}}))
    os.symlink(secret, sp.store.layout.hosts / "h1.json")
    with HostLedger(sp.store.layout, "h1", durable=False).locked(2) as ledger:
        assert ledger.capacity == 2 and ledger.workers == {}
    assert not os.path.islink(sp.store.layout.hosts / "h1.json")
    assert json.loads(secret.read_text())["capacity"] == 99


# -- decisions -------------------------------------------------------------------------------

@pytest.mark.parametrize("backoff,attempt", [(Backoff(1, 2.0, 60, 0), 5000),
                                             (Backoff(1, 1e300, 60, 0.5), 3)])
def test_backoff_never_overflows(backoff, attempt):
    assert 30 <= backoff_delay(backoff, attempt, 0.0) <= 60
    assert decide("failed", attempt, attempt + 1, backoff, NOW, 1.0).state == "pending"


# -- starting --------------------------------------------------------------------------------

def test_a_nul_in_an_argv_item_is_invalid_input():
    with pytest.raises(InvalidInput, match="NUL"):
        expand_argv(("echo", "{message}"), {"message": "a\0b"})


@pytest.mark.parametrize("source,needle", [("raise RuntimeError('half deployed')\n",
                                            "RuntimeError: half deployed"),
                                           ("import sys\nsys.exit(3)\n", "SystemExit"),
                                           ("x = 1\n", "no function 'run'")])
def test_a_handler_that_cannot_be_loaded_is_a_start_error_naming_it(tmp_path, monkeypatch,
                                                                    source, needle):
    name = f"unit_handler_{abs(hash(source))}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(StartError, match=needle) as caught:
        load_handler(f"{name}:run")
    assert name in str(caught.value)
    sys.modules.pop(name, None)


# -- results and logs ------------------------------------------------------------------------

def test_a_result_is_written_afresh_over_a_planted_link_and_read_bounded(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("keep")
    result = tmp_path / "result"
    os.symlink(outside, result)
    write_result(result, b'{"n": 1}', 100)
    assert outside.read_text() == "keep" and not result.is_symlink()
    assert read_result(result, 100) == ({"n": 1}, None) and not result.exists()
    write_result(result, b"x" * 5000, 100)
    assert result.stat().st_size == 101  # one byte past the limit, no more
    value, error = read_result(result, 100)
    assert value is None and "max_result_bytes (100 bytes)" in error


def test_a_linked_or_special_result_is_never_read(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text('"secret"')
    result = tmp_path / "result"
    os.symlink(outside, result)
    value, error = read_result(result, 100)
    assert value is None and str(result) in error and not os.path.lexists(result)
    os.mkfifo(result)
    value, error = read_result(result, 100)  # never blocks
    assert value is None and str(result) in error


def test_output_past_max_log_bytes_is_cut_with_a_marker(tmp_path):
    log = tmp_path / "job.log"
    output = Output.open(log, "=== header ===\n", 0o644, 1024)
    os.write(output.write_fd, b"a" * 1000)
    output.drain()
    os.write(output.write_fd, b"b" * 3000)
    output.close()
    data = log.read_bytes()
    assert data.startswith(b"=== header ===\n" + b"a" * 1000 + b"b" * (1024 - 1015))
    assert data.endswith(b"output cut: 2991 bytes dropped past max_log_bytes (1024) ===\n")


def test_a_log_that_is_a_link_or_fifo_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("keep")
    os.symlink(outside, tmp_path / "link.log")
    os.mkfifo(tmp_path / "fifo.log")
    for name in ("link.log", "fifo.log"):
        with pytest.raises(OSError):
            Output.open(tmp_path / name, "header\n", 0o644, 1024)
    assert outside.read_text() == "keep"
