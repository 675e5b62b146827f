"""Fixtures for the NFS tests: each test gets its own directory of the rig's export, created
through mount A, seen through mount B under the same name, and removed through mount A after
the test's processes are stopped (never behind the server's back: it caches metadata).

Without the rig (SPOOL_NFS_A/SPOOL_NFS_B unset or not mount points) every test here skips.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
import warnings
from pathlib import Path

import pytest

from conftest import wait_until

from .cluster import Cluster


def _mounts() -> tuple[Path, Path]:
    a, b = os.environ.get("SPOOL_NFS_A"), os.environ.get("SPOOL_NFS_B")
    if not a or not b:
        pytest.skip("SPOOL_NFS_A/SPOOL_NFS_B unset: bring the NFS rig up (README, "
                    "'Testing on real NFS')")
    for name, value in (("SPOOL_NFS_A", a), ("SPOOL_NFS_B", b)):
        if not os.path.ismount(value):
            pytest.skip(f"{name}={value} is not a mount point (is the rig up?)")
    return Path(a), Path(b)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed NFS test's report carries the tail of every spool process's log."""
    outcome = yield
    report = outcome.get_result()
    nodes = getattr(item, "funcargs", {}).get("cluster")
    if report.failed and isinstance(nodes, Cluster):
        try:
            report.sections.append(("spool process logs", nodes.logs()))
        except OSError:
            pass


@pytest.fixture
def nfs_roots() -> dict[str, Path]:
    """{host: this test's directory on the export, through that host's mount}."""
    mount_a, mount_b = _mounts()
    name = f"spool-test-{os.getpid()}-{secrets.token_hex(4)}"
    root_a = mount_a / name
    root_a.mkdir()
    root_b = mount_b / name
    try:
        wait_until(root_b.is_dir, 15, f"{name} to appear through mount B")
        yield {"a": root_a, "b": root_b}
    finally:
        _remove(root_a)


def _remove(root: Path) -> None:
    """rmtree through the mount; files still open elsewhere may need a moment to go."""
    deadline = time.monotonic() + 20
    while True:
        try:
            shutil.rmtree(root)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                left = [os.path.join(d, n) for d, _, names in os.walk(root) for n in names]
                warnings.warn(f"could not remove {root}: {exc}; left: {left[:10]}", stacklevel=2)
                return
            time.sleep(0.2)


@pytest.fixture
def cluster(nfs_roots: dict[str, Path], tmp_path: Path):
    """A spool on the export (hosts a and b); every process started through it is stopped
    (SIGCONT, SIGTERM, SIGKILL) at teardown, with its task processes."""
    nodes = Cluster(nfs_roots, tmp_path)
    try:
        yield nodes
    finally:
        nodes.stop_all()
