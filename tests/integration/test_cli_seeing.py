"""Seeing what is going on (issue 8): ls columns and filters, show and status of running jobs,
logs -n/--attempt/-f, colour, SPOOL_<OPTION>, read-only commands on a broken spool.toml, and
the small messages of retry, init and purge. The CLI runs as a real process."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONFIG, cli_env, make_spool, spool_cli, start_cli, wait_until

SEEING = CONFIG + """
[jobs.flaky]
command = ["sh", "-c", "echo try $SPOOL_ATTEMPT; echo oops >&2; exit 3"]
max_attempts = 2
"""


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return make_spool(tmp_path / "spool", SEEING)


def ok(spool: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    done = spool_cli(spool, *args, **kw)
    assert done.returncode == 0, done.stderr
    return done


def submit(spool: Path, *args: str) -> str:
    return ok(spool, "submit", *args).stdout.strip()


def burst(spool: Path) -> None:
    ok(spool, "worker", "--burst", timeout=120)


def finish(spool: Path, job_id: str) -> None:
    """Run burst workers until the job is finished (a retry waits out its backoff first)."""
    def finished() -> bool:
        if any((spool / state / f"{job_id}.json").exists() for state in ("done", "dead")):
            return True
        burst(spool)
        return False
    wait_until(finished, timeout=60, message=f"{job_id} finished")


def rows(output: str) -> list[list[str]]:
    lines = output.splitlines()
    header = lines[0].split()
    assert header == ["ID", "STATE", "JOB", "ATTEMPT", "HOST", "AGE", "OUTCOME", "INFO"]
    return [line.split(None, 7) for line in lines[1:]]


# -- ls ----------------------------------------------------------------------------------------

def test_ls_columns_info_and_filters(spool):
    done_id = submit(spool, "noop")
    dead_id = submit(spool, "flaky")
    finish(spool, dead_id)  # noop completes; flaky fails, is retried, fails again: dead
    later = submit(spool, "noop", "--delay", "10m")
    waiting = submit(spool, "noop", "--after", later)

    by_id = {row[0]: row for row in rows(ok(spool, "ls").stdout)}
    assert by_id[done_id][1:4] == ["done", "noop", "1/3"]
    assert by_id[done_id][6] == "completed"
    assert by_id[dead_id][1:4] == ["dead", "flaky", "2/2"]
    assert by_id[dead_id][6] == "failed" and "exit code 3" in by_id[dead_id][7]
    assert by_id[later][7].startswith("due in ") and by_id[later][7].endswith("m")
    assert by_id[waiting][7] == f"after {later}"
    assert by_id[later][4] == "-"  # no host while not running

    assert ok(spool, "ls", "dead", "-q").stdout.split() == [dead_id]
    assert ok(spool, "ls", "--outcome", "completed", "-q").stdout.split() == [done_id]
    # finished jobs match the host of their last attempt; pending ones no host
    assert set(ok(spool, "ls", "--host", "test", "-q").stdout.split()) == {done_id, dead_id}
    assert ok(spool, "ls", "--host", "elsewhere", "-q").stdout.split() == []
    assert set(ok(spool, "ls", "--since", "1h", "-q").stdout.split()) == \
        {done_id, dead_id, later, waiting}
    assert ok(spool, "ls", "--since", "2999-01-01T00:00:00Z", "-q").stdout == ""
    bad = spool_cli(spool, "ls", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "--since 'yesterday-ish'" in bad.stderr


def test_ls_limit_keeps_the_newest_finished_and_newest_sorts(spool):
    ids = []
    for _ in range(3):
        ids.append(submit(spool, "noop"))
        burst(spool)  # one at a time: finished in submission order
    # the newest two, listed oldest first as without --limit
    assert ok(spool, "ls", "done", "--limit", "2", "-q").stdout.split() == ids[1:]
    assert ok(spool, "ls", "done", "--newest", "-q").stdout.split() == ids[::-1]
    assert ok(spool, "ls", "done", "--newest", "--limit", "1", "-q").stdout.split() == ids[2:]
    docs = json.loads(ok(spool, "ls", "done", "--limit", "1", "--json").stdout)
    assert [d["id"] for d in docs] == ids[2:] and docs[0]["state"] == "done"


def test_empty_listing_says_so_except_quiet_and_json(spool):
    human = ok(spool, "ls", "dead", "--job", "noop")
    assert human.stdout.strip() == "no jobs match (state dead, --job noop)"
    assert ok(spool, "ls", "dead", "-q").stdout == ""
    assert json.loads(ok(spool, "ls", "dead", "--json").stdout) == []


def test_colour_only_on_a_terminal_and_never_with_no_color(spool):
    submit(spool, "noop", "--delay", "1h")

    def on_tty(**env: str) -> str:
        leader, follower = pty.openpty()
        try:
            subprocess.run([sys.executable, "-m", "spool.cli", "--spool", str(spool), "ls"],
                           stdout=follower, stderr=subprocess.DEVNULL, env=cli_env(**env),
                           timeout=60, check=True)
            os.close(follower)
            chunks = []
            while True:
                try:
                    data = os.read(leader, 65536)
                except OSError:
                    break
                if not data:
                    break
                chunks.append(data)
            return b"".join(chunks).decode()
        finally:
            os.close(leader)

    assert "\x1b[36mpending" in on_tty()
    assert "\x1b[" not in on_tty(NO_COLOR="1")
    assert "\x1b[" not in ok(spool, "ls").stdout  # piped


# -- show and status of a running job ---------------------------------------------------------

def test_show_and_status_of_a_running_job(spool, tmp_path):
    marker = tmp_path / "started"
    job_id = submit(spool, "sleep", "-a", "seconds:=30", "-a", f"marker={marker}")
    worker = start_cli(spool, "worker", host="h1", log=tmp_path / "worker.log")
    try:
        wait_until(marker.exists, message="the job started")
        shown = ok(spool, "show", job_id).stdout
        running = [ln for ln in shown.splitlines() if ln.startswith("running")]
        assert running and "attempt 1/3 on h1 since " in running[0] and "heartbeat" in running[0]
        doc = json.loads(ok(spool, "show", job_id, "--json").stdout)
        assert doc["running"]["attempt"] == 1 and doc["running"]["host"] == "h1"
        assert doc["running"]["runtime"] >= 0 and doc["running"]["started_at"]
        row = rows(ok(spool, "ls", "processing").stdout)[0]
        assert row[1:5] == ["processing", "sleep", "1/3", "h1"]
        assert ok(spool, "ls", "--host", "h1", "-q").stdout.split() == [job_id]
        status = json.loads(ok(spool, "status", "--json").stdout)
        assert status["hosts"][0]["running"] == [job_id] and status["hosts"][0]["used"] == 1
    finally:
        worker.kill()
        worker.wait()


def test_status_does_not_count_an_ended_attempt_still_in_the_ledger(spool):
    """A worker drops an ended attempt's ledger entry only under its next lock: until then the
    ledger names a job that is already done. status cross-checks processing/<host>/."""
    (spool / "processing" / "h1").mkdir(parents=True, exist_ok=True)
    (spool / "processing" / "h1" / "20261203T000000.000000-aaaaaaaaaaaa.1.json").write_text("{}")
    ledger = {"host": "h1", "capacity": 4, "workers": {}, "unfit": {}, "running": {
        "20261203T000000.000000-aaaaaaaaaaaa": {"slots": 2, "attempt": 1},
        "20261203T000000.000000-bbbbbbbbbbbb": {"slots": 1, "attempt": 1},  # ended
        "20261203T000000.000000-aaaaaaaaaaab": {"slots": 1, "attempt": 2}}}  # another attempt
    (spool / "hosts" / "h1.json").write_text(json.dumps(ledger))
    doc = json.loads(ok(spool, "status", "--json").stdout)
    assert doc["hosts"][0]["running"] == ["20261203T000000.000000-aaaaaaaaaaaa"]
    assert doc["hosts"][0]["used"] == 2
    for key, empty in (("held", 0), ("paused", []), ("limits", []), ("blocked", [])):
        assert key in doc and isinstance(doc[key], type(empty))
    assert "slots 2/4" in ok(spool, "status").stdout


def test_attempt_start_is_taken_at_launch(spool):
    """Two jobs claimed in one pass: each attempt's started_at is its own launch."""
    first, second = submit(spool, "noop"), submit(spool, "noop")
    ok(spool, "worker", "--burst", "--capacity", "4", timeout=120)
    starts = {json.loads(ok(spool, "show", j, "--json").stdout)["history"][0]["started_at"]
              for j in (first, second)}
    assert len(starts) == 2


# -- logs --------------------------------------------------------------------------------------

def test_logs_lines_attempt_and_follow_exit(spool):
    job_id = submit(spool, "flaky")
    finish(spool, job_id)
    full = ok(spool, "logs", job_id).stdout
    assert "try 1" in full and "try 2" in full
    second = ok(spool, "logs", job_id, "--attempt", "2").stdout
    assert second.startswith("=== spool: attempt 2 of job") and "try 1" not in second
    assert "try 2" in second
    last = ok(spool, "logs", job_id, "-n", "1").stdout
    assert len(last.splitlines()) == 1 and last == full.splitlines(keepends=True)[-1]
    missing = spool_cli(spool, "logs", job_id, "--attempt", "7")
    assert missing.returncode == 3 and "no attempt 7" in missing.stderr
    follow = spool_cli(spool, "logs", "-f", job_id)
    assert follow.returncode == 1 and follow.stdout == full  # dead: like `wait`

    done_id = submit(spool, "echo", "-a", "message=hello")
    burst(spool)
    follow = spool_cli(spool, "logs", "-f", done_id)
    assert follow.returncode == 0 and "hello" in follow.stdout


def test_logs_of_a_job_that_has_not_run(spool):
    job_id = submit(spool, "noop", "--delay", "1h")
    shown = spool_cli(spool, "logs", job_id)
    assert shown.returncode == 0 and shown.stdout == ""
    assert f"job {job_id} has not run yet (pending)" in shown.stderr


# -- SPOOL_<OPTION>, read-only on a broken config, small messages -----------------------------

def test_options_read_spool_option_variables(spool):
    submit(spool, "noop")
    docs = json.loads(spool_cli_env(spool, {"SPOOL_JSON": "1"}, "ls").stdout)
    assert len(docs) == 1
    assert spool_cli_env(spool, {"SPOOL_LIMIT": "0", "SPOOL_QUIET": "1"}, "ls").stdout == ""
    # SPOOL_JOB is set in every task's environment: it must not filter `ls`
    assert len(spool_cli_env(spool, {"SPOOL_JOB": "other", "SPOOL_QUIET": "1"},
                             "ls").stdout.split()) == 1
    # a destructive confirmation is never taken from the environment
    assert "would purge" in spool_cli_env(spool, {"SPOOL_YES": "1"}, "purge", "all").stdout


def test_every_command_option_has_its_variable():
    from spool.cli import main
    from spool.cli.common import NO_ENVVAR

    ctx = main.make_context("spool", ["ls"])
    for name in main.list_commands(ctx):
        command = main.get_command(ctx, name)
        for param in command.params:
            longs = [o for o in getattr(param, "opts", []) if o.startswith("--")]
            if not longs or param.param_type_name != "option" or longs[0][2:] in NO_ENVVAR:
                continue
            assert param.envvar == "SPOOL_" + longs[0][2:].upper().replace("-", "_"), \
                (name, longs[0])
    assert main.get_command(ctx, "worker").params[0].envvar == "SPOOL_CAPACITY"


def spool_cli_env(spool: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "spool.cli", "--spool", str(spool), *args],
                          capture_output=True, text=True, env=cli_env(**env), timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done


def test_read_only_commands_work_on_a_broken_config_and_writers_refuse(spool):
    job_id = submit(spool, "noop")
    with open(spool / "spool.toml", "a") as config:
        config.write("\n[jobs.broken\n")
    for args in (["ls"], ["show", job_id], ["status"], ["logs", job_id], ["fsck"], ["events"],
                 ["explain", job_id]):
        done = spool_cli(spool, *args)
        assert done.returncode == 0, (args, done.stderr)
        assert done.stderr.count("spool.toml is broken") == 1, (args, done.stderr)
    assert job_id in ok(spool, "ls", "-q").stdout
    doctor = spool_cli(spool, "doctor")
    assert doctor.returncode == 1 and any(
        line.startswith("FAIL") and "spool.toml" in line for line in doctor.stdout.splitlines())
    for args in (["submit", "noop"], ["cancel", job_id], ["worker", "--burst"]):
        refused = spool_cli(spool, *args)
        assert refused.returncode == 2, (args, refused.stderr)
        assert "spool.toml" in refused.stderr.splitlines()[-1]


def test_retry_init_and_purge_say_what_they_do(spool, tmp_path):
    nothing = spool_cli(spool, "retry", "--all", "--job", "nosuchtype")
    assert nothing.returncode == 0
    assert "nothing to retry" in nothing.stderr and "'nosuchtype' is not a job type" in \
        nothing.stderr
    again = ok(spool, "init", "--group", "root").stdout
    assert "already exists; nothing changed" in again and "--group root" in again
    job_id = submit(spool, "noop")
    burst(spool)
    dry = ok(spool, "purge", "done").stdout.splitlines()
    assert dry == [f"would purge {job_id}",
                   "would purge 1 jobs; run again with --yes to delete them"]
    assert (spool / "done" / f"{job_id}.json").exists()
