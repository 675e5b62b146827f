"""Pause markers: which names are markers, what a set of them pauses, and the checked names."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CONFIG

from spool.config import parse_config
from spool.errors import InvalidInput
from spool.pause import Pauses, is_marker, markers_for

SCHEDULED = CONFIG + """
[schedules.tick]
every = "1m"
job = "noop"
"""


def test_only_spools_own_names_are_markers():
    assert all(map(is_marker, ["all", "job.noop", "host.a", "schedule.tick", "job.a.b"]))
    assert not any(map(is_marker, ["", "alll", "job.", "job..x", "jobs.noop", ".all",
                                   "x.noop", "host"]))


def test_what_a_set_of_markers_pauses():
    pauses = Pauses(frozenset({"job.noop", "host.a", "schedule.tick"}))
    assert pauses.job("noop") and not pauses.job("echo")
    assert pauses.host("a") and not pauses.host("b")
    assert pauses.schedule("tick") and not pauses.schedule("other")
    assert pauses.names("job") == {"noop"} and pauses.names("host") == {"a"}
    everything = Pauses(frozenset({"all"}))
    assert everything.job("echo") and everything.host("b") and everything.schedule("x")
    assert not Pauses().job("noop") and not Pauses().host("a")


def test_names_are_checked_against_the_config():
    config = parse_config(SCHEDULED, Path("spool.toml"))
    assert markers_for(config, ("noop", "noop"), ("a",), ("tick",), True) == \
        ["job.noop", "host.a", "schedule.tick", "all"]
    with pytest.raises(InvalidInput, match="job type 'nope' is not declared"):
        markers_for(config, ("nope",))
    with pytest.raises(InvalidInput, match="schedule 'nope' is not declared"):
        markers_for(config, schedules=("nope",))
    with pytest.raises(InvalidInput, match=r"host name '\.\./x' is invalid"):
        markers_for(config, hosts=("../x",))
    with pytest.raises(InvalidInput, match="nothing named"):
        markers_for(config)


def test_a_reused_listing_never_hides_a_change(tmp_path, monkeypatch):
    import os

    from conftest import make_spool

    from spool import Spool, pause
    from spool.pause import read_pauses

    sp = Spool(make_spool(tmp_path / "spool"), host="a")
    paused = sp.layout.paused
    paused.mkdir(exist_ok=True)
    old = os.lstat(paused).st_mtime_ns - 3600 * 10**9 + 1  # an hour ago: cached
    os.utime(paused, ns=(old, old))
    assert read_pauses(sp) == Pauses()
    listed = []
    monkeypatch.setattr(pause.os, "listdir", lambda fd: listed.append(fd) or [])
    assert read_pauses(sp) == Pauses() and listed == []  # one lstat, no listing
    monkeypatch.undo()
    (paused / "job.noop").touch()
    os.utime(paused, ns=(old, old))  # the same mtime again: the ctime still moved
    assert read_pauses(sp).job("noop")
    (paused / "job.noop").unlink()  # changed just now: listed again, whatever the clock
    assert read_pauses(sp) == Pauses()
