"""The reaper's sweeps: retention and marker release a bounded amount per pass, resumed where
the last pass stopped, everything due removed in the end, nothing else (docs/protocol.md, The
reaper's sweeps)."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta

import pytest

from conftest import make_spool, state_files
from spool import Spool, sweep
from spool.layout import new_id
from spool.reaper import Reaper
from spool.timeutil import UTC

DAY = 86400.0


class Clock:
    """A CLOCK_BOOTTIME stand-in the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def finished(sp: Spool, state: str, age_days: float, job_id: str | None = None) -> str:
    """A finished job file `age_days` old by its mtime."""
    job_id = job_id or new_id(datetime.now(UTC))
    path = sp.path / state / f"{job_id}.json"
    path.write_text(json.dumps({"id": job_id, "job": "noop", "outcome": "completed"}))
    stamp = time.time() - age_days * DAY
    os.utime(path, (stamp, stamp))
    return job_id


def passes(reaper: Reaper, clock: Clock, n: int, every: float = 15.0) -> None:
    for _ in range(n):
        reaper.step(datetime.now(UTC))
        clock.now += every


def test_retention_is_bounded_per_pass_and_finishes_in_later_passes(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "BUDGET", 6)
    monkeypatch.setattr(sweep, "QUEUE", 4)
    sp = Spool(make_spool(tmp_path / "spool"), host="a")
    old = [finished(sp, "done", 40) for _ in range(12)] + [finished(sp, "dead", 40)]
    kept = [finished(sp, "done", 1) for _ in range(3)]
    clock = Clock()
    reaper = Reaper(Spool(sp.path, host="r"), clock=clock)
    reaper.step(datetime.now(UTC))
    left = state_files(sp.path)
    assert 0 < 16 - len(left["done"]) - len(left["dead"]) <= 6  # some, never more than BUDGET
    passes(reaper, clock, 10)
    left = state_files(sp.path)
    assert sorted(left["done"]) == sorted(kept) and left["dead"] == []
    assert not set(old) & set(left["done"])


def test_a_file_aged_by_hand_is_purged_by_a_first_walk_whatever_its_name_says(tmp_path):
    sp = Spool(make_spool(tmp_path / "spool"), host="a")
    job_id = sp.submit("noop")  # a generated id: its name says "created just now"
    sp.cancel(job_id)
    stamp = time.time() - 40 * DAY
    os.utime(sp.path / "done" / f"{job_id}.json", (stamp, stamp))
    Reaper(Spool(sp.path, host="r"), clock=Clock()).step(datetime.now(UTC))
    assert state_files(sp.path)["done"] == []


def test_young_names_are_not_stated_between_full_walks(tmp_path, monkeypatch):
    sp = Spool(make_spool(tmp_path / "spool"), host="a")
    for _ in range(5):
        finished(sp, "done", 0)
    clock = Clock()
    reaper = Reaper(Spool(sp.path, host="r"), clock=clock)
    reaper.step(datetime.now(UTC))  # the first walk is full
    walk = json.loads((sp.path / "hosts" / "r.reaper.json").read_text())["sweeps"]["done"]
    assert walk["rest_until"] - clock.now >= sweep.RETENTION_EVERY
    aged = finished(sp, "done", 40)  # a generated id of today, aged by hand
    visited: list[str] = []
    monkeypatch.setattr(sweep.Sweeps, "_visit_finished",
                        lambda self, state, entry, now, walk: visited.append(entry))
    clock.now += walk["rest_until"] - clock.now  # the walk's rest is over
    reaper.step(datetime.now(UTC))
    assert visited == []  # every name says it is young: no stat, no read
    clock.now += sweep.FULL_EVERY  # a day later the full walk looks at every file
    passes(reaper, clock, 2)
    assert aged in {entry[:-5] for entry in visited}


def test_a_resting_walk_starts_again_when_a_retention_is_shortened(tmp_path):
    sp = Spool(make_spool(tmp_path / "spool"), host="a")
    job_id = finished(sp, "done", 2, "report-1")  # a name without a time: stat'ed
    clock = Clock()
    reaper = Reaper(Spool(sp.path, host="r"), clock=clock)
    reaper.step(datetime.now(UTC))
    assert state_files(sp.path)["done"] == [job_id]
    config = (sp.path / "spool.toml").read_text().replace("[defaults]",
                                                          '[defaults]\nretention = "1d"')
    (sp.path / "spool.toml").write_text(config)
    reaper = Reaper(Spool(sp.path, host="r"), clock=clock)
    clock.now += 1
    reaper.step(datetime.now(UTC))
    assert state_files(sp.path)["done"] == []


def test_a_unique_key_left_by_a_finished_job_is_released_and_live_ones_are_kept(tmp_path,
                                                                                 monkeypatch):
    monkeypatch.setattr(sweep, "BUDGET", 5)
    sp = Spool(make_spool(tmp_path / "spool"), host="a")
    later = datetime.now(UTC) + timedelta(days=1)
    live = [sp.submit("noop", unique=f"live-{i}", at=later) for i in range(8)]
    ended = sp.submit("noop", unique="ended", at=later)
    marker = sp.store.markers.marker_path("key", "ended")
    kept = marker.read_bytes()
    sp.cancel(ended)  # releases its key ...
    marker.write_bytes(kept)  # ... which a crash had left behind
    clock = Clock()
    reaper = Reaper(Spool(sp.path, host="r"), clock=clock)
    passes(reaper, clock, 4)
    assert not marker.exists()
    assert len(os.listdir(sp.path / "unique")) == len(live)
    with pytest.raises(Exception, match="unique key"):
        sp.submit("noop", unique="live-0")
    sp.submit("noop", unique="ended")


def test_a_pass_on_many_finished_jobs_visits_no_more_than_its_budget(tmp_path, monkeypatch):
    sp = Spool(make_spool(tmp_path / "spool"), host="a")
    for _ in range(3 * sweep.BUDGET):
        finished(sp, "done", 0)
    visited: list[str] = []
    real = sweep.Sweeps._visit

    def counting(self, name, entry, now, walk, holders):
        visited.append(entry)
        return real(self, name, entry, now, walk, holders)

    monkeypatch.setattr(sweep.Sweeps, "_visit", counting)
    clock = Clock()
    reaper = Reaper(Spool(sp.path, host="r"), clock=clock)
    reaper.step(datetime.now(UTC))
    assert 0 < len(visited) <= sweep.BUDGET
    passes(reaper, clock, 10)
    assert len(set(visited)) == 3 * sweep.BUDGET  # the first (full) walk saw each file once
    assert len(visited) == len(set(visited))


def test_a_damaged_sweeps_record_starts_the_walks_again(tmp_path):
    sp = Spool(make_spool(tmp_path / "spool"), host="a")
    job_id = finished(sp, "done", 40)
    (sp.path / "hosts" / "r.reaper.json").write_text(json.dumps({"boot": "x", "sweeps": {
        "done": {"after": None, "queue": [], "rest_until": 0, "full_at": "soon"},
        "dead": {"queue": [1]}, "unique": "junk"}}))
    reaper = Reaper(Spool(sp.path, host="r"), clock=Clock())
    obs = json.loads((sp.path / "hosts" / "r.reaper.json").read_text())
    obs["boot"] = reaper.boot
    (sp.path / "hosts" / "r.reaper.json").write_text(json.dumps(obs))
    reaper.step(datetime.now(UTC))
    assert job_id not in state_files(sp.path)["done"]


def test_a_key_whose_job_is_gone_is_released_only_past_the_grace_of_a_submit(tmp_path):
    sp = Spool(make_spool(tmp_path / "spool"), host="a")
    marker = sp.store.markers.marker_path("key", "orphan")
    marker.write_text(json.dumps({"id": "never-renamed", "key": "orphan", "token": None}))
    clock = Clock()
    reaper = Reaper(Spool(sp.path, host="r"), clock=clock)
    reaper.step(datetime.now(UTC))
    assert marker.exists()  # its submit may still be between link and rename
    aged = time.time() - 600
    os.utime(marker, (aged, aged))
    clock.now += sweep.MARKERS_EVERY
    reaper.step(datetime.now(UTC))
    assert not marker.exists()


def test_a_directory_that_cannot_be_listed_stops_only_its_own_walk(tmp_path, monkeypatch):
    sp = Spool(make_spool(tmp_path / "spool"), host="a")
    job_id = finished(sp, "done", 40)
    real = sweep.list_names

    def refusing(directory):
        if str(directory).endswith("unique"):
            raise PermissionError(13, "Permission denied", str(directory))
        return real(directory)

    monkeypatch.setattr(sweep, "list_names", refusing)
    Reaper(Spool(sp.path, host="r"), clock=Clock()).step(datetime.now(UTC))
    assert job_id not in state_files(sp.path)["done"]
