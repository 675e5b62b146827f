"""The systemd units as `spool doctor` sees them (systemd/spool-worker@.service).

The worker unit's sandbox is every job's sandbox, and its TimeoutStopSec must outlast the drain
(`grace`) and the stop of the jobs (`kill_grace`): the unit cannot read spool.toml, so doctor
compares them, through `systemctl show` where it can, else against the shipped value.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from spool.api import Spool
from spool.config import load_config
from spool.errors import SpoolError

Finding = tuple[str, str]

SHIPPED_STOP_TIMEOUT = 50.0  # TimeoutStopSec of systemd/spool-worker@.service
SANDBOX_PROPERTIES = ("ProtectSystem", "ProtectHome", "PrivateTmp", "ReadWritePaths",
                      "WorkingDirectory")
_TIMESPAN_UNITS = {"us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3, "s": 1.0, "sec": 1.0,
                   "m": 60.0, "min": 60.0, "h": 3600.0, "hr": 3600.0, "d": 86400.0,
                   "w": 604800.0, "M": 2629800.0, "y": 31557600.0}


def systemd_escape_path(path: Path | str) -> str:
    """`systemd-escape --path PATH`: the instance name of a unit for that path."""
    parts = [p for p in str(path).split("/") if p not in ("", ".")]
    if not parts:
        return "-"
    out = []
    for i, ch in enumerate("/".join(parts)):
        if ch == "/":
            out.append("-")
        elif (ch.isascii() and (ch.isalnum() or ch in ":_.")) and not (i == 0 and ch == "."):
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
    return "".join(out)


def parse_timespan(text: str) -> float | None:
    """Seconds of a systemd time span as `systemctl show` prints it (`1min 30s`, `50s`,
    `500ms`); None for `infinity` or what it cannot read."""
    text = text.strip()
    tokens = re.findall(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)", text)
    if not tokens or text == "infinity":
        return None
    total = 0.0
    for number, unit in tokens:
        if unit and unit not in _TIMESPAN_UNITS:
            return None
        total += float(number) * _TIMESPAN_UNITS.get(unit, 1.0)  # a bare number: seconds
    return total


def unit_properties(unit: str, names: tuple[str, ...]) -> tuple[dict[str, str] | None, str]:
    """`systemctl show` of `unit` (the properties `names` and LoadState), or None and why
    they cannot be read."""
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return None, "no systemctl on this host"
    try:
        result = subprocess.run(
            [systemctl, "show", f"--property={','.join(('LoadState', *names))}", "--", unit],
            capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"systemctl show failed: {exc}"
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        return None, f"systemctl show failed: {lines[-1] if lines else result.returncode}"
    props = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    if props.get("LoadState") != "loaded":
        return None, f"{unit} is not installed here ({props.get('LoadState', 'unknown')})"
    return props, ""


def check_worker_unit(sp: Spool) -> list[Finding]:
    """The worker unit of this spool stops after TimeoutStopSec: it must cover the drain
    (`grace`) and the stop of the jobs (`kill_grace`, the largest of the job types); and its
    sandbox is every job's sandbox: say what it allows."""
    try:
        config = load_config(sp.layout.config_path)
    except (OSError, SpoolError):
        return []  # the config check says what is wrong
    kill_grace = max([config.defaults.kill_grace] + [t.kill_grace for t in config.jobs.values()])
    need = config.defaults.grace + kill_grace
    advice = int(need) + 10
    unit = f"spool-worker@{systemd_escape_path(sp.path.resolve())}.service"
    props, why = unit_properties(unit, ("TimeoutStopUSec", *SANDBOX_PROPERTIES))
    if props is None:
        if need >= SHIPPED_STOP_TIMEOUT:
            return [("WARN", f"systemd: grace + kill_grace is {need:g}s, the shipped "
                     f"spool-worker@ unit stops after TimeoutStopSec={SHIPPED_STOP_TIMEOUT:g}: "
                     f"systemd would kill jobs mid-drain; set TimeoutStopSec={advice} in a "
                     f"drop-in (cannot check the unit: {why})")]
        return [("OK", f"systemd: cannot check {unit} ({why}); the shipped "
                 f"TimeoutStopSec={SHIPPED_STOP_TIMEOUT:g} covers grace + kill_grace ({need:g}s)")]
    findings: list[Finding] = []
    raw = props.get("TimeoutStopUSec", "")
    stop = parse_timespan(raw)
    if stop is not None and stop <= need:
        findings.append(("WARN", f"systemd: {unit} has TimeoutStopSec={raw}, not more than "
                         f"grace + kill_grace ({need:g}s): systemd kills jobs mid-drain; set "
                         f"TimeoutStopSec={advice} in a drop-in"))
    else:
        findings.append(("OK", f"systemd: {unit} TimeoutStopSec={raw or '?'} covers grace + "
                         f"kill_grace ({need:g}s)"))
    sandbox = ", ".join(f"{name}={props.get(name) or '-'}" for name in SANDBOX_PROPERTIES)
    findings.append(("OK", f"systemd: jobs of {unit} run with {sandbox}; a job writing "
                     "anywhere else needs ReadWritePaths= in a drop-in (see "
                     "systemd/spool-worker@.service.d/example-paths.conf.example)"))
    return findings
