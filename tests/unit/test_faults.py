"""Filesystem faults through pyfakefs: full disk and denied permission lose nothing."""

from __future__ import annotations

import errno
import os
from datetime import datetime
from pathlib import Path

import pytest

from conftest import CONFIG
from spool import Spool
from spool.layout import Layout
from spool.timeutil import UTC

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


@pytest.fixture
def fake_spool(fs):
    root = Path("/srv/spool")
    Layout(root).create()
    (root / "spool.toml").write_text(CONFIG)
    sp = Spool(root, host="h1", clock=lambda: NOW)
    yield sp
    sp.store.journal.close()  # its fd is a fake one: never let GC close a real fd by number


def test_full_disk_fails_submit_cleanly(fs, fake_spool):
    fake_spool.submit("noop")
    fs.set_disk_usage(fs.get_disk_usage("/srv").used + 100, "/srv")
    with pytest.raises(OSError) as info:
        fake_spool.submit("echo", {"message": "x" * 5000})
    assert info.value.errno == errno.ENOSPC
    assert len(os.listdir("/srv/spool/pending")) == 1  # the earlier job, nothing half-written
    for state in ("done", "dead", "processing"):
        assert os.listdir(f"/srv/spool/{state}") == []


def test_permission_denied_names_the_path(fs, fake_spool):
    os.chmod("/srv/spool/pending", 0o555)
    fs.is_windows_fs = False
    from pyfakefs.helpers import set_uid

    set_uid(1000)
    with pytest.raises(PermissionError) as info:
        fake_spool.submit("noop")
    assert "/srv/spool" in str(info.value)
    assert os.listdir("/srv/spool/pending") == []
