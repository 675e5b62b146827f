"""Where everything lives in a spool directory, and the names that encode job state.

A pending name `P-DUE-ID.json` sorts by (priority, due, id), so a worker chooses work from a
directory listing alone. A processing name `ID.N.json` carries the attempt number N.
Nothing here renames or writes job files; `spool.store` does.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple, TypeGuard

from spool.errors import InvalidInput, SpoolMissing
from spool.timeutil import DUE_LENGTH, due_stamp, parse_due

STATES = ("pending", "held", "processing", "done", "dead")
TERMINAL_STATES = ("done", "dead")
SUBDIRS = ("tmp", "pending", "processing", "done", "dead", "hosts", "logs", "cancel",
           "unique", "cron", "events", "held", "paused")
OPTIONAL_DIRS = ("held", "paused")  # made on first use too: spools made before them lack them
CONFIG_NAME = "spool.toml"
DAEMON_ONLY_DIRS = ("processing", "hosts", "events")

# fullmatch, never `$`: `$` also matches before a trailing newline ("abc\n" is no id)
_ID = re.compile(r"[A-Za-z0-9_@+][A-Za-z0-9._@+-]{0,127}")
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
_MAX_ATTEMPT_DIGITS = 9


def validate_id(value: object, what: str = "job id") -> str:
    """The id itself when it is `[A-Za-z0-9._@+-]{1,128}` not starting with `.` or `-`."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidInput(
            f"{what} {value!r} is invalid: use 1-128 characters of A-Z a-z 0-9 . _ @ + -, "
            "not starting with '.' or '-'"
        )
    return value


def is_valid_id(value: object) -> TypeGuard[str]:
    """Whether `value` is an acceptable job id."""
    return isinstance(value, str) and bool(_ID.fullmatch(value))


def validate_host(value: str) -> str:
    """A host name safe to use as a directory name."""
    if not isinstance(value, str) or not _HOST.fullmatch(value):
        raise InvalidInput(
            f"host name {value!r} is invalid: use 1-64 characters of A-Z a-z 0-9 . _ -"
        )
    return value


def default_host() -> str:
    """`SPOOL_HOST`, else the short hostname."""
    return os.environ.get("SPOOL_HOST") or socket.gethostname().split(".")[0] or "localhost"


def new_id(now: datetime) -> str:
    """A fresh id: creation time to the microsecond, then 48 random bits (unique across hosts)."""
    return f"{due_stamp(now)[:-1]}-{secrets.token_hex(6)}"


def derived_id(now: datetime, seed: str) -> str:
    """A deterministic id for `seed` (a dropped file without one), sortable like `new_id`.

    `seed` may hold a file name that is not valid UTF-8 (surrogate-escaped by os.listdir) or
    a lone surrogate: surrogates pass into the hash, never refused.
    """
    import hashlib

    digest = hashlib.sha256(seed.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{due_stamp(now)[:-1]}-{digest}"


class PendingName(NamedTuple):
    """The parts of a canonical pending name."""

    priority: int
    due: str
    id: str


def pending_name(priority: int, due: datetime, job_id: str) -> str:
    """`P-DUE-ID.json`."""
    return f"{priority}-{due_stamp(due)}-{job_id}.json"


def parse_pending_name(name: str) -> PendingName | None:
    """The parts of a canonical pending name, or None for any other name (a drop).

    ASCII only: `²` or `٣` are digits to `str.isdigit`, never to spool.
    """
    if len(name) < DUE_LENGTH + 9 or not name.endswith(".json") or name[1] != "-":
        return None
    if not "0" <= name[0] <= "9" or name[DUE_LENGTH + 2] != "-":
        return None
    due, job_id = name[2:DUE_LENGTH + 2], name[DUE_LENGTH + 3:-5]
    if not is_valid_id(job_id):
        return None
    try:
        parse_due(due)
    except ValueError:
        return None
    return PendingName(int(name[0]), due, job_id)


def processing_name(job_id: str, attempt: int) -> str:
    """`ID.N.json`."""
    return f"{job_id}.{attempt}.json"


def parse_processing_name(name: str) -> tuple[str, int] | None:
    """(id, attempt) of a processing name, or None."""
    if not name.endswith(".json"):
        return None
    job_id, _, attempt = name[:-5].rpartition(".")
    if not (attempt.isascii() and attempt.isdigit()) or len(attempt) > _MAX_ATTEMPT_DIGITS \
            or not is_valid_id(job_id):
        return None
    return job_id, int(attempt)


class TmpName(NamedTuple):
    """The parts of a name in `tmp/`: `VERB,HOST,PID,RAND[,SUBJECT]`.

    Commas appear in neither ids nor host names, so the parts split unambiguously; SUBJECT is
    `ID.N` for files that belong to an attempt (staged outcomes, holds, results).
    """

    verb: str
    host: str
    pid: int
    rand: str
    subject: str | None


def tmp_name(verb: str, host: str, pid: int, subject: str | None = None) -> str:
    """A name in `tmp/` that no other process uses (host, pid and a random part)."""
    name = f"{verb},{host},{pid},{secrets.token_hex(4)}"
    return f"{name},{subject}" if subject is not None else name


def parse_tmp_name(name: str) -> TmpName | None:
    """The parts of a `tmp/` name made by `tmp_name`, or None for any other name."""
    parts = name.split(",")
    if len(parts) not in (4, 5) or not parts[2].isascii() or not parts[2].isdigit():
        return None
    return TmpName(parts[0], parts[1], int(parts[2]), parts[3],
                   parts[4] if len(parts) == 5 else None)


def attempt_subject(job_id: str, attempt: int) -> str:
    """`ID.N`: the subject of tmp/ files that belong to one attempt."""
    return f"{job_id}.{attempt}"


def is_temporary_name(name: str) -> bool:
    """Names every scan skips: dotfiles (editors, NFS silly-renames) and non-JSON names."""
    return name.startswith(".") or not name.endswith(".json")


@dataclass(frozen=True)
class Layout:
    """The paths of one spool directory."""

    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    def __getattr__(self, name: str) -> Path:
        if name in SUBDIRS:
            return self.root / name
        raise AttributeError(name)

    def state_dir(self, state: str) -> Path:
        return self.root / state

    def host_processing(self, host: str) -> Path:
        return self.root / "processing" / host

    def log_path(self, job_id: str) -> Path:
        return self.root / "logs" / f"{job_id}.log"

    def cancel_path(self, job_id: str) -> Path:
        return self.root / "cancel" / job_id

    def exists(self) -> bool:
        """Whether this looks like an initialised spool. A fault other than a missing entry
        (EACCES, EIO) is raised as OSError naming the path, not taken for "no spool"."""
        return all(_is_dir(self.root / sub) for sub in ("tmp", "pending", "processing"))

    def any_part(self) -> bool:
        """Whether anything of a spool is here, however damaged: spool.toml or an entry where
        one of its directories belongs."""
        return any(os.path.lexists(self.root / name) for name in (CONFIG_NAME, *SUBDIRS))

    def require(self, complete: bool = True) -> Layout:
        """Self, or SpoolMissing saying how to create the spool. With `complete=False` (doctor)
        a damaged spool passes too: only a directory with nothing of a spool is refused."""
        if not (self.exists() if complete else self.any_part()):
            raise SpoolMissing(
                f"no spool at {self.root}: create it with 'spool --spool {self.root} init' "
                "(or set SPOOL_DIR)"
            )
        return self

    def create(self, mode: int = 0o755, group: int | None = None) -> None:
        """Make the directory tree (idempotent). With a group the tree is setgid and
        group-writable; the directories only daemons move files in are also sticky, so a
        group member cannot rename or replace what a daemon created there (docs/protocol.md, Who
        may submit what)."""
        for path in [self.root, *(self.root / sub for sub in SUBDIRS)]:
            path.mkdir(mode=mode, parents=True, exist_ok=True)
            if group is not None:
                os.chown(path, -1, group)
                sticky = 0o1000 if path.name in DAEMON_ONLY_DIRS and path != self.root else 0
                os.chmod(path, mode | 0o2070 | sticky)


def _is_dir(path: Path) -> bool:
    """Whether `path` is a directory; False when it is missing, OSError on any other fault."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False
