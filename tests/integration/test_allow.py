"""`allow` per job type (DESIGN §13): only jobs owned by a listed user or a member of a listed
group run; any other ends in dead/ as `invalid`, the error naming the owner and the type, whether
it was submitted with the CLI, dropped, or planted with a forged `owner`. The owner survives
spool's own rewrites (a retry after a failed attempt). Root only (useradd, setpriv); a root
worker plays the daemon, test users submit."""

# ruff: noqa: F811  (fixtures imported from faultkit are parameters here)
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import CONFIG, read_job, spool_cli, state_files, wait_until
from faultkit import describe, run_as, sh_as, test_users  # noqa: F401

EARLY = "5-20260101T000000.000000Z"


def allow_config(users: dict) -> str:
    member, group = users["member"].name, users["group"]
    return CONFIG + f"""
[jobs.deploy]
command = ["true"]
allow = ["{member}"]

[jobs.ops]
command = ["true"]
allow = ["@{group}"]

[jobs.flaky]
command = ["sh", "-c", 'test "$SPOOL_ATTEMPT" -ge 2']
allow = ["{member}"]
"""


@pytest.fixture
def spool(test_users) -> Path:
    root = Path(tempfile.mkdtemp(prefix="spool-allow-", dir="/tmp"))
    os.chmod(root, 0o755)  # the test users must reach the spool
    spool = root / "spool"
    try:
        out = spool_cli(spool, "init", "--group", test_users["group"])
        assert out.returncode == 0, describe(out)
        (spool / "spool.toml").write_text(allow_config(test_users))
        os.chmod(spool / "spool.toml", 0o644)
        yield spool
    finally:
        shutil.rmtree(root, ignore_errors=True)


def submit_as(user, spool: Path, job: str) -> str:
    out = run_as(user, spool, "submit", job)
    assert out.returncode == 0, describe(out)
    return out.stdout.strip()


def drain(spool: Path) -> None:
    out = spool_cli(spool, "worker", "--burst", "--capacity", "2", host="daemon", timeout=120)
    assert out.returncode == 0, describe(out)


def outcome(spool: Path, job_id: str) -> tuple[str, str, str | None]:
    for state in ("done", "dead"):
        if (spool / state / f"{job_id}.json").exists():
            body = read_job(spool, state, job_id)
            return state, body["outcome"], body.get("error")
    raise AssertionError(f"{job_id} not finished: {state_files(spool)}")


def test_listed_user_and_group_member_run_others_are_invalid(spool, test_users):
    member, member2 = test_users["member"], test_users["member2"]
    ok_user = submit_as(member, spool, "deploy")
    ok_group = submit_as(member2, spool, "ops")
    refused = submit_as(member2, spool, "deploy")   # in the group, but deploy lists a user
    by_root = spool_cli(spool, "submit", "ops").stdout.strip()  # the daemon's user: not listed
    drain(spool)
    assert outcome(spool, ok_user)[:2] == ("done", "completed")
    assert outcome(spool, ok_group)[:2] == ("done", "completed")
    state, result, error = outcome(spool, refused)
    assert (state, result) == ("dead", "invalid")
    assert f"owner {member2.name}" in error and "'deploy'" in error
    state, result, error = outcome(spool, by_root)
    assert (state, result) == ("dead", "invalid") and "owner root" in error and "'ops'" in error


def test_a_drop_is_judged_by_its_owner(spool, test_users):
    member, member2 = test_users["member"], test_users["member2"]
    for user, name in ((member, "good"), (member2, "bad")):
        script = f"""printf '%s' '{{"id": "{name}", "job": "deploy"}}' > .{name}.json && \
mv .{name}.json {name}.json"""
        result = sh_as(user, script, spool / "pending")
        assert result.returncode == 0, describe(result)
    drain(spool)
    assert outcome(spool, "good")[:2] == ("done", "completed")
    state, result, error = outcome(spool, "bad")
    assert (state, result) == ("dead", "invalid") and member2.name in error and "deploy" in error


def test_a_forged_owner_field_is_not_believed(spool, test_users):
    member, member2 = test_users["member"], test_users["member2"]
    body = json.dumps({"id": "forged", "job": "deploy", "owner": member.uid})
    script = f"printf '%s' '{body}' > .f && mv .f {EARLY}-forged.json"
    result = sh_as(member2, script, spool / "pending")
    assert result.returncode == 0, describe(result)
    drain(spool)
    state, result, error = outcome(spool, "forged")
    assert (state, result) == ("dead", "invalid") and f"owner {member2.name}" in error


def test_the_owner_survives_a_retry_after_a_failed_attempt(spool, test_users):
    job_id = submit_as(test_users["member"], spool, "flaky")
    # a burst worker leaves a retry whose backoff has not passed: drain until it has run
    wait_until(lambda: drain(spool) or (spool / "done" / f"{job_id}.json").exists(), 60,
               "the retry to run")
    state, result, _ = outcome(spool, job_id)
    assert (state, result) == ("done", "completed")
    body = read_job(spool, "done", job_id)
    assert body["attempts"] == 2 and body["history"][0]["outcome"] == "failed"
    assert body["owner"] == test_users["member"].uid


def test_unknown_users_and_groups_are_a_config_error(spool, test_users):
    listed = spool_cli(spool, "validate")
    assert listed.returncode == 0 and f"ops: allow: @{test_users['group']}" in listed.stdout
    text = (spool / "spool.toml").read_text()
    (spool / "spool.toml").write_text(text + """
[jobs.typo]
command = ["true"]
allow = ["nosuchuser-x", "@nosuchgroup-x"]
""")
    out = spool_cli(spool, "validate")
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert "jobs.typo.allow" in last and "nosuchuser-x" in last and "nosuchgroup-x" in last


def test_a_processing_file_planted_by_a_member_is_judged_by_its_owner(spool, test_users):
    member, member2 = test_users["member"], test_users["member2"]
    drain(spool)  # makes processing/daemon/
    body = json.dumps({"id": "planted", "job": "deploy", "owner": member.uid,
                       "max_attempts": 3})
    script = f"printf '%s' '{body}' > ../../tmp/.p && mv ../../tmp/.p planted.1.json"
    result = sh_as(member2, script, spool / "processing" / "daemon")
    assert result.returncode == 0, describe(result)
    # recovered as an orphan (its flock is free) and requeued by the root worker: the
    # requeued file is root's, but the job is still member2's
    wait_until(lambda: drain(spool) or (spool / "dead" / "planted.json").exists(), 60,
               "the planted job to be judged")
    state, result, error = outcome(spool, "planted")
    assert (state, result) == ("dead", "invalid") and f"owner {member2.name}" in error


def test_hold_and_release_by_the_spools_user_keep_the_owner(spool, test_users):
    member = test_users["member"]
    out = run_as(member, spool, "submit", "deploy", "--delay", "1h")
    assert out.returncode == 0, describe(out)
    job_id = out.stdout.strip()
    for verb in ("hold", "release"):  # root rewrites the file each time
        assert spool_cli(spool, verb, job_id).returncode == 0
    body = json.loads(spool_cli(spool, "show", job_id, "--json").stdout)
    assert body["state"] == "pending" and body["owner"] == member.uid
    pending = next((spool / "pending").glob(f"*-{job_id}.json"))
    assert pending.stat().st_uid == 0
    # due now: rename it to a due name, as `release` would after its delay
    pending.rename(spool / "pending" / f"{EARLY}-{job_id}.json")
    drain(spool)
    assert outcome(spool, job_id)[:2] == ("done", "completed")
