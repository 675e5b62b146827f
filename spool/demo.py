"""Handlers used by the embedded demo spool of `spool run` and by the examples."""

from __future__ import annotations

import hashlib
import os
from typing import Any


def checksum(text: str = "") -> dict[str, Any]:
    """The SHA-256 of `text`."""
    return {"sha256": hashlib.sha256(text.encode()).hexdigest(), "length": len(text)}


def flaky(message: str = "") -> str:
    """Fails on the first attempt, succeeds on the next: shows a retry with backoff."""
    if os.environ.get("SPOOL_ATTEMPT") == "1":
        raise RuntimeError("first attempt fails on purpose")
    return f"succeeded on attempt {os.environ.get('SPOOL_ATTEMPT')}: {message}"


def noop() -> None:
    """Does nothing (benchmarks)."""
