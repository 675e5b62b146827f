"""spool fsck: each kind of damage, built by hand, is found read-only and repaired without
deleting a job body (what cannot be placed goes to dead/ or aside into tmp/)."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from crashkit import Crash, crash_on_rename
from conftest import make_spool
from spool import Spool, fsck_tmp, recovery
from spool.catalog import read_limit
from spool.fsck import fsck
from spool.layout import attempt_subject, pending_name, tmp_name
from spool.timeutil import UTC, parse_time

NOW = datetime.now(UTC) + timedelta(hours=2)  # files made now look settled and old
DEAD_PID = 999_999_999  # no such process


@pytest.fixture
def sp(tmp_path: Path) -> Spool:
    return Spool(make_spool(tmp_path / "spool"), host="h1", clock=lambda: NOW)


def body(sp: Spool, job_id: str = "J1", **fields: object) -> dict:
    made = sp.build("noop", id=job_id)
    made.update(fields)
    return made


def put(path: Path, content: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


def pending(sp: Spool, made: dict) -> Path:
    name = pending_name(made["priority"], parse_time(made["run_at"]), made["id"])
    return sp.path / "pending" / name


def check(sp: Spool, repair: bool = False):
    return fsck(sp.store, NOW, repair)


def found(report) -> list[tuple[str, str]]:
    return [(f.kind, str(f.path.relative_to(report.spool))) for f in report.problems]


def tree(root: Path) -> dict[str, bytes | str]:
    """Every file of the spool (but the journal) with its bytes: what a check must not change."""
    files: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if rel.startswith("events"):
            continue
        if path.is_symlink():
            files[rel] = f"-> {os.readlink(path)}"
        elif path.is_file():
            files[rel] = path.read_bytes()
        else:
            files[rel] = "dir"
    return files


def asides(sp: Spool) -> list[str]:
    return sorted(n for n in os.listdir(sp.path / "tmp") if n.startswith("aside,"))


def test_a_clean_spool_has_no_problems(sp):
    sp.submit("noop")
    put(sp.path / "done" / "J2.json", body(sp, "J2", outcome="completed"))
    report = check(sp)
    assert report.problems == [] and report.checked == 2


@pytest.mark.parametrize("content,why", [(b"", "is empty"), (b'{"id": "J1", ', "not valid JSON"),
                                         (b"[1, 2]", "JSON object")])
@pytest.mark.parametrize("state", ["done", "dead", "held"])
def test_unreadable_finished_file_goes_to_dead_with_its_original(sp, state, content, why):
    path = put(sp.path / state / "J1.json", content)
    report = check(sp)
    assert found(report) == [("unreadable", f"{state}/J1.json")]
    assert why in report.problems[0].detail and path.exists()  # read-only
    assert not check(sp, repair=True).unrepaired
    assert (sp.path / "dead" / "J1.orig").read_bytes() == content
    record = json.loads((sp.path / "dead" / "J1.json").read_text())
    assert record["outcome"] == "invalid" and "fsck" in record["error"]
    assert check(sp).problems == []


def test_unreadable_pending_and_processing_files_go_to_dead(sp):
    made = body(sp, "J1")
    put(pending(sp, made), b"{trunc")
    put(sp.path / "processing" / "h2" / "J2.1.json", b"")
    assert sorted(found(check(sp))) == [("unreadable", str(pending(sp, made).relative_to(sp.path))),
                                        ("unreadable", "processing/h2/J2.1.json")]
    assert not check(sp, repair=True).unrepaired
    assert sorted(os.listdir(sp.path / "dead")) == ["J1.json", "J1.orig", "J2.json", "J2.orig"]
    assert os.listdir(sp.path / "pending") == []


@pytest.mark.parametrize("make", ["symlink", "fifo", "directory", "too big"])
def test_special_or_oversized_job_files_are_buried_untouched(sp, make, tmp_path):
    path = sp.path / "done" / "J1.json"
    outside = put(tmp_path / "outside.json", body(sp, "J1", outcome="completed"))
    if make == "symlink":
        path.symlink_to(outside)
    elif make == "fifo":
        os.mkfifo(path)
    elif make == "directory":
        path.mkdir()
    else:
        put(path, b" " * read_limit(sp.config) + b"{}")
    assert found(check(sp)) == [("unreadable", "done/J1.json")]
    assert not check(sp, repair=True).unrepaired
    original = sp.path / "dead" / "J1.orig"
    assert os.path.lexists(original) and json.loads((sp.path / "dead/J1.json").read_text())
    if make == "symlink":
        assert original.is_symlink() and outside.exists()  # the link moved, never followed


def test_unreadable_copy_of_a_job_that_stands_elsewhere_is_set_aside(sp):
    put(sp.path / "done" / "J1.json", body(sp, "J1", outcome="completed"))
    put(sp.path / "dead" / "J1.json", b"garbage")
    report = check(sp, repair=True)
    assert found(report) == [("unreadable", "dead/J1.json")] and not report.unrepaired
    assert "aside" in report.problems[0].action
    assert not (sp.path / "dead" / "J1.json").exists() and len(asides(sp)) == 1
    assert (sp.path / "tmp" / asides(sp)[0]).read_bytes() == b"garbage"


def test_broken_record_of_a_rejected_drop_is_set_aside_and_rewritten(sp):
    put(sp.path / "dead" / "J1.orig", b"what was dropped")
    put(sp.path / "dead" / "J1.json", b"")
    assert not check(sp, repair=True).unrepaired
    assert json.loads((sp.path / "dead" / "J1.json").read_text())["outcome"] == "invalid"
    assert (sp.path / "dead" / "J1.orig").read_bytes() == b"what was dropped"
    assert len(asides(sp)) == 1


def test_body_without_a_valid_id_is_buried(sp):
    made = body(sp, "J1", outcome="completed")
    del made["id"]
    put(sp.path / "done" / "J1.json", made)
    assert found(check(sp)) == [("bad-id", "done/J1.json")]
    assert not check(sp, repair=True).unrepaired
    assert os.listdir(sp.path / "done") == [] and (sp.path / "dead" / "J1.orig").exists()


def test_misplaced_processing_file_is_buried(sp):
    put(sp.path / "processing" / "h2" / "J1.json", body(sp, "J1"))
    assert found(check(sp)) == [("misplaced", "processing/h2/J1.json")]
    assert not check(sp, repair=True).unrepaired
    assert json.loads((sp.path / "dead" / "J1.orig").read_text())["id"] == "J1"


def test_pending_name_disagreeing_with_body_is_renamed_to_the_body(sp):
    made = body(sp, "J1", priority=2)
    wrong = put(sp.path / "pending" / pending(sp, {**made, "priority": 7}).name, made)
    report = check(sp)
    assert found(report) == [("name-mismatch", f"pending/{wrong.name}")]
    assert not check(sp, repair=True).unrepaired
    assert os.listdir(sp.path / "pending") == [pending(sp, made).name]


def test_pending_body_that_cannot_be_named_is_buried(sp):
    made = body(sp, "J1")
    put(pending(sp, made), {**made, "run_at": "not a time"})
    assert [k for k, _ in found(check(sp))] == ["bad-field"]
    assert not check(sp, repair=True).unrepaired
    assert os.listdir(sp.path / "pending") == [] and (sp.path / "dead" / "J1.orig").exists()


def test_processing_attempt_mismatch_is_reported_and_left_alone(sp):
    path = put(sp.path / "processing" / "h2" / "J1.3.json", body(sp, "J1", attempts=0))
    report = check(sp, repair=True)
    assert found(report) == [("name-mismatch", "processing/h2/J1.3.json")]
    assert report.unrepaired and "left alone" in report.problems[0].action
    assert path.exists()


def test_processing_file_with_attempts_n_minus_one_is_fine(sp):
    put(sp.path / "processing" / "h2" / "J1.3.json", body(sp, "J1", attempts=2))
    assert check(sp).problems == []


def test_finished_file_named_for_another_job_is_renamed(sp):
    put(sp.path / "done" / "OTHER.json", body(sp, "J1", outcome="completed"))
    assert found(check(sp)) == [("name-mismatch", "done/OTHER.json")]
    assert not check(sp, repair=True).unrepaired
    assert os.listdir(sp.path / "done") == ["J1.json"]


@pytest.mark.parametrize("outcome,wrong,right", [("failed", "done", "dead"),
                                                 ("completed", "dead", "done")])
def test_outcome_in_the_wrong_directory_moves_to_the_right_one(sp, outcome, wrong, right):
    put(sp.path / wrong / "J1.json", body(sp, "J1", outcome=outcome))
    assert found(check(sp)) == [("wrong-state", f"{wrong}/J1.json")]
    assert not check(sp, repair=True).unrepaired
    assert os.listdir(sp.path / right) == ["J1.json"] and os.listdir(sp.path / wrong) == []


def test_finished_file_without_outcome_nor_staged_outcome_is_buried(sp):
    put(sp.path / "done" / "J1.json", body(sp, "J1", attempts=0))
    assert found(check(sp)) == [("unfilled", "done/J1.json")]
    assert not check(sp, repair=True).unrepaired
    assert json.loads((sp.path / "dead" / "J1.orig").read_text())["id"] == "J1"


def test_unfilled_file_with_its_staged_outcome_is_filled(sp):
    put(sp.path / "done" / "J1.json", body(sp, "J1", attempts=1))
    staged = put(sp.path / "tmp" / tmp_name("finish-done", "h1", DEAD_PID,
                                             attempt_subject("J1", 2)),
                 body(sp, "J1", attempts=2, outcome="completed"))
    assert found(check(sp)) == [("unfilled", f"tmp/{staged.name}")]
    assert not check(sp, repair=True).unrepaired
    assert json.loads((sp.path / "done" / "J1.json").read_text())["outcome"] == "completed"
    assert not staged.exists()


def test_unfilled_file_from_a_legacy_staged_outcome_is_filled(sp):
    put(sp.path / "dead" / "J1.json", body(sp, "J1", attempts=2))
    staged = put(sp.path / "tmp" / "J1.3.finish-dead", body(sp, "J1", attempts=3, outcome="failed"))
    os.utime(staged, (NOW.timestamp() - 7200,) * 2)
    assert [k for k, _ in found(check(sp))] == ["unfilled"]
    assert not check(sp, repair=True).unrepaired
    assert json.loads((sp.path / "dead" / "J1.json").read_text())["outcome"] == "failed"


def test_orphan_original_gets_its_record(sp):
    put(sp.path / "dead" / "J1.orig", b"dropped bytes")
    assert found(check(sp)) == [("orphan-original", "dead/J1.orig")]
    assert not check(sp, repair=True).unrepaired
    assert json.loads((sp.path / "dead" / "J1.json").read_text())["outcome"] == "invalid"
    assert (sp.path / "dead" / "J1.orig").read_bytes() == b"dropped bytes"


@pytest.mark.parametrize("keep,lose", [
    ("done", "pending"),            # the terminal copy records more
    ("processing", "pending"),      # attempt 2 claimed vs the body before it
    ("pending2", "processing"),     # requeued after attempt 2 vs the claim of attempt 2
    ("pending", "held"),
])
def test_a_job_in_two_states_keeps_the_copy_that_records_more(sp, keep, lose):
    entry = {"attempt": 1, "outcome": "failed"}
    paths = {
        "done": (sp.path / "done" / "J1.json", body(sp, "J1", attempts=2, outcome="completed",
                                                      history=[entry, entry])),
        "pending": (None, body(sp, "J1", attempts=1, history=[entry])),
        "pending2": (None, body(sp, "J1", attempts=2, history=[entry, entry])),
        "processing": (sp.path / "processing" / "h2" / "J1.2.json",
                       body(sp, "J1", attempts=1, history=[entry])),
        "held": (sp.path / "held" / "J1.json", body(sp, "J1", attempts=1, history=[entry])),
    }
    made = {}
    for state in (keep, lose):
        path, content = paths[state]
        made[state] = put(path or pending(sp, content), content)
    report = check(sp)
    assert found(report) == [("duplicate", str(made[lose].relative_to(sp.path)))]
    assert not check(sp, repair=True).unrepaired
    assert made[keep].exists() and not made[lose].exists()
    assert len(asides(sp)) == 1 and json.loads(
        (sp.path / "tmp" / asides(sp)[0]).read_text()) == paths[lose][1]
    assert check(sp).problems == []
    assert any("set aside" in text for _, text in check(sp).info)


def test_unreadable_drop_is_rejected_like_a_worker_would(sp):
    drop = put(sp.path / "pending" / "mine.json", b"{not json")
    os.utime(drop, (NOW.timestamp() - 60,) * 2)
    assert found(check(sp)) == [("unreadable-drop", "pending/mine.json")]
    assert not check(sp, repair=True).unrepaired
    assert os.listdir(sp.path / "pending") == []
    assert any(n.endswith(".orig") for n in os.listdir(sp.path / "dead"))


def test_young_or_parseable_drops_are_only_info(sp):
    put(sp.path / "pending" / "ok.json", {"job": "noop"})
    young = put(sp.path / "pending" / "young.json", b"{half")
    os.utime(young, (NOW.timestamp(),) * 2)
    report = check(sp)
    assert report.problems == [] and len(report.info) == 2


def hold(sp: Spool, verb: str, content: object, pid: int = DEAD_PID, host: str = "h1",
         attempt: int = 1) -> Path:
    job_id = content["id"] if isinstance(content, dict) else "J1"
    return put(sp.path / "tmp" / tmp_name(verb, host, pid, attempt_subject(job_id, attempt)),
               content)


def test_stale_hold_of_a_job_in_no_state_is_finished_by_recovery(sp):
    path = hold(sp, "retry", body(sp, "J1", attempts=3, outcome="failed"), attempt=0)
    report = check(sp)
    assert found(report) == [("stale-hold", f"tmp/{path.name}")]
    report = check(sp, repair=True)
    assert not report.unrepaired and "resolved by recovery" in report.problems[0].action
    assert not path.exists() and sp.get("J1").state == "pending"


def test_stale_hold_of_a_job_that_stands_elsewhere_is_set_aside(sp):
    sp.submit("noop", id="J1")
    path = hold(sp, "requeue", body(sp, "J1"))
    assert found(check(sp)) == [("stale-hold", f"tmp/{path.name}")]
    assert not check(sp, repair=True).unrepaired
    assert not path.exists() and len(asides(sp)) == 1 and sp.get("J1").state == "pending"


def test_unreadable_stale_hold_is_buried(sp):
    path = hold(sp, "requeue", b"{cut sho")
    assert [k for k, _ in found(check(sp))] == ["stale-hold"]
    assert not check(sp, repair=True).unrepaired
    assert not path.exists() and (sp.path / "dead" / "J1.orig").read_bytes() == b"{cut sho"


def test_hold_of_a_live_writer_is_no_problem(sp):
    hold(sp, "requeue", body(sp, "J1"), pid=os.getpid())
    hold(sp, "requeue", body(sp, "J2"), host="h2")  # another host, changed within the hour
    report = fsck(sp.store, datetime.now(UTC), repair=True)
    assert report.problems == [] and len(os.listdir(sp.path / "tmp")) == 2
    assert [k for k, _ in found(check(sp))] == ["stale-hold"]  # h2's, an hour later


def test_legacy_hold_is_renamed_into_the_scheme_and_recovered(sp):
    path = put(sp.path / "tmp" / f"J1.0.retry.h1.{DEAD_PID}", body(sp, "J1", outcome="failed"))
    assert found(check(sp)) == [("legacy-hold", f"tmp/{path.name}")]
    assert not check(sp, repair=True).unrepaired
    assert sp.get("J1").state == "pending" and os.listdir(sp.path / "tmp") == []


def test_legacy_staged_outcome_of_an_attempt_in_processing_is_renamed(sp):
    put(sp.path / "processing" / "h1" / "J1.1.json", body(sp, "J1"))
    staged = put(sp.path / "tmp" / "J1.1.finish-done", body(sp, "J1", outcome="completed"))
    os.utime(staged, (NOW.timestamp() - 7200,) * 2)
    assert found(check(sp)) == [("legacy-staged", "tmp/J1.1.finish-done")]
    assert not check(sp, repair=True).unrepaired
    [name] = os.listdir(sp.path / "tmp")
    assert name.startswith("finish-done,h1,") and name.endswith(",J1.1")


def test_staged_outcome_of_a_gone_attempt_is_set_aside_not_deleted(sp):
    sp.submit("noop", id="J1")
    staged = hold(sp, "finish-dead", body(sp, "J1", outcome="failed"))
    assert found(check(sp)) == [("stale-staged", f"tmp/{staged.name}")]
    assert not check(sp, repair=True).unrepaired
    assert not staged.exists() and len(asides(sp)) == 1


def test_partial_staged_outcome_holds_no_body_and_is_removed(sp):
    hold(sp, "finish-done", b'{"id": "J1", "outc')
    assert [k for k, _ in found(check(sp))] == ["stale-staged"]
    assert not check(sp, repair=True).unrepaired
    assert os.listdir(sp.path / "tmp") == []


def test_staged_outcome_of_an_attempt_still_in_processing_is_no_problem(sp):
    put(sp.path / "processing" / "h1" / "J1.1.json", body(sp, "J1"))
    hold(sp, "finish-done", body(sp, "J1", outcome="completed"))
    report = check(sp)
    assert report.problems == [] and "waits for the recovery" in report.info[0][1]


def claimed(sp: Spool, job_id: str) -> Path:
    sp.submit("noop", id=job_id)
    name = next(n for n in sp.store.pending_names() if job_id in n)
    host_dir = sp.store.layout.host_processing("h1")
    host_dir.mkdir(exist_ok=True)
    return sp.store.claim(name, job_id, 1, host_dir, NOW)


def after_the_crash(monkeypatch) -> None:
    """The crashed writer (this very process, here) counts as gone from now on."""
    monkeypatch.undo()
    monkeypatch.setattr(fsck_tmp, "pid_alive", lambda pid: False)
    monkeypatch.setattr(recovery, "pid_alive", lambda pid: False)


def test_finish_cut_between_commit_and_fill_is_filled(sp, monkeypatch):
    path = claimed(sp, "J1")
    crash_on_rename(monkeypatch, 2)  # 1: processing -> done/ (the commit), 2: the fill
    with pytest.raises(Crash):
        recovery.settle(sp.store, path, sp.store.read(path), 1, "completed", NOW)
    after_the_crash(monkeypatch)
    assert [k for k, _ in found(check(sp))] == ["unfilled"]
    assert not check(sp, repair=True).unrepaired
    assert sp.get("J1").outcome == "completed" and check(sp).problems == []


def test_requeue_cut_after_its_hold_is_finished_by_recovery(sp, monkeypatch):
    path = claimed(sp, "J1")
    crash_on_rename(monkeypatch, 2)  # 1: processing -> tmp/ hold, 2: staged body -> pending/
    with pytest.raises(Crash):
        recovery.settle(sp.store, path, sp.store.read(path), 1, "failed", NOW)
    after_the_crash(monkeypatch)
    assert [k for k, _ in found(check(sp))] == ["stale-hold"]
    assert not check(sp, repair=True).unrepaired
    job = sp.get("J1")
    assert job.state == "pending" and job.attempts == 1 and check(sp).problems == []


def test_stale_scratch_with_a_body_is_set_aside_and_without_one_removed(sp):
    with_body = put(sp.path / "tmp" / tmp_name("stage", "h1", DEAD_PID), body(sp, "J9"))
    without = put(sp.path / "tmp" / tmp_name("result", "h1", DEAD_PID, "J9.1"), b'{"x": 1}')
    foreign = put(sp.path / "tmp" / "stage.123.abcd", b"")
    os.utime(foreign, (NOW.timestamp() - 7200,) * 2)
    young = put(sp.path / "tmp" / "whatever", b"")
    os.utime(young, (NOW.timestamp(),) * 2)
    report = check(sp)
    assert sorted(found(report)) == sorted([("stale-scratch", f"tmp/{with_body.name}"),
                                            ("stale-scratch", f"tmp/{without.name}"),
                                            ("stale-scratch", "tmp/stage.123.abcd")])
    assert not check(sp, repair=True).unrepaired
    names = os.listdir(sp.path / "tmp")
    assert sorted(names) == sorted([*asides(sp), "whatever"]) and len(asides(sp)) == 1


def marker(sp: Spool, kind: str, value: str, job_id: str, age: float = 3600) -> Path:
    path = sp.store.markers.marker_path(kind, value)
    put(path, {"id": job_id, kind: value, "token": None})
    os.utime(path, (NOW.timestamp() - age,) * 2)
    return path


def test_stale_unique_and_id_markers_are_removed_live_ones_kept(sp):
    put(sp.path / "done" / "J1.json", body(sp, "J1", outcome="completed"))
    put(sp.path / "held" / "J3.json", body(sp, "J3"))
    finished_key = marker(sp, "key", "k1", "J1")
    finished_id = marker(sp, "id", "J1", "J1")        # ids stay taken while the job exists
    gone = marker(sp, "id", "J2", "J2")
    held_key = marker(sp, "key", "k3", "J3")          # a held job keeps its unique key
    young = marker(sp, "key", "k4", "J4", age=10)     # a submit between link and rename
    report = check(sp)
    assert sorted(found(report)) == sorted([("stale-marker", f"unique/{finished_key.name}"),
                                            ("stale-marker", f"unique/{gone.name}")])
    assert not check(sp, repair=True).unrepaired
    assert sorted(os.listdir(sp.path / "unique")) == sorted(
        [finished_id.name, held_key.name, young.name])


def test_bad_marker_is_removed_once_old(sp):
    path = put(sp.path / "unique" / ("0" * 40), b"junk")
    os.utime(path, (NOW.timestamp() - 3600,) * 2)
    assert found(check(sp)) == [("bad-marker", f"unique/{'0' * 40}")]
    assert not check(sp, repair=True).unrepaired and os.listdir(sp.path / "unique") == []


def test_cancel_requests_of_finished_or_gone_jobs_are_removed(sp):
    put(sp.path / "done" / "J1.json", body(sp, "J1", outcome="completed"))
    sp.submit("noop", id="J3")
    for job_id in ("J1", "J2", "J3"):
        put(sp.path / "cancel" / job_id, b"")
    assert sorted(found(check(sp))) == [("stale-cancel", "cancel/J1"),
                                        ("stale-cancel", "cancel/J2")]
    assert not check(sp, repair=True).unrepaired
    assert os.listdir(sp.path / "cancel") == ["J3"]  # a requeued job is still to be cancelled


def token(sp: Spool, content: object, index: int = 0) -> Path:
    path = put(sp.path / "limits" / "smtp" / "_" / str(index), content)
    os.utime(path, (NOW.timestamp() - 3600,) * 2)
    return path


def test_tokens_whose_attempt_is_not_in_processing_are_removed(sp):
    put(sp.path / "processing" / "h2" / "J1.1.json", body(sp, "J1"))
    live = token(sp, {"id": "J1", "attempt": 1, "host": "h2"}, 0)
    stale = token(sp, {"id": "J2", "attempt": 1, "host": "h2"}, 1)
    unknown = token(sp, b"not json", 2)
    report = check(sp, repair=True)
    assert sorted(found(report)) == [("bad-token", "limits/smtp/_/2"),
                                     ("stale-token", "limits/smtp/_/1")]
    assert [f.kind for f in report.unrepaired] == ["bad-token"]  # never removed unread
    assert live.exists() and not stale.exists() and unknown.exists()


def test_missing_state_directory_is_created(sp):
    os.rmdir(sp.path / "dead")
    assert found(check(sp)) == [("layout", "dead")]
    assert not check(sp, repair=True).unrepaired and (sp.path / "dead").is_dir()


def test_nfs_and_fuse_leftovers_are_info_not_problems(sp):
    put(sp.path / "done" / ".nfs0000000012345", b"x")
    put(sp.path / "tmp" / ".fuse_hidden000001", b"x")
    report = check(sp)
    assert report.problems == [] and len(report.info) == 2


def test_a_check_without_repair_changes_nothing(sp):
    made = body(sp, "J1", priority=2)
    put(sp.path / "pending" / pending(sp, {**made, "priority": 7}).name, made)
    put(sp.path / "done" / "J2.json", b"")
    put(sp.path / "done" / "J3.json", body(sp, "J3", outcome="failed"))
    hold(sp, "requeue", body(sp, "J4"))
    marker(sp, "id", "J5", "J5")
    put(sp.path / "cancel" / "J6", b"")
    before = tree(sp.path)
    assert len(check(sp).problems) == 6
    assert tree(sp.path) == before


def test_hostile_names_are_reported_printably_and_buried(sp):
    raw = os.path.join(os.fsencode(sp.path / "done"), b"\xff\xfe.json")
    with open(raw, "wb") as out:
        out.write(b"{nope")
    report = check(sp)
    assert [f.kind for f in report.problems] == ["unreadable"]
    json.dumps(report.to_json(), ensure_ascii=False).encode()  # printable: no lone surrogates
    assert not check(sp, repair=True).unrepaired
    [orig] = [n for n in os.listdir(sp.path / "dead") if n.endswith(".orig")]
    assert (sp.path / "dead" / orig).read_bytes() == b"{nope"
    record = json.loads((sp.path / "dead" / orig.replace(".orig", ".json")).read_text())
    assert "\\xff" in record["error"]
