"""Every unit in systemd/ passes `systemd-analyze verify` (as an instance of a real spool)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = sorted((Path(__file__).parents[2] / "systemd").glob("*@.*"))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_verifies(unit, tmp_path):
    spool_bin = Path(sys.executable).parent / "spool"
    assert spool_bin.exists()
    instance = "srv-spool"
    for other in UNITS:  # a timer needs its service beside it
        text = other.read_text().replace("/opt/spool/bin/spool", str(spool_bin))
        text = text.replace("User=spool\n", "").replace("Group=spool\n", "")
        (tmp_path / other.name.replace("@.", f"@{instance}.")).write_text(text)
    target = tmp_path / unit.name.replace("@.", f"@{instance}.")
    result = subprocess.run(["systemd-analyze", "verify", str(target)], capture_output=True,
                            text=True, cwd=tmp_path)
    problems = [line for line in result.stderr.splitlines()
                if str(tmp_path) in line or "spool" in line]
    assert result.returncode == 0 and not problems, result.stderr


def test_worker_stop_timeout_covers_grace_and_kill_grace():
    from spool.config import Defaults

    text = (Path(__file__).parents[2] / "systemd" / "spool-worker@.service").read_text()
    stop = int(text.split("TimeoutStopSec=")[1].split()[0])
    assert stop > Defaults().grace + Defaults().kill_grace
    assert "KillMode=mixed" in text and "ProtectSystem=strict" in text
