"""Every unit in systemd/ passes `systemd-analyze verify` (as an instance of a real spool), the
drop-in examples too; `spool doctor` checks the worker unit's stop timeout and shows its sandbox."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_spool, spool_cli
from spool.units import parse_timespan, systemd_escape_path

SYSTEMD = Path(__file__).parents[2] / "systemd"
UNITS = sorted(p for p in SYSTEMD.glob("*@.*") if p.is_file())
INSTANCES = {"spool-workers@.service": "1"}  # numbered workers; the others name the spool
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze missing")


def install_units(tmp_path: Path, dropins: dict[str, str] | None = None) -> dict[str, Path]:
    """Every unit as an instance in tmp_path, for the venv's spool; `dropins` maps a unit file
    name to the text of a drop-in installed for its instance."""
    spool_bin = Path(sys.executable).parent / "spool"
    assert spool_bin.exists()
    placed = {}
    for unit in UNITS:  # a timer needs its service beside it
        text = unit.read_text().replace("/opt/spool/bin/spool", str(spool_bin))
        text = text.replace("User=spool\n", "").replace("Group=spool\n", "")
        instance = INSTANCES.get(unit.name, "srv-spool")
        target = tmp_path / unit.name.replace("@.", f"@{instance}.")
        target.write_text(text)
        placed[unit.name] = target
        if dropins and unit.name in dropins:
            confd = tmp_path / f"{target.name}.d"
            confd.mkdir()
            (confd / "example.conf").write_text(dropins[unit.name])
    return placed


def verify(tmp_path: Path, target: Path) -> None:
    result = subprocess.run(["systemd-analyze", "verify", str(target)], capture_output=True,
                            text=True, cwd=tmp_path)
    problems = [line for line in result.stderr.splitlines()
                if str(tmp_path) in line or "spool" in line]
    assert result.returncode == 0 and not problems, result.stderr


@needs_analyze
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_verifies(unit, tmp_path):
    verify(tmp_path, install_units(tmp_path)[unit.name])


@needs_analyze
@pytest.mark.parametrize("unit, example", [
    ("spool-worker@.service", "spool-worker@.service.d/example-paths.conf.example"),
    ("spool-workers@.service", "spool-workers@.service.d/spool.conf.example"),
])
def test_dropin_examples_verify(unit, example, tmp_path):
    placed = install_units(tmp_path, {unit: (SYSTEMD / example).read_text()})
    verify(tmp_path, placed[unit])


def test_every_dropin_example_is_a_service_section():
    examples = sorted(SYSTEMD.glob("*.d/*.example"))
    assert {p.parent.name for p in examples} == {"spool-worker@.service.d",
                                                 "spool-workers@.service.d"}
    for example in examples:
        assert "[Service]" in example.read_text()
        assert (SYSTEMD / example.parent.name[:-2]).is_file()
    paths = (SYSTEMD / "spool-worker@.service.d/example-paths.conf.example").read_text()
    assert "\nReadWritePaths=" in paths and "TimeoutStopSec=" in paths


def test_worker_stop_timeout_covers_grace_and_kill_grace():
    from spool.config import Defaults
    from spool.units import SHIPPED_STOP_TIMEOUT

    for name in ("spool-worker@.service", "spool-workers@.service"):
        text = (SYSTEMD / name).read_text()
        stop = int(text.split("TimeoutStopSec=")[1].split()[0])
        assert stop == SHIPPED_STOP_TIMEOUT > Defaults().grace + Defaults().kill_grace
        assert "KillMode=mixed" in text and "ProtectSystem=strict" in text


def test_worker_runs_in_the_spool_directory():
    text = (SYSTEMD / "spool-worker@.service").read_text()
    assert "WorkingDirectory=%f\n" in text and "ReadWritePaths=%f\n" in text
    many = (SYSTEMD / "spool-workers@.service").read_text()
    assert "Environment=SPOOL_DIR=/srv/spool\n" in many
    assert "WorkingDirectory=/srv/spool\n" in many
    assert "ExecStart=/opt/spool/bin/spool worker\n" in many


def test_numbered_workers_are_the_same_worker():
    """spool-workers@ differs from spool-worker@ only where it names its spool."""
    def settings(name: str) -> list[str]:
        lines = [line for line in (SYSTEMD / name).read_text().splitlines()
                 if line and not line.startswith("#")]
        names_spool = ("%f", "/srv/spool", "SPOOL_DIR", "Description=", "ExecStart=")
        return [line for line in lines if not any(n in line for n in names_spool)]
    assert settings("spool-worker@.service") == settings("spool-workers@.service")


@pytest.mark.skipif(shutil.which("systemd-escape") is None, reason="systemd-escape missing")
@pytest.mark.parametrize("path", ["/srv/spool", "/srv/my-spool/", "/data/a b/.x", "/",
                                  "/tmp/spül", "//srv//spool"])
def test_escape_matches_systemd_escape(path):
    expected = subprocess.run(["systemd-escape", "--path", path], capture_output=True,
                              text=True, check=True).stdout.strip()
    assert systemd_escape_path(path) == expected


def test_parse_timespan():
    assert parse_timespan("50s") == 50
    assert parse_timespan("1min 30s") == 90
    assert parse_timespan("500ms") == 0.5
    assert parse_timespan("infinity") is None


FAKE_SYSTEMCTL = """#!/bin/sh
# a systemctl that knows one unit: $FAKE_UNIT with TimeoutStopUSec=$FAKE_STOP
unit=""
for arg; do unit="$arg"; done
if [ "$unit" != "$FAKE_UNIT" ]; then echo "LoadState=not-found"; exit 0; fi
echo "LoadState=loaded"
echo "TimeoutStopUSec=$FAKE_STOP"
echo "ProtectSystem=strict"
echo "ProtectHome=read-only"
echo "PrivateTmp=yes"
echo "ReadWritePaths=$FAKE_PATHS"
echo "WorkingDirectory=$FAKE_PATHS"
"""


@pytest.fixture
def fake_systemctl(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "systemctl").write_text(FAKE_SYSTEMCTL)
    (bindir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", os.pathsep.join([str(bindir), os.environ["PATH"]]))

    def unit_for(spool: Path, stop: str) -> str:
        unit = f"spool-worker@{systemd_escape_path(spool.resolve())}.service"
        monkeypatch.setenv("FAKE_UNIT", unit)
        monkeypatch.setenv("FAKE_STOP", stop)
        monkeypatch.setenv("FAKE_PATHS", str(spool.resolve()))
        return unit
    return unit_for


def systemd_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stdout.splitlines() if "systemd:" in line]


def test_doctor_warns_when_the_unit_stops_before_the_drain_ends(tmp_path, fake_systemctl):
    spool = make_spool(tmp_path / "spool", '[defaults]\ngrace = "45s"\n\n'
                       '[jobs.slow]\ncommand = ["true"]\nkill_grace = "20s"\n')
    unit = fake_systemctl(spool, "50s")
    result = spool_cli(spool, "doctor")
    assert result.returncode == 0, result.stdout + result.stderr  # a WARN is not a FAIL
    lines = systemd_lines(result)
    assert lines[0].startswith(f"WARN systemd: {unit} has TimeoutStopSec=50s, not more than "
                               "grace + kill_grace (65s)")
    assert "set TimeoutStopSec=75 in a drop-in" in lines[0]
    assert lines[1].startswith(f"OK   systemd: jobs of {unit} run with ProtectSystem=strict, "
                               "ProtectHome=read-only, PrivateTmp=yes, "
                               f"ReadWritePaths={spool.resolve()}")


def test_doctor_is_content_with_a_stop_timeout_that_covers_the_drain(tmp_path, fake_systemctl):
    spool = make_spool(tmp_path / "spool", '[defaults]\ngrace = "45s"\n')
    unit = fake_systemctl(spool, "1min 30s")
    lines = systemd_lines(spool_cli(spool, "doctor"))
    assert lines[0] == (f"OK   systemd: {unit} TimeoutStopSec=1min 30s covers grace + "
                        "kill_grace (55s)")


def test_doctor_without_the_unit_compares_with_the_shipped_timeout(tmp_path, fake_systemctl):
    spool = make_spool(tmp_path / "spool", '[defaults]\ngrace = "60s"\n')
    fake_systemctl(tmp_path / "elsewhere", "50s")  # this spool's unit is not installed
    lines = systemd_lines(spool_cli(spool, "doctor"))
    assert lines[0].startswith("WARN systemd: grace + kill_grace is 70s, the shipped "
                               "spool-worker@ unit stops after TimeoutStopSec=50")
    assert "cannot check the unit: spool-worker@" in lines[0] and "is not installed" in lines[0]
    default = make_spool(tmp_path / "other", "")
    lines = systemd_lines(spool_cli(default, "doctor"))
    assert lines[0].startswith("OK   systemd: cannot check spool-worker@")
    assert lines[0].endswith("the shipped TimeoutStopSec=50 covers grace + kill_grace (40s)")
