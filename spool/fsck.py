"""`spool fsck`: check every job file of a spool and repair what a crash, a full disk or a hand
edit left behind (README, Command line).

Invariant: fsck never deletes a job body. Without `repair` it only reads. With `repair` a job
file moves only through the store, and only
- to its canonical name, or to the terminal directory its outcome names, never over a file;
- to `dead/ID.json` as an `invalid` record, the file itself kept as `dead/ID.orig`;
- aside, as `tmp/aside,HOST,PID,RAND,LABEL` (LABEL: where it stood, `/` and `,` written `~`),
  a name recovery never clears, listed by fsck as INFO until an operator deals with it;
or, for a hold whose writer is gone, through `recovery.recover_holds`. What fsck removes holds
no body: stale markers, limit tokens, and scratch files that are not a job body.

The checks run in phases, each planned from a fresh listing and repaired before the next one
looks: layout, state directories (`fsck_states`), drops, tmp/ (`fsck_tmp`), then markers,
cancel requests and tokens (`fsck_marks`), which judge the jobs as the repairs left them.
"""

from __future__ import annotations

from datetime import datetime
from collections.abc import Callable

from spool.fsck_base import Finding, Report, Run
from spool.fsck_marks import check_cancels, check_markers, check_tokens
from spool.fsck_states import check_drops, check_layout, check_states
from spool.fsck_tmp import check_tmp, finish_recovery
from spool.store import Store

__all__ = ["Finding", "Report", "fsck"]

PHASES: tuple[Callable[[Run], list[Finding]], ...] = (
    check_layout, check_states, check_drops, check_tmp, check_markers, check_cancels,
    check_tokens)


def fsck(store: Store, now: datetime, repair: bool = False) -> Report:
    """Check the spool of `store`, repairing what it can when `repair`; `now` is the caller's
    clock. The report's `unrepaired` problems decide the exit code."""
    run = Run(store, now, repair)
    for phase in PHASES:
        run.settle(phase(run))
        if run.handed:
            finish_recovery(run)
    return run.report
