"""`spool doctor` on real filesystems, and its NFS advice from a fake /proc/mounts."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import make_spool, spool_cli
from spool import Spool
from spool.doctor import diagnose


def test_doctor_on_local_disk_is_all_ok(spool_dir):
    result = spool_cli(spool_dir, "doctor")
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert lines and all(line.split()[0] in ("OK", "WARN") for line in lines)
    assert any("locks" in line and line.startswith("OK") for line in lines)


def test_doctor_on_tmpfs(tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm")
    import tempfile

    with tempfile.TemporaryDirectory(dir=shm) as where:
        spool_dir = make_spool(Path(where) / "spool")
        result = spool_cli(spool_dir, "doctor")
        assert result.returncode == 0 and "tmpfs" in result.stdout


def test_doctor_fails_on_a_missing_layout(spool_dir):
    (spool_dir / "unique").rmdir()
    result = spool_cli(spool_dir, "doctor")
    assert result.returncode == 1 and "FAIL" in result.stdout and "unique" in result.stdout


def test_nfs_mount_options_get_advice(spool_dir, tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(f"server:/export {spool_dir.parent} nfs4 rw,soft,vers=4.2,ac,"
                      "acregmax=60 0 0\n/dev/vda / ext4 rw 0 0\n")
    findings = diagnose(Spool(spool_dir, host="h"), mounts)
    text = "\n".join(f"{level} {msg}" for level, msg in findings)
    assert "FAIL nfs: 'soft' mount" in text
    assert "WARN nfs: attribute cache 60s" in text
    assert "lookupcache" in text


def test_good_nfs_mount(spool_dir, tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(f"server:/export {spool_dir} nfs rw,hard,actimeo=1,lookupcache=positive,"
                      "vers=3 0 0\n")
    findings = diagnose(Spool(spool_dir, host="h"), mounts)
    nfs = [(level, msg) for level, msg in findings if msg.startswith("nfs")]
    assert nfs and all(level == "OK" for level, _ in nfs)
