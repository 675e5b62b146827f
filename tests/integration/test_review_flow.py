"""Review of flow control (DESIGN §12) from the CLI, with real processes: planted files must
not make spool touch anything outside the spool."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import CONFIG, make_spool, spool_cli


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return make_spool(tmp_path / "spool", CONFIG)


def test_resume_never_unlinks_through_a_link_planted_as_paused(spool_dir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "all").write_text("")
    (outside / "job.noop").write_text("")
    os.rmdir(spool_dir / "paused")
    os.symlink(outside, spool_dir / "paused")
    result = spool_cli(spool_dir, "resume", "--all")
    assert result.returncode != 0
    assert "paused" in result.stderr.splitlines()[-1] and "not a directory" in result.stderr
    assert spool_cli(spool_dir, "resume", "noop").returncode != 0
    assert sorted(os.listdir(outside)) == ["all", "job.noop"]
    # nor is what lies behind it obeyed: the link is not the spool's paused/
    assert "paused" not in spool_cli(spool_dir, "status").stdout
    spool_cli(spool_dir, "submit", "noop")
    assert spool_cli(spool_dir, "worker", "--burst").returncode == 0
    assert len(os.listdir(spool_dir / "done")) == 1
