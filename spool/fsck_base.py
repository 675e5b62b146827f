"""What every fsck check shares: findings, the report, and the run context with its repairs.

Invariant: a repair built here never deletes a job body. It renames a job file through the
store (never over an existing file), buries it in dead/ as `invalid` keeping it as
`dead/ID.orig`, or sets it aside into `tmp/aside,…`; only files that hold no body are removed.
"""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from collections.abc import Callable

from spool.errors import InvalidInput, SpoolError
from spool.files import discard, list_names
from spool.layout import is_valid_id, parse_pending_name, parse_processing_name, parse_tmp_name
from spool.recovery import HOLD_VERBS, invalid_record
from spool.store import Store

LEFTOVERS = (".nfs", ".fuse_hidden")  # removed by the NFS / FUSE client at the last close
SETTLE = 60.0  # seconds: a half-done move younger than this may still be in progress

Fix = Callable[[], str]


def shown(text: object) -> str:
    """Text safe to print and to store: the undecodable bytes of a file name as `\\xff`,
    any other lone surrogate as `\\udcxx`."""
    try:
        return str(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass
class Finding:
    """One problem: where, what kind, what is wrong, and what `--repair` does about it."""

    path: Path
    kind: str
    detail: str
    plan: str
    fix: Fix | None = None
    repaired: bool = False
    action: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"path": shown(self.path), "kind": self.kind, "detail": self.detail,
                "repaired": self.repaired, "action": self.action}


@dataclass
class Report:
    """Everything one run found: problems (repaired or not), INFO lines, files checked."""

    spool: Path
    problems: list[Finding] = field(default_factory=list)
    info: list[tuple[Path, str]] = field(default_factory=list)
    checked: int = 0

    @property
    def unrepaired(self) -> list[Finding]:
        return [finding for finding in self.problems if not finding.repaired]

    def to_json(self) -> dict[str, Any]:
        return {"spool": str(self.spool),
                "problems": [finding.to_json() for finding in self.problems],
                "info": [{"path": shown(path), "detail": text} for path, text in self.info],
                "checked": self.checked}


class Run:
    """One fsck run over one spool: the store, the caller's clock, and the report."""

    def __init__(self, store: Store, now: datetime, repair: bool) -> None:
        self.store, self.now, self.repair = store, now, repair
        self.layout = store.layout
        self.report = Report(store.layout.root)
        self.handed: list[tuple[Finding, Path, str]] = []  # holds given to recovery

    def settle(self, findings: list[Finding]) -> None:
        """Record the findings of a phase and, with `repair`, apply their fixes in order."""
        for finding in findings:
            self.report.problems.append(finding)
            if not self.repair or finding.fix is None:
                finding.action = f"would {finding.plan}" if finding.fix else finding.plan
                continue
            try:
                finding.action, finding.repaired = finding.fix(), True
            except (OSError, SpoolError) as exc:
                finding.action = f"not repaired ({finding.plan}): {shown(exc)}"

    # -- reading -------------------------------------------------------------------------

    def rel(self, path: Path) -> str:
        """`path` relative to the spool, printable."""
        try:
            return shown(path.relative_to(self.layout.root))
        except ValueError:
            return shown(path)

    def info(self, path: Path, text: str) -> None:
        self.report.info.append((path, text))

    def names(self, directory: Path) -> list[str]:
        """Sorted entries of `directory`; hidden names are INFO lines, never job files."""
        result = []
        for name in sorted(list_names(directory)):
            if name.startswith(LEFTOVERS):
                self.info(directory / name, "leftover of a file removed while open (its "
                                            "client deletes it at the last close)")
            elif name.startswith("."):
                self.info(directory / name, "hidden name: ignored by spool")
            else:
                result.append(name)
        return result

    def age(self, path: Path, *, ctime: bool = False) -> float:
        """Seconds since the file's mtime (or ctime); FileNotFoundError when it is gone."""
        info = os.lstat(path)
        return self.now.timestamp() - (info.st_ctime if ctime else info.st_mtime)

    def read(self, path: Path) -> tuple[dict[str, Any] | None, str | None]:
        """(body, None), or (None, what is wrong with it); FileNotFoundError when it is gone."""
        info = os.lstat(path)
        mode = info.st_mode
        if stat.S_ISLNK(mode):
            return None, "is a symbolic link (never followed)"
        if stat.S_ISDIR(mode):
            return None, "is a directory"
        if not stat.S_ISREG(mode):
            return None, "is a FIFO, socket or device, not a regular file"
        if info.st_size == 0:
            return None, "is empty"
        try:
            return self.store.read(path), None
        except FileNotFoundError:
            raise
        except OSError as exc:
            return None, f"cannot be read: {exc.strerror or exc}"
        except InvalidInput as exc:
            return None, shown(exc).replace(f"{shown(path)}: ", "", 1)
        except RecursionError:
            return None, "is JSON nested too deeply"

    def job_index(self, *, holds: bool = False) -> dict[str, set[str]]:
        """Job id -> the states whose directory holds it, from names alone (and `tmp` for
        the holds in tmp/ when `holds`)."""
        index: dict[str, set[str]] = defaultdict(set)
        for name in list_names(self.layout.pending):
            if parsed := parse_pending_name(name):
                index[parsed.id].add("pending")
        for path in self.store.processing_paths():
            if parsed_p := parse_processing_name(path.name):
                index[parsed_p[0]].add("processing")
        for state in ("done", "dead", "held"):
            for name in list_names(self.layout.root / state):
                if name.endswith(".json") and is_valid_id(name[:-5]):
                    index[name[:-5]].add(state)
        if holds:
            for name in list_names(self.layout.tmp):
                parts = parse_tmp_name(name)
                if parts and parts.verb in HOLD_VERBS and parts.subject:
                    index[parts.subject.rpartition(".")[0]].add("tmp")
        return index

    # -- repairs -------------------------------------------------------------------------

    def aside_fix(self, path: Path, job_id: str | None, reason: str) -> Fix:
        """Set a job file aside as `tmp/aside,HOST,PID,RAND,LABEL` (LABEL: where it stood)."""
        def fix() -> str:
            label = self.rel(path).replace("/", "~").replace(",", "~")
            aside = self.store.set_aside_as(path, label, reason, self.now, job_id)
            if aside is None:
                raise FileNotFoundError(f"{path} is gone")
            return f"set aside as {self.rel(aside)}"
        return fix

    def remove_fix(self, path: Path) -> Fix:
        """Remove a file that holds no job body (a marker, a token, scratch)."""
        def fix() -> str:
            if not discard(path):
                raise FileNotFoundError(f"{path} is gone")
            return "removed: it holds no job body"
        return fix

    def relocate_fix(self, path: Path, dest: Path, job_id: str, reason: str) -> Fix:
        """Rename a job file to `dest`, never over an existing file."""
        def fix() -> str:
            self.store.relocate(path, dest, self.now, job_id, reason)
            return f"renamed to {self.rel(dest)}"
        return fix

    def bury_fix(self, path: Path, job_id: str, error: str, job: str | None) -> Fix:
        """Move a job file spool cannot place to dead/ as `invalid`, kept as `dead/ID.orig`;
        when those names are taken, set it aside instead."""
        def fix() -> str:
            record = invalid_record(job_id, f"fsck: {error}", self.now, job)
            try:
                self.store.bury_unreadable(path, record, self.now)
                return f"moved to dead/{job_id}.json as invalid, kept as dead/{job_id}.orig"
            except FileExistsError:
                done = self.aside_fix(path, job_id, error)()
            original = self.layout.dead / f"{job_id}.orig"
            if path == self.layout.dead / f"{job_id}.json" and os.path.lexists(original):
                self.store.bury_unreadable(original, record, self.now)  # a rejection's record
                return f"{done}; wrote a new dead/{job_id}.json for dead/{job_id}.orig"
            return f"{done} (dead/{job_id}.json or dead/{job_id}.orig is taken)"
        return fix
