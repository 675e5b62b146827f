"""Dependencies of every kind (DESIGN §12): `after`, `after_any`, `after_failed`, their end
rules, blocked jobs (status, explain, block/unblock events) and `uid` on journal events (§13).
Real CLI processes on real spools."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

import pytest
from conftest import (
    CONFIG,
    make_spool,
    read_job,
    spool_cli,
    start_cli,
    state_files,
    wait_until,
)

from spool import Spool
from spool.errors import InvalidInput, JobNotFound

CHAIN_CONFIG = CONFIG + """
[jobs.build]
command = ["sh", "-c", "exit {code}"]
max_attempts = 1
"""


@pytest.fixture()
def spool(tmp_path: Path) -> Path:
    return make_spool(tmp_path / "spool", CHAIN_CONFIG)


def cli(spool: Path, *args: str, host: str = "test") -> str:
    out = spool_cli(spool, *args, host=host)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def burst(spool: Path, host: str = "a") -> None:
    cli(spool, "worker", "--burst", "--capacity", "2", host=host)


def final(spool: Path, job_id: str) -> tuple[str, dict]:
    for state in ("done", "dead"):
        if (spool / state / f"{job_id}.json").exists():
            return state, read_job(spool, state, job_id)
    raise AssertionError(f"{job_id} did not finish: {state_files(spool)}")


def events(spool: Path, *args: str) -> list[dict]:
    return json.loads(cli(spool, "events", "--json", *args))


def submit_chain(spool: Path, code: int) -> dict[str, str]:
    """build → deploy (after) → notify (after_any) → rollback (after_failed build)."""
    build = cli(spool, "submit", "build", "-a", f"code:={code}", "--id", "build")
    deploy = cli(spool, "submit", "noop", "--id", "deploy", "--after", build)
    notify = cli(spool, "submit", "noop", "--id", "notify", "--after-any", deploy)
    rollback = cli(spool, "submit", "noop", "--id", "rollback", "--after-failed", build)
    return {"build": build, "deploy": deploy, "notify": notify, "rollback": rollback}


def test_chain_when_build_succeeds(spool):
    ids = submit_chain(spool, 0)
    body = json.loads(cli(spool, "show", "rollback", "--json"))
    assert body["after_failed"] == ["build"] and body["after"] == []
    burst(spool)
    state, build = final(spool, ids["build"])
    assert (state, build["outcome"]) == ("done", "completed")
    state, deploy = final(spool, ids["deploy"])
    assert (state, deploy["outcome"]) == ("done", "completed")
    state, notify = final(spool, ids["notify"])
    assert (state, notify["outcome"]) == ("done", "completed") and notify["attempts"] == 1
    state, rollback = final(spool, ids["rollback"])
    assert (state, rollback["outcome"], rollback["attempts"]) == ("done", "cancelled", 0)
    assert "'build' (after_failed) ended completed" in rollback["error"]
    assert "never fail" in rollback["error"]


def test_chain_when_build_fails(spool):
    ids = submit_chain(spool, 3)
    burst(spool)
    state, build = final(spool, ids["build"])
    assert (state, build["outcome"], build["exit_code"]) == ("dead", "failed", 3)
    state, deploy = final(spool, ids["deploy"])
    assert (state, deploy["outcome"], deploy["attempts"]) == ("done", "cancelled", 0)
    assert deploy["error"].startswith("dependency 'build' (after) ended dead (failed)")
    assert deploy["history"] == []
    # the cancelled deploy finished: notify runs after it all the same
    state, notify = final(spool, ids["notify"])
    assert (state, notify["outcome"], notify["attempts"]) == ("done", "completed", 1)
    state, rollback = final(spool, ids["rollback"])
    assert (state, rollback["outcome"], rollback["attempts"]) == ("done", "completed", 1)
    cancels = [e for e in events(spool, "--id", "deploy") if e["event"] == "cancel"]
    assert len(cancels) == 1 and "build" in cancels[0]["error"]


def test_after_any_waits_while_its_dependency_runs(spool):
    first = cli(spool, "submit", "noop", "--delay", "1h")
    later = cli(spool, "submit", "noop", "--after-any", first)
    burst(spool)
    assert set(state_files(spool)["pending"]) == {first, later}
    listed = json.loads(cli(spool, "explain", later, "--json"))
    gate = next(g for g in listed["gates"] if g["gate"] == "after")
    assert gate["verdict"] == "waiting" and "after_any" in gate["detail"]
    assert f"after_any {first}" in cli(spool, "ls", "pending")
    cli(spool, "cancel", first)
    burst(spool)
    assert final(spool, later)[1]["outcome"] == "completed"


@pytest.mark.parametrize("option", ["--after", "--after-any", "--after-failed"])
def test_submit_with_an_unknown_dependency_writes_nothing(spool, option):
    known = cli(spool, "submit", "noop", "--delay", "1h")
    before = sorted(p.name for p in spool.rglob("*") if p.is_file())
    out = spool_cli(spool, "submit", "noop", option, known, option, "nosuchjob")
    assert out.returncode == 3, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "'nosuchjob'" in last
    assert sorted(p.name for p in spool.rglob("*") if p.is_file()) == before
    keyword = option[2:].replace("-", "_")
    with pytest.raises(JobNotFound, match="nosuchjob"):
        Spool(spool).submit("noop", **{keyword: ["nosuchjob"]})
    with pytest.raises(JobNotFound, match="nosuchjob"):
        Spool(spool).submit_many([{"job": "noop"}, {"job": "noop", keyword: ["nosuchjob"]}])
    assert state_files(spool)["pending"] == [known]


def test_a_job_cannot_wait_for_itself(spool):
    out = spool_cli(spool, "submit", "noop", "--id", "me", "--after-any", "me")
    assert out.returncode == 2 and "'me' (after_any) is the job itself" in out.stderr
    with pytest.raises(InvalidInput):
        Spool(spool).submit_many([{"job": "noop", "id": "me", "after": ["me"]}])
    assert state_files(spool)["pending"] == []


def test_submit_many_may_name_a_batchmate(spool):
    ids = Spool(spool).submit_many([{"job": "noop", "id": "one"},
                                    {"job": "noop", "after_any": ["one"]}])
    burst(spool)
    assert final(spool, ids[1])[1]["outcome"] == "completed"


def test_purged_dependency_blocks_until_cancelled(spool):
    first = cli(spool, "submit", "noop")
    second = cli(spool, "submit", "noop", "--after-any", first, "--delay", "2s")
    third = cli(spool, "submit", "noop", "--delay", "2s")  # due soon after it, and runs
    burst(spool)
    assert state_files(spool)["done"] == [first]
    cli(spool, "purge", "done", "--yes")
    # the third was submitted a CLI start later than the second: wait for both to be due
    wait_until(lambda: all("due since" in cli(spool, "explain", job) for job in (second, third)),
               30, "second and third to be due")
    burst(spool)
    assert state_files(spool)["pending"] == [second]   # third ran; second cannot
    doc = json.loads(cli(spool, "explain", second, "--json"))
    assert doc["summary"].startswith("blocked") and first in doc["summary"]
    status = json.loads(cli(spool, "status", "--json"))
    assert status["blocked"] == [second]
    assert status["oldest_pending_age"] is None       # the only due job is blocked
    assert f"blocked (a dependency is missing; see 'spool explain ID'): {second}" \
        in cli(spool, "status")
    assert "blocked: after_any " in cli(spool, "ls", "pending")
    burst(spool, host="a")                            # a second pass: no second event
    blocks = [e for e in events(spool, "--id", second) if e["event"] == "block"]
    assert len(blocks) == 1 and blocks[0]["dependency"] == first
    cli(spool, "cancel", second)
    burst(spool)
    kinds = [e["event"] for e in events(spool, "--id", second)]
    assert kinds[-2:] == ["cancel", "unblock"] and kinds.count("unblock") == 1
    assert json.loads(cli(spool, "status", "--json"))["blocked"] == []


def test_events_carry_the_uid_of_worker_cli_and_reaper(spool):
    job = cli(spool, "submit", "noop")
    burst(spool)
    # a lost attempt, so that the reaper writes an event of its own
    (spool / "processing" / "gone").mkdir()
    lost = cli(spool, "submit", "noop", "--id", "lostjob")
    pending = next(n for n in os.listdir(spool / "pending") if n.endswith("-lostjob.json"))
    os.rename(spool / "pending" / pending, spool / "processing" / "gone" / "lostjob.1.json")
    held = spool / "processing" / "gone" / "lostjob.1.json"
    wait_until(lambda: cli(spool, "reap", "--once", host="r") is not None
               and not held.exists(), 60, "the reaper to take the lost job back")
    every = events(spool)
    assert every and all(e["uid"] == os.geteuid() for e in every)
    made = {(e["event"], e["host"]) for e in every}
    assert ("submit", "test") in made and ("claim", "a") in made
    assert any(e["host"] == "r" and e["id"] == lost for e in every)
    human = cli(spool, "events", "--id", job)
    assert f"user={pwd.getpwuid(os.geteuid()).pw_name}" in human


def drop(spool: Path, name: str, body: dict) -> None:
    (spool / "pending" / f".{name}").write_text(json.dumps(body))
    os.rename(spool / "pending" / f".{name}", spool / "pending" / f"{name}.json")


def blocked_now(spool: Path) -> list[str]:
    return json.loads(cli(spool, "status", "--json"))["blocked"]


def test_a_running_worker_blocks_and_unblocks(spool, tmp_path):
    worker = start_cli(spool, "worker", "--capacity", "2", host="w", log=tmp_path / "w.log")
    try:
        drop(spool, "cancelled", {"id": "cancelled", "job": "noop", "after": ["ghost1"]})
        drop(spool, "revived", {"id": "revived", "job": "noop", "after_failed": ["ghost2"]})
        wait_until(lambda: blocked_now(spool) == ["cancelled", "revived"], 30, "both blocked")
        cli(spool, "cancel", "cancelled")
        wait_until(lambda: blocked_now(spool) == ["revived"], 30, "the cancelled one unblocked")
        # its dependency comes back (a job under that id), and then fails: the dependent runs
        cli(spool, "submit", "fail", "--id", "ghost2", "--max-attempts", "1", "--delay", "1s")
        wait_until(lambda: (spool / "done" / "revived.json").exists(), 60, "revived to run")
        assert read_job(spool, "done", "revived")["outcome"] == "completed"
        assert blocked_now(spool) == []
    finally:
        worker.terminate()
        worker.wait(30)
    for job_id in ("cancelled", "revived"):
        kinds = [e["event"] for e in events(spool, "--id", job_id)]
        assert kinds.count("block") == 1 and kinds.count("unblock") == 1, kinds
