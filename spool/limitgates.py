"""The limits gate of `spool explain` (docs/protocol.md, Limit tokens): for each pool a pending job
needs, whether a token is free, and otherwise which attempts hold the pool's tokens."""

from __future__ import annotations

from typing import Any, TYPE_CHECKING

from spool.errors import InvalidInput
from spool.files import list_names
from spool.limits import holders, pool_dir, token_indexes
from spool.limitspec import pools_of

if TYPE_CHECKING:
    from spool.catalog import Catalog

Verdict = tuple[str, str, "str | None"]  # (verdict, detail, subject) of one limits gate


def pool_verdicts(catalog: Catalog, body: dict[str, Any]) -> list[Verdict]:
    """One verdict per pool `body` needs ("ok" with a free token, "waiting" when full)."""
    try:
        pools = pools_of(catalog.config, body)
    except InvalidInput as exc:
        return [("blocked", f"{exc}: a claim rejects it as invalid", None)]
    if not pools:
        return [("ok", "none", None)]
    gates: list[Verdict] = []
    for ref in pools:
        cap = catalog.config.limits[ref.name].max
        found = list(holders([pool_dir(catalog, ref)]))
        who = ", ".join(f"{h.job_id} attempt {h.attempt} on {h.host}" if h.job_id
                        else f"unreadable token {h.path}" for h in found)
        if len(found) < cap:
            detail = f"{ref.label}: {len(found)} of {cap} tokens held" + \
                (f" (by {who})" if found else "")
            gates.append(("ok", detail, ref.label))
        else:
            gates.append(("waiting", f"limit {ref.label} is full: {len(found)} of {cap} tokens "
                          f"held by {who}", ref.label))
    return gates


def full_pool(catalog: Catalog, body: dict[str, Any]) -> str | None:
    """The first pool `body` needs that is full now (for `ls`: one listing per pool)."""
    try:
        pools = pools_of(catalog.config, body)
    except InvalidInput:
        return None
    for ref in pools:
        if len(token_indexes(list_names(pool_dir(catalog, ref)))) >= \
                catalog.config.limits[ref.name].max:
            return ref.label
    return None
