"""The command line: exit codes, messages naming the bad value, nothing written on error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import state_files
from spool.cli import main


@pytest.fixture
def cli(spool_dir: Path):
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(main, ["--spool", str(spool_dir), "--host", "t", *args],
                             input=input, catch_exceptions=False)
    return invoke


def last_error(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def nothing_written(spool_dir: Path) -> bool:
    return not any(state_files(spool_dir).values()) and not os.listdir(spool_dir / "unique")


def test_init_creates_layout_and_second_init_changes_nothing(tmp_path):
    runner = CliRunner()
    target = tmp_path / "new"
    first = runner.invoke(main, ["--spool", str(target), "init"])
    assert first.exit_code == 0
    for sub in ("tmp", "pending", "processing", "done", "dead", "hosts", "logs", "cancel",
                "unique", "cron", "events", "held", "paused", "limits"):
        assert (target / sub).is_dir(), sub
    (target / "spool.toml").write_text("# mine\n")
    second = runner.invoke(main, ["--spool", str(target), "init"])
    assert second.exit_code == 0 and "already exists" in second.output
    assert (target / "spool.toml").read_text() == "# mine\n"


def test_missing_spool_says_how_to_create_it(tmp_path):
    result = CliRunner().invoke(main, ["--spool", str(tmp_path / "nope"), "ls"])
    assert result.exit_code == 2
    assert " init" in last_error(result) and last_error(result).startswith("Error:")


def test_submit_prints_id_and_show_json_has_fields_state_and_path(cli, spool_dir):
    result = cli("submit", "echo", "-a", "message=hi", "-a", "n:=3", "--priority", "2")
    assert result.exit_code == 0
    job_id = result.output.strip()
    shown = json.loads(cli("show", job_id, "--json").output)
    assert shown["id"] == job_id and shown["state"] == "pending"
    assert shown["args"] == {"message": "hi", "n": 3} and shown["priority"] == 2
    assert Path(shown["path"]).is_absolute() and Path(shown["path"]).exists()
    listed = json.loads(cli("ls", "--json").output)
    assert [j["id"] for j in listed] == [job_id]


def test_args_from_stdin(cli):
    job_id = cli("submit", "add", "-", input='{"a": 1, "b": 2}').output.strip()
    assert json.loads(cli("show", job_id, "--json").output)["args"] == {"a": 1, "b": 2}


@pytest.mark.parametrize("args,needle", [
    (["nosuch"], "'nosuch'"),
    (["noop", "--id", ".hidden"], "'.hidden'"),
    (["noop", "--id", "a/b"], "'a/b'"),
    (["noop", "--id", "-x"], "'-x'"),
    (["noop", "--priority", "10"], "10"),
    (["noop", "--delay", "soon"], "'soon'"),
    (["noop", "--timeout", "-3"], "'-3'"),
    (["noop", "{not json"], "'{not json'"),
    (["noop", "--at", "yesterday"], "'yesterday'"),
    (["noop", "--after", "../x"], "'../x'"),
    (["noop", "--slots", "0"], "0"),
    (["noop", "--max-attempts", "0"], "0"),
    (["noop", "[1]", "-a", "k=v"], "[1]"),
])
def test_bad_submit_input_exit_2_names_value_and_writes_nothing(cli, spool_dir, args, needle):
    result = cli("submit", *args)
    assert result.exit_code == 2, result.output
    assert last_error(result).startswith("Error:") and needle in last_error(result)
    assert nothing_written(spool_dir)


def test_conflicts_exit_4(cli, spool_dir):
    assert cli("submit", "noop", "--id", "one").exit_code == 0
    taken = cli("submit", "noop", "--id", "one")
    assert taken.exit_code == 4 and "'one'" in last_error(taken)
    assert cli("submit", "noop", "--unique", "k").exit_code == 0
    held = cli("submit", "noop", "--unique", "k")
    assert held.exit_code == 4 and "'k'" in last_error(held)
    assert cli("cancel", "one").exit_code == 0
    assert cli("cancel", "one").exit_code == 4
    assert cli("retry", "one").exit_code == 4
    assert state_files(spool_dir)["pending"].__len__() == 1


def test_unknown_ids_exit_3(cli):
    for command in (["show", "zz"], ["cancel", "zz"], ["retry", "zz"], ["wait", "zz"],
                    ["logs", "zz"]):
        result = cli(*command)
        assert result.exit_code == 3, command
        assert "'zz'" in last_error(result)


def test_cancel_pending_and_wait_exit_5(cli, spool_dir):
    job_id = cli("submit", "noop").output.strip()
    assert cli("cancel", job_id).exit_code == 0
    body = json.loads((spool_dir / "done" / f"{job_id}.json").read_text())
    assert body["outcome"] == "cancelled" and body["finished_at"]
    assert cli("wait", job_id).exit_code == 5


def test_wait_times_out_with_124(cli):
    job_id = cli("submit", "noop").output.strip()
    result = cli("wait", job_id, "--timeout", "0.2")
    assert result.exit_code == 124 and job_id in last_error(result)


def test_unique_key_is_released_by_cancel(cli):
    first = cli("submit", "noop", "--unique", "nightly").output.strip()
    cli("cancel", first)
    assert cli("submit", "noop", "--unique", "nightly").exit_code == 0


def test_ls_filters_and_limits(cli):
    for _ in range(3):
        cli("submit", "noop")
    cli("submit", "echo", "-a", "message=x", "--priority", "0")
    listed = json.loads(cli("ls", "pending", "--json").output)
    assert listed[0]["job"] == "echo"  # priority 0 first
    assert len(json.loads(cli("ls", "pending", "--limit", "2", "--json").output)) == 2
    assert len(json.loads(cli("ls", "--job", "noop", "--json").output)) == 3
    assert cli("ls", "bogus").exit_code == 2


def test_purge_needs_yes(cli, spool_dir):
    job_id = cli("submit", "noop").output.strip()
    cli("cancel", job_id)
    dry = cli("purge", "done")
    assert "would purge 1" in dry.output and (spool_dir / "done" / f"{job_id}.json").exists()
    assert cli("purge", "done", "--older-than", "1h", "--yes").output.startswith("purged 0")
    assert cli("purge", "done", "--yes").exit_code == 0
    assert not (spool_dir / "done" / f"{job_id}.json").exists()
    assert cli("show", job_id).exit_code == 3


def test_status_json_shape(cli):
    cli("submit", "noop")
    cli("submit", "noop", "--delay", "1h")
    doc = json.loads(cli("status", "--json").output)
    assert doc["counts"] == {"pending": 2, "processing": 0, "done": 0, "dead": 0}
    assert doc["oldest_pending_age"] is not None and doc["oldest_pending_age"] >= 0
    assert doc["hosts"] == [] and doc["unclaimable"] == []
    assert set(doc) >= {"spool", "counts", "oldest_pending_age", "hosts", "unclaimable",
                        "schedules"}


def test_validate(cli, spool_dir, tmp_path):
    assert cli("validate").exit_code == 0
    good = tmp_path / "good.json"
    good.write_text('{"job": "noop"}')
    assert cli("validate", str(good)).exit_code == 0
    bad = tmp_path / "bad.json"
    bad.write_text('{"job": "nosuch"}')
    result = cli("validate", str(bad))
    assert result.exit_code == 2 and "nosuch" in last_error(result)
    toml = tmp_path / "x.toml"
    toml.write_text("[jobs.a]\ncommand = 5\n")
    result = cli("validate", str(toml))
    assert result.exit_code == 2 and "jobs.a.command" in last_error(result)


def test_broken_config_exit_2_names_file_and_key(cli, spool_dir):
    (spool_dir / "spool.toml").write_text("[defaults]\ntimeout = \"never\"\n")
    result = cli("submit", "noop")
    assert result.exit_code == 2
    assert "spool.toml" in last_error(result) and "defaults.timeout" in last_error(result)


def test_env_vars_select_spool(spool_dir):
    result = CliRunner().invoke(main, ["status", "--json"], env={"SPOOL_DIR": str(spool_dir)})
    assert json.loads(result.output)["spool"] == str(spool_dir)


def test_validate_names_a_bad_id_in_a_job_file(cli, tmp_path):
    bad = tmp_path / "job.json"
    bad.write_text('{"job": "noop", "id": "../up"}')
    result = cli("validate", str(bad))
    assert result.exit_code == 2 and "'../up'" in last_error(result)


def test_retry_takes_the_unique_key_again(cli, spool_dir):
    from spool import Spool
    from spool.operations import retry

    sp = Spool(spool_dir, host="t")
    first = sp.submit("noop", unique="k1")
    sp.cancel(first)  # releases k1 ...
    body = json.loads((spool_dir / "done" / f"{first}.json").read_text())
    dead = spool_dir / "dead" / f"{first}.json"
    (spool_dir / "done" / f"{first}.json").rename(dead)  # ... stand-in for a job that died
    dead.write_text(json.dumps({**body, "outcome": "failed"}))
    second = sp.submit("noop", unique="k1")
    result = cli("retry", first)
    assert result.exit_code == 4 and "'k1'" in last_error(result)
    sp.cancel(second)
    retry(sp.store, first, sp.clock())
    held = cli("submit", "noop", "--unique", "k1")
    assert held.exit_code == 4 and first in last_error(held)
