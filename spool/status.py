"""`spool status`: counts from directory listings and host ledgers, never from job bodies."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from spool.config import Schedule
from spool.errors import InvalidInput
from spool.files import list_names, read_state
from spool.layout import parse_pending_name, parse_processing_name
from spool.pause import read_pauses
from spool.limits import usage
from spool.schedules import next_fire
from spool.store import Store
from spool.timeutil import due_stamp, format_time, parse_due


def status(store: Store, now: datetime) -> dict[str, Any]:
    """The `status --json` document (README, Command line)."""
    layout = store.layout
    pending = list_names(layout.pending)
    parsed = [p for name in pending if (p := parse_pending_name(name))]
    hosts = read_ledgers(store, now)
    # what the workers' claim passes found blocked, still pending: no pending body is read
    blocked = sorted({job_id for h in hosts for job_id in h.pop("blocked")}
                     & {p.id for p in parsed})
    now_stamp = due_stamp(now)
    skip = set(blocked)
    due = [p.due for p in parsed if p.due <= now_stamp and p.id not in skip]
    oldest = (now - parse_due(min(due))).total_seconds() if due else None
    capacity = max((h["capacity"] for h in hosts), default=0)
    unclaimable = sorted({job_id for h in hosts for job_id, slots in h.pop("unfit").items()
                          if slots > capacity})
    return {
        "spool": str(layout.root),
        "counts": {
            "pending": sum(1 for n in pending if n.endswith(".json") and not n.startswith(".")),
            "processing": sum(1 for _ in store.processing_paths()),
            "done": len(store.terminal_names("done")),
            "dead": len(store.terminal_names("dead")),
        },
        "oldest_pending_age": oldest,
        "hosts": hosts,
        "unclaimable": unclaimable,
        "schedules": [{"name": name, "next_fire": _fire(sched, now)}
                      for name, sched in sorted(store.config.schedules.items())],
        # README, Command line's shape, filled in as hold, pause, limits and explain arrive
        "held": len(store.terminal_names("held")),
        "paused": sorted(read_pauses(store).markers),
        "limits": usage(store),
        "blocked": blocked,
    }


def _fire(schedule: Schedule, now: datetime) -> str | None:
    fire = next_fire(schedule, now)
    return format_time(fire) if fire else None


def read_ledgers(store: Store, now: datetime) -> list[dict[str, Any]]:
    """Every host's ledger as a hint: capacity, used slots, running ids, heartbeat age."""
    hosts = []
    for name in sorted(list_names(store.layout.hosts)):
        if not name.endswith(".json") or name.endswith(".reaper.json"):
            continue
        path = store.layout.hosts / name
        try:
            ledger = read_state(path)
            age = now.timestamp() - os.lstat(path).st_mtime
        except (OSError, InvalidInput):
            continue
        running = _still_running(store, name[:-5], ledger.get("running"))
        hosts.append({
            "host": ledger.get("host", name[:-5]),
            "capacity": ledger.get("capacity", 0),
            "used": sum(entry.get("slots", 1) for entry in running.values()),
            "running": sorted(running),
            "heartbeat_age": max(0.0, age),
            "workers": len(ledger.get("workers", {})),
            "unfit": ledger.get("unfit", {}),
            "blocked": [str(k) for k in blocked] if isinstance(
                blocked := ledger.get("blocked"), dict) else [],
        })
    return hosts


def _still_running(store: Store, host: object, running: object) -> dict[str, Any]:
    """The ledger's running entries whose attempt still has its file in processing/<host>/:
    a worker drops an ended attempt's entry only under its next lock, so the ledger alone
    would show an idle host busy with finished jobs."""
    if not isinstance(running, dict) or not isinstance(host, str):
        return {}
    try:
        names = list_names(store.layout.host_processing(host))
    except (OSError, ValueError):
        return {}
    on_disk = {parsed for n in names if (parsed := parse_processing_name(n))}
    return {job_id: entry for job_id, entry in running.items()
            if isinstance(entry, dict) and (job_id, entry.get("attempt")) in on_disk}


def format_status(doc: dict[str, Any]) -> str:
    """Aligned text for people."""
    counts = doc["counts"]
    lines = [f"spool      {doc['spool']}",
             "jobs       " + "  ".join(f"{k} {v}" for k, v in counts.items())]
    age = doc["oldest_pending_age"]
    lines.append(f"oldest due {'-' if age is None else f'{age:.1f}s ago'}")
    lines.append("hosts" if doc["hosts"] else "hosts      none (start one with 'spool worker')")
    for h in doc["hosts"]:
        lines.append(f"  {h['host']:<16} slots {h['used']}/{h['capacity']}  workers "
                     f"{h['workers']}  heartbeat {h['heartbeat_age']:.1f}s ago  running "
                     f"{', '.join(h['running']) or '-'}")
    if doc["unclaimable"]:
        lines.append("unclaimable (need more slots than any host has): "
                     + ", ".join(doc["unclaimable"]))
    if doc["blocked"]:
        lines.append("blocked (a dependency is missing; see 'spool explain ID'): "
                     + ", ".join(doc["blocked"]))
    if doc.get("held"):
        lines.append(f"held       {doc['held']} (spool ls held; spool release ID)")
    if doc.get("paused"):
        lines.append("paused     " + ", ".join(doc["paused"]) + " (spool resume ...)")
    paused = set(doc.get("paused") or ())
    for pool in doc["limits"]:
        key = "" if pool["key"] == "_" else f":{pool['key']}"
        lines.append(f"limit      {pool['name'] + key:<16} {pool['used']}/{pool['max'] or '?'}"
                     f"  held by {', '.join(pool['holders']) or '-'}")
    for s in doc["schedules"]:
        lines.append(f"schedule   {s['name']:<16} next {s['next_fire'] or 'after its upstream'}"
                     + (" (paused)" if {"all", f"schedule.{s['name']}"} & paused else ""))
    return "\n".join(lines)
