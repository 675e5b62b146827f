"""Tools for the fault and hostile-user tests: tiny tmpfs mounts filled to the last page or
inode, test users and a group made once per session, the CLI run as another user, daemons
stopped however they end, and snapshots that prove nothing outside the spool changed.

Everything here needs root (mount, useradd, setpriv); callers skip cleanly without it.
"""

from __future__ import annotations

import errno
import grp
import hashlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import CONFIG, cli_env, start_cli

PAGE = os.sysconf("SC_PAGE_SIZE")

# jobs that wait (bounded: 60 s at most) for a marker file to appear, then exit 0 (`wait`) or
# 1 (`wait_fail`, retried once)
WAIT_JOB = """
[jobs.wait]
command = ["sh", "-c",
           'i=0; while [ ! -e "$0" ]; do i=$((i+1)); [ "$i" -gt 600 ] && exit 3; sleep 0.1; done', "{marker}"]

[jobs.wait_fail]
command = ["sh", "-c",
           'i=0; while [ ! -e "$0" ]; do i=$((i+1)); [ "$i" -gt 600 ] && exit 3; sleep 0.1; done; exit 1', "{marker}"]
max_attempts = 2
"""
FAULT_CONFIG = CONFIG + WAIT_JOB

GROUP = "spooltest-g"
MEMBER = "spooltest-m"
MEMBER2 = "spooltest-m2"
STRANGER = "spooltest-u"


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (mount, useradd, setpriv)")


# -- tiny filesystems ----------------------------------------------------------------------

def mount_tmpfs(where: Path, size: str, nr_inodes: int) -> None:
    """Mount a tmpfs at `where`, or skip the test when that is not possible."""
    require_root()
    where.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o",
                             f"size={size},nr_inodes={nr_inodes},mode=0755", "tmpfs",
                             str(where)], check=False, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs at {where}: {result.stderr.strip()}")


def unmount(where: Path) -> None:
    """Unmount, lazily when something still holds the filesystem."""
    if subprocess.run(["umount", str(where)], check=False, capture_output=True,
                      timeout=30).returncode:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True, timeout=30)


@pytest.fixture
def tmpfs_factory(tmp_path: Path):
    """`make(name, size, nr_inodes)` -> a fresh tmpfs mount point under tmp_path."""
    mounts: list[Path] = []

    def make(name: str = "fs", size: str = "2m", nr_inodes: int = 4096) -> Path:
        where = tmp_path / name
        mount_tmpfs(where, size, nr_inodes)
        mounts.append(where)
        return where

    yield make
    for where in reversed(mounts):
        unmount(where)


@dataclass
class Filler:
    """Exhausts one resource of a filesystem: `space` (pages, one filler file) or `inodes`
    (empty files). `leave(n)` fills it, then frees exactly n pages or n inodes."""

    mount: Path
    kind: str
    files: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        assert self.kind in ("space", "inodes")
        self.inode_dir = self.mount / ".inode-filler"
        self.space_file = self.mount / ".space-filler"
        if self.kind == "inodes":
            self.inode_dir.mkdir(exist_ok=True)

    def fill(self) -> None:
        if self.kind == "space":
            self._fill_space()
        else:
            self._fill_inodes()
        assert self.is_full(), self.describe()

    def _fill_space(self) -> None:
        fd = os.open(self.space_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            chunk = 1 << 16
            while chunk:
                try:
                    if os.write(fd, b"\xa5" * chunk) < chunk:
                        chunk //= 2
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    chunk //= 2
        finally:
            os.close(fd)

    def _fill_inodes(self) -> None:
        while True:
            path = self.inode_dir / str(len(self.files))
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return
            self.files.append(path)

    def leave(self, units: int) -> None:
        """Fill, then free exactly `units` pages (space) or inodes."""
        self.fill()
        if not units:
            return
        if self.kind == "space":
            size = os.stat(self.space_file).st_size
            pages = -(-size // PAGE)
            assert pages >= units, f"the filler holds {pages} pages, cannot free {units}"
            os.truncate(self.space_file, (pages - units) * PAGE)
        else:
            assert len(self.files) >= units
            for _ in range(units):
                os.unlink(self.files.pop())

    def free(self) -> None:
        if self.kind == "space":
            try:
                os.unlink(self.space_file)
            except FileNotFoundError:
                pass
        else:
            while self.files:
                os.unlink(self.files.pop())

    def is_full(self) -> bool:
        info = os.statvfs(self.mount)
        return (info.f_bavail if self.kind == "space" else info.f_favail) == 0

    def describe(self) -> str:
        info = os.statvfs(self.mount)
        return (f"{self.mount}: {info.f_bavail} blocks and {info.f_favail} inodes free "
                f"({self.kind} filler)")


# -- daemons -------------------------------------------------------------------------------

class Daemons:
    """Long-running CLI processes of one test, always stopped at its end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, spool: Path, *args: str, host: str, log: Path, **env: str
              ) -> subprocess.Popen:
        proc = start_cli(spool, *args, host=host, log=log, **env)
        self.procs.append(proc)
        return proc

    def track(self, proc: subprocess.Popen) -> subprocess.Popen:
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:  # hung (a blocking open?): kill it
                proc.kill()
                proc.wait(15)


@pytest.fixture
def daemons():
    keeper = Daemons()
    yield keeper
    keeper.stop_all()


def read_log(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def lines_with(text: str, *needles: str) -> list[str]:
    """Lines of `text` that contain every needle."""
    return [line for line in text.splitlines() if all(n in line for n in needles)]


# -- users ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


def _ensure_group(name: str, created: list[str]) -> None:
    try:
        grp.getgrnam(name)
    except KeyError:
        subprocess.run(["groupadd", name], check=True, capture_output=True, timeout=30)
        created.append(name)


def _ensure_user(name: str, groups: list[str], created: list[str]) -> User:
    try:
        pwd.getpwnam(name)
    except KeyError:
        argv = ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin"]
        if groups:
            argv += ["--groups", ",".join(groups)]
        subprocess.run([*argv, name], check=True, capture_output=True, timeout=30)
        created.append(name)
    entry = pwd.getpwnam(name)
    for group in groups:  # an existing user from an earlier run: make sure of its groups
        if name not in grp.getgrnam(group).gr_mem:
            subprocess.run(["usermod", "-a", "-G", group, name], check=True,
                           capture_output=True, timeout=30)
    return User(name, entry.pw_uid, entry.pw_gid)


@pytest.fixture(scope="session")
def test_users():
    """{"member", "member2", "stranger": User, "group": name}, created once per session
    (fixed names, reused when a crashed run left them) and removed at its end."""
    require_root()
    if not (shutil.which("useradd") and shutil.which("setpriv")):
        pytest.skip("useradd or setpriv missing")
    users: list[str] = []
    groups: list[str] = []
    try:
        try:
            _ensure_group(GROUP, groups)
            found = {"member": _ensure_user(MEMBER, [GROUP], users),
                     "member2": _ensure_user(MEMBER2, [GROUP], users),
                     "stranger": _ensure_user(STRANGER, [], users)}
        except (subprocess.CalledProcessError, OSError) as exc:
            pytest.skip(f"cannot create test users: {exc}")
        yield {**found, "group": GROUP}
    finally:
        for name in users:
            subprocess.run(["userdel", name], check=False, capture_output=True, timeout=30)
        for name in groups:
            subprocess.run(["groupdel", name], check=False, capture_output=True, timeout=30)


def as_user(user: User, argv: list[str]) -> list[str]:
    """argv run as `user` with its groups (setpriv)."""
    return ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups", *argv]


def user_env(home: Path) -> dict[str, str]:
    return cli_env(HOME=str(home), PYTHONDONTWRITEBYTECODE="1")


_INTERPRETERS: dict[int, str] = {}


def _interpreter(user: User, home: Path) -> str:
    """A Python of this venv's version that `user` can execute: `sys.executable` when the user
    may, else (the interpreter lives under root's 0700 home) the system one."""
    if user.uid in _INTERPRETERS:
        return _INTERPRETERS[user.uid]
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for candidate in (sys.executable, f"/usr/bin/python{version}",
                      f"/usr/local/bin/python{version}"):
        probe = subprocess.run(as_user(user, [candidate, "-c", _boot(None, "--version")]),
                               check=False, capture_output=True, text=True, env=user_env(home),
                               timeout=60)
        if probe.returncode == 0:
            _INTERPRETERS[user.uid] = candidate
            return candidate
    pytest.skip(f"{user.name} cannot run the spool CLI with any python{version}")


def _boot(umask: int | None, *args: str) -> str:
    """`python -c` code that runs this checkout's CLI (`-m spool.cli`, with this venv's
    site-packages added, so a system interpreter runs the same code; never a `spool` found on
    the PATH), under `umask` set in-process (no shell in between)."""
    site = sysconfig.get_paths()["purelib"]
    umask_code = f"os.umask({umask:#o}); " if umask is not None else ""
    extra = f"sys.argv[1:] = {list(args)!r}; " if args else ""
    return (f"import os, runpy, site, sys; {umask_code}site.addsitedir({site!r}); "
            f"sys.argv[0] = 'spool'; {extra}"
            "runpy.run_module('spool.cli', run_name='__main__', alter_sys=True)")


def spool_argv(user: User, home: Path, umask: int | None = None) -> list[str]:
    """argv (after the setpriv prefix) for `user` to run the spool CLI under `umask`."""
    return [_interpreter(user, home), "-c", _boot(umask)]


def run_as(user: User, spool: Path, *args: str, host: str = "test", umask: int | None = None,
           timeout: float = 60, home: Path | None = None) -> subprocess.CompletedProcess:
    """The spool CLI as `user`."""
    home = home or spool.parent
    argv = [*spool_argv(user, home, umask), "--spool", str(spool), "--host", host, *args]
    return subprocess.run(as_user(user, argv), check=False, capture_output=True, text=True,
                          env=user_env(home), timeout=timeout)


def start_as(user: User, spool: Path, *args: str, host: str, log: Path,
             umask: int | None = None) -> subprocess.Popen:
    """A long-running spool command as `user`, its output in `log` (root-owned)."""
    home = spool.parent
    argv = [*spool_argv(user, home, umask), "--spool", str(spool), "--host", host, *args]
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(as_user(user, argv), stdout=out, stderr=out,
                                env=user_env(home))


def sh_as(user: User, script: str, cwd: Path) -> subprocess.CompletedProcess:
    """A shell snippet as `user` (planting links, FIFOs...)."""
    return subprocess.run(as_user(user, ["sh", "-c", script]), check=False, capture_output=True,
                          text=True,
                          cwd=cwd, env=user_env(cwd), timeout=30)


# -- evidence ------------------------------------------------------------------------------

def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under `root` (root included): type, mode, owner, size, mtime and content
    (a digest; a link's target). Two equal snapshots: nothing was created, removed, written,
    truncated, chmod-ed or touched."""
    entries: dict[str, tuple] = {}
    for path in [root, *sorted(_walk(root))]:
        info = os.lstat(path)
        if stat.S_ISREG(info.st_mode):
            content = hashlib.sha256(path.read_bytes()).hexdigest()
        elif stat.S_ISLNK(info.st_mode):
            content = os.readlink(path)
        else:
            content = None
        entries[str(path.relative_to(root))] = (
            stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid,
            info.st_size, info.st_mtime_ns, content)
    return entries


def _walk(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            yield Path(dirpath) / name


def diff_snapshots(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    changes = []
    for name in sorted(set(before) | set(after)):
        if before.get(name) != after.get(name):
            changes.append(f"{name}: {before.get(name)} -> {after.get(name)}")
    return changes


def files_containing(root: Path, needle: bytes, skip_inodes: set[int] = frozenset()
                     ) -> list[str]:
    """Regular files under `root` (never through a link, never opening a FIFO) holding
    `needle`."""
    found = []
    for path in _walk(root):
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(info.st_mode) or info.st_ino in skip_inodes:
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as handle:
            if needle in handle.read():
                found.append(str(path.relative_to(root)))
    return found


def traceback_free(result: subprocess.CompletedProcess) -> bool:
    return "Traceback" not in (result.stderr or "") and "Traceback" not in (result.stdout or "")


def last_line(text: str) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def describe(result: subprocess.CompletedProcess) -> str:
    return (f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n"
            f"{result.stderr}")
