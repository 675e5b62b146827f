"""Who may submit what (docs/protocol.md, Who may submit what): `allow = ["alice", "@ops"]` in
`[jobs.NAME]`.

A job of a type with `allow` runs only when its owner is a listed user or a member (primary
or supplementary group) of a listed group; any other is rejected to dead/ as `invalid`, with an
error naming the owner and the type. The owner is the owner of the job file, which `rename`
preserves from the submitter's pending/ file to the processing file the worker claimed; the
worker judges it with `fstat` of the processing file it holds open, so nobody can swap it.

Spool itself rewrites job files as the daemons' user (adopting a drop, requeueing a failed
attempt, recovering a lost one). Such a file would be owned by the spool's owner, so it carries
the owner spool judged in the body field `owner` (a uid), and that field is believed only in a
file owned by the spool's owner (the user the judging process runs as): in any other file the
file's owner is the owner, whatever the body says. A job the spool's owner submits itself
(CLI, API, cron) carries no `owner` and is judged as the spool's owner: list that user too if
it submits jobs of a restricted type.
"""

from __future__ import annotations

import grp
import os
import pwd
from typing import TYPE_CHECKING, Any

from spool.errors import InvalidInput

if TYPE_CHECKING:
    from spool.config import JobType

OWNER_FIELD = "owner"


def check_allow(value: Any) -> tuple[str, ...]:
    """`allow` from spool.toml: a list of user names and `@group` names that exist on this
    host; InvalidInput naming every unknown one (a typo would otherwise reject every job)."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip("@") for v in value):
        raise InvalidInput(f"{value!r} must be a list of user names and '@group' names")
    unknown = [entry for entry in value if not _exists(entry)]
    if unknown:
        raise InvalidInput("no such " + ", ".join(
            f"group {e[1:]!r}" if e.startswith("@") else f"user {e!r}" for e in unknown)
            + " on this host")
    return tuple(value)


def _exists(entry: str) -> bool:
    try:
        if entry.startswith("@"):
            grp.getgrnam(entry[1:])
        else:
            pwd.getpwnam(entry)
    except KeyError:
        return False
    return True


def owner_name(uid: int) -> str:
    """The user name of `uid`, or `uid N` when it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError, ValueError):
        return f"uid {uid}"


def is_allowed(uid: int, allow: tuple[str, ...]) -> bool:
    """Whether the user `uid` is listed, or is in a listed group (primary or supplementary)."""
    try:
        user = pwd.getpwuid(uid)
    except (KeyError, OverflowError, ValueError):
        return False  # a uid without a name is in no list
    if user.pw_name in allow:
        return True
    groups = {entry[1:] for entry in allow if entry.startswith("@")}
    if not groups:
        return False
    try:
        gids = os.getgrouplist(user.pw_name, user.pw_gid)
    except OSError:
        gids = [user.pw_gid]
    for gid in gids:
        try:
            if grp.getgrgid(gid).gr_name in groups:
                return True
        except KeyError:
            continue
    return False


def effective_owner(file_uid: int, body: dict[str, Any]) -> int:
    """Who owns the job: the file's owner, or, in a file spool's user wrote, the owner spool
    judged before it rewrote the file."""
    carried = body.get(OWNER_FIELD)
    if file_uid == os.geteuid() and isinstance(carried, int) and not isinstance(carried, bool) \
            and carried >= 0:
        return carried
    return file_uid


def refusal(jtype: JobType | None, file_uid: int | None, body: dict[str, Any]) -> str | None:
    """Why this job may not run (its owner is not allowed for its type), or None; a body that
    passes gets its owner recorded in it for spool's own rewrites of the file."""
    if jtype is None or jtype.allow is None or file_uid is None:
        return None
    uid = effective_owner(file_uid, body)
    if not is_allowed(uid, jtype.allow):
        return (f"owner {owner_name(uid)} may not submit jobs of type {jtype.name!r} "
                f"(allow = {list(jtype.allow)})")
    body[OWNER_FIELD] = uid
    return None


def carry_owner(jtype: JobType | None, file_uid: int, body: dict[str, Any]) -> dict[str, Any]:
    """`body` with its owner recorded, before spool's user rewrites the file it came from."""
    if jtype is None or jtype.allow is None:
        return body
    return {**body, OWNER_FIELD: effective_owner(file_uid, body)}
