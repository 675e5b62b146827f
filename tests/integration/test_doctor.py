"""`spool doctor` on real filesystems, and its NFS advice from a fake /proc/mounts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import make_spool, spool_cli
from spool import Spool
from spool.doctor import diagnose
from spool.inotify import make_watcher
from spool.mounts import is_network_fs, mount_for


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


# -- a damaged layout is reported as FAIL lines, not refused -------------------------------


def fail_lines(result) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("FAIL")]


def test_doctor_reports_a_missing_pending_dir(spool_dir):
    (spool_dir / "pending").rmdir()
    result = spool_cli(spool_dir, "doctor")
    assert result.returncode == 1, result.stderr
    assert fail_lines(result) == [f"FAIL layout: {spool_dir / 'pending'} is missing: "
                                  "'spool init' recreates missing directories"]
    assert "no spool" not in result.stderr and "Traceback" not in result.stderr


def test_doctor_reports_files_and_links_where_directories_belong(spool_dir, tmp_path):
    (spool_dir / "processing").rmdir()
    (spool_dir / "processing").write_text("oops")
    (spool_dir / "tmp").rmdir()
    (spool_dir / "tmp").symlink_to(tmp_path)
    (spool_dir / "cancel").rmdir()
    result = spool_cli(spool_dir, "doctor")
    assert result.returncode == 1, result.stderr
    text = "\n".join(fail_lines(result))
    assert f"{spool_dir / 'processing'} is a regular file, not a directory" in text
    assert f"{spool_dir / 'tmp'} is a symbolic link" in text
    assert f"{spool_dir / 'cancel'} is missing" in text
    assert "skipped" in result.stdout  # the checks that need the layout say they did not run


def test_doctor_without_any_spool_says_no_spool(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = spool_cli(empty, "doctor")
    assert result.returncode == 2 and result.stderr.splitlines()[-1].startswith("Error: no spool")


def test_doctor_with_only_spool_toml_reports_every_directory(tmp_path):
    root = tmp_path / "bare"
    root.mkdir()
    (root / "spool.toml").write_text("")
    result = spool_cli(root, "doctor")
    assert result.returncode == 1 and len(fail_lines(result)) == 11


# -- network filesystems: one rule for doctor and the inotify fallback -----------------------


@pytest.mark.parametrize("fstype", ["fuse.sshfs", "fuse.fuse-nfs", "cifs", "smb3", "glusterfs",
                                    "fuse.glusterfs", "lustre", "ceph", "9p", "fuse", "gfs2"])
def test_network_filesystems_get_advice_and_no_inotify(spool_dir, tmp_path, fstype):
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/vda / ext4 rw 0 0\nremote:/x {spool_dir} {fstype} rw 0 0\n")
    findings = diagnose(Spool(spool_dir, host="h"), mounts)
    [line] = [(level, msg) for level, msg in findings if msg.startswith("filesystem")]
    assert line[0] == "WARN" and "network or FUSE" in line[1] and "poll" in line[1]
    assert make_watcher(spool_dir / "pending", mounts=mounts) is None


@pytest.mark.parametrize("fstype", ["ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs"])
def test_local_filesystems_keep_inotify(spool_dir, tmp_path, fstype):
    mounts = tmp_path / "mounts"
    mounts.write_text(f"remote:/x / nfs4 rw 0 0\n/dev/x {spool_dir} {fstype} rw 0 0\n")
    assert not is_network_fs(fstype)
    watcher = make_watcher(spool_dir / "pending", mounts=mounts)
    assert watcher is not None
    watcher.close()
    findings = diagnose(Spool(spool_dir, host="h"), mounts)
    assert ("OK", f"filesystem: {fstype} on {spool_dir} (local: inotify wake-ups)") in findings


def test_nfs_spool_gets_no_inotify(spool_dir, tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(f"server:/export {spool_dir} nfs4 rw,hard 0 0\n")
    assert make_watcher(spool_dir / "pending", mounts=mounts) is None


def test_mount_points_with_escapes_and_bytes_that_are_not_utf8(tmp_path):
    odd = tmp_path / "a b\\c"
    odd.mkdir()
    weird = os.path.join(os.fsencode(tmp_path), b"caf\xe9")
    os.mkdir(weird)
    mounts = tmp_path / "mounts"
    escaped = str(odd).replace("\\", "\\134").replace(" ", "\\040")
    mounts.write_bytes(b"/dev/vda / ext4 rw 0 0\n"
                       + f"h:/a {escaped} fuse.sshfs rw 0 0\n".encode()
                       + b"h:/b " + weird + b" nfs rw 0 0\n")
    assert mount_for(odd / "x", mounts).fstype == "fuse.sshfs"
    assert mount_for(Path(os.fsdecode(weird)), mounts).fstype == "nfs"
