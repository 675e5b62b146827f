"""Job dependencies (docs/protocol.md, Dependencies): `after` (the dependency completed),
`after_any` (it finished in any way: done/ or dead/) and `after_failed` (it ended in dead/).

A dependency's fate is read from done/ and dead/ alone (one open each): terminal files have no
other writer, so a verdict of `met` or `never` cannot be undone by a race. Anything else is
`waiting` while the dependency stands in pending/, processing/ or held/, and `missing` when it
is nowhere (purged, or never submitted): the dependent is then *blocked* — it waits for
something that may never come back, and an operator must act. A `never` verdict ends the
dependent in done/ as cancelled (the claim pass does that); `missing` never ends anything.

`DependencyPass` is what one claim pass learns, memoised per dependency id so that a thousand
jobs waiting on one build cost one read of it, and the set of blocked jobs it leaves in the
host ledger (`blocked`: id -> missing dependency) for `status` to show without reading a single
pending body. A job is journalled `block` when first found blocked and `unblock` when it no
longer is (its dependency came back, or it left pending/): once per host, not every pass.
"""

from __future__ import annotations

import os
from collections.abc import Container, Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from spool.catalog import Catalog
from spool.errors import InvalidInput, JobNotFound
from spool.files import list_names
from spool.layout import parse_pending_name, parse_processing_name, validate_id

if TYPE_CHECKING:
    from spool.ledger import Ledger
    from spool.store import Store

KINDS = ("after", "after_any", "after_failed")
_WANTS = {"after": "complete", "after_any": "finish", "after_failed": "fail"}


class Verdict(NamedTuple):
    """One dependency judged: `met`, `never`, `waiting` or `missing`, and what became of it."""

    verdict: str
    fate: str  # "completed", "cancelled", "dead (failed)", "pending", "missing", ...


def dependencies(body: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The (kind, id) pairs of a job body, `after` first; items that are not ids are skipped
    (a hand-made file: `normalize` rejects them at the claim)."""
    pairs: list[tuple[str, str]] = []
    for kind in KINDS:
        deps = body.get(kind)
        if isinstance(deps, list):
            pairs.extend((kind, dep) for dep in deps if isinstance(dep, str))
    return tuple(pairs)


def terminal_fate(catalog: Catalog, dep: str) -> tuple[str, str | None] | None:
    """(state, outcome) of a finished dependency, None while it is not in done/ or dead/
    (an outcome of None: its terminal file is being filled)."""
    for state in ("done", "dead"):
        try:
            outcome = catalog.read(catalog.layout.state_dir(state) / f"{dep}.json").get("outcome")
        except (OSError, InvalidInput):
            continue
        return state, outcome if isinstance(outcome, str) else None
    return None


def judge(kind: str, fate: tuple[str, str | None]) -> Verdict:
    """The verdict of a `kind` dependency that finished with `fate` (state, outcome)."""
    state, outcome = fate
    shown = f"dead ({outcome or 'being buried'})" if state == "dead" else (outcome or "done")
    if kind == "after_any":
        return Verdict("met", shown)
    if kind == "after_failed":
        return Verdict("met" if state == "dead" else "never", shown)
    if state == "done" and outcome == "completed":
        return Verdict("met", shown)
    if state == "done" and outcome is None:  # filled microseconds later
        return Verdict("waiting", "done")
    return Verdict("never", shown)


def never_reason(kind: str, dep: str, fate: str) -> str:
    """The `error` of a dependent ended because `dep` can no longer do what `kind` waits for."""
    return (f"dependency {dep!r} ({kind}) ended {fate}: it can never {_WANTS[kind]}, "
            "so this job can never run")


def require_known(catalog: Catalog, body: dict[str, Any], also: Iterable[str] = ()) -> None:
    """JobNotFound naming the first dependency of any kind that is no job in any state
    (docs/protocol.md, Dependencies: submit rejects an unknown dependency); `also`: ids of the same
    batch."""
    batch = set(also)
    for kind, dep in dependencies(body):
        dep = validate_id(dep, kind)
        if dep == body.get("id"):
            raise InvalidInput(f"dependency {dep!r} ({kind}) is the job itself: it would wait "
                               "forever")
        if dep in batch or catalog.locate(dep) is not None \
                or os.path.lexists(catalog.layout.root / "held" / f"{dep}.json"):
            continue
        raise JobNotFound(f"dependency {dep!r} ({kind}): no job with that id in "
                          f"{catalog.layout.root} (purged, or never submitted)")


class DependencyPass:
    """The dependencies one claim pass looks at, each judged once (call under the host lock:
    `finish` writes the ledger's `blocked`)."""

    def __init__(self, store: Store, pending_ids: Container[str],
                 known_missing: Iterable[str] = ()) -> None:
        self.store = store
        self.pending_ids = pending_ids  # the ids of the claimer's view of pending/
        self.known_missing = set(known_missing)  # found missing by an earlier pass
        self.memo: dict[tuple[str, str], Verdict] = {}
        self.fates: dict[str, tuple[str, str | None] | None] = {}
        self._processing: set[str] | None = None
        self._listed: set[str] | None = None
        self.blocked: dict[str, str] = {}  # job id -> its missing dependency
        self.seen: set[str] = set()

    def check(self, job_id: str, deps: tuple[tuple[str, str], ...],
              path: Path | None = None) -> tuple[str, str | None]:
        """("met" | "waiting" | "blocked" | "never" | "gone", the reason a `never` job ends
        with). `path`: the job's pending file, looked at once it seems blocked: the claimer's
        view may still list a job that was cancelled ("gone": drop it from the view)."""
        self.seen.add(job_id)
        result: tuple[str, str | None] = ("met", None)
        for kind, dep in deps:
            verdict = self.verdict(kind, dep)
            if verdict.verdict == "never":
                self.blocked.pop(job_id, None)  # it ends now: never journalled as blocked
                return "never", never_reason(kind, dep, verdict.fate)
            if verdict.verdict == "missing" and result[0] != "blocked":
                self.blocked[job_id] = dep
                result = ("blocked", None)
            elif verdict.verdict == "waiting" and result[0] == "met":
                result = ("waiting", None)
        if result[0] == "blocked" and path is not None and not os.path.lexists(path):
            self.seen.discard(job_id)
            del self.blocked[job_id]
            return "gone", None
        return result

    def verdict(self, kind: str, dep: str) -> Verdict:
        if (kind, dep) not in self.memo:
            self.memo[(kind, dep)] = self._judge(kind, dep)
        return self.memo[(kind, dep)]

    def _fate(self, dep: str) -> tuple[str, str | None] | None:
        if dep not in self.fates:
            self.fates[dep] = terminal_fate(self.store, dep)
        return self.fates[dep]

    def _judge(self, kind: str, dep: str) -> Verdict:
        fate = self._fate(dep)
        if fate is not None:
            return judge(kind, fate)
        if self._live(dep):
            return Verdict("waiting", "pending, running or held")
        # it may have finished while we looked elsewhere: a terminal file is final
        self.fates[dep] = fate = terminal_fate(self.store, dep)
        return judge(kind, fate) if fate is not None else Verdict("missing", "missing")

    def _live(self, dep: str) -> bool:
        """Whether `dep` stands in pending/ (the view's ids), processing/ or held/."""
        if dep in self.pending_ids:
            return True
        if os.path.lexists(self.store.layout.root / "held" / f"{dep}.json"):
            return True
        if self._processing is None:
            self._processing = {parsed[0] for path in self.store.processing_paths()
                                if (parsed := parse_processing_name(path.name))}
        if dep in self._processing:
            return True
        # the view is a hint: a dependency submitted or requeued since its refresh is only in
        # a fresh listing, taken once per pass when a dependency first looks missing (one
        # already known missing is left to the view, or every pass would list pending/)
        return dep not in self.known_missing and dep in self._listing()

    def _listing(self) -> set[str]:
        if self._listed is None:
            self._listed = {p.id for n in list_names(self.store.layout.pending)
                            if (p := parse_pending_name(n))}
        return self._listed

    def finish(self, ledger: Ledger, now: datetime, complete: bool) -> None:
        """Record in the ledger which jobs are blocked, journalling the changes. `complete`:
        the pass looked at every due job, so a blocked one it did not see left pending/."""
        for job_id, dep in self.blocked.items():
            if job_id not in ledger.blocked:
                self.store.journal.record(now, "block", job_id, host=self.store.host,
                                          dependency=dep)
            ledger.blocked[job_id] = dep
        for job_id in list(ledger.blocked):
            if job_id in self.blocked or (job_id not in self.seen and not complete):
                continue
            if job_id not in self.seen and job_id in self._listing():
                continue  # another worker of this host saw it in a fresher view: still pending
            del ledger.blocked[job_id]
            self.store.journal.record(now, "unblock", job_id, host=self.store.host)


def check_dependencies(store: Store, deps: tuple[tuple[str, str], ...]) -> bool:
    """Whether every dependency is met now (for a burst worker deciding whether to wait)."""
    return DependencyPass(store, set()).check("", deps)[0] == "met"
