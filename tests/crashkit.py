"""Crash simulation for unit tests of the job-moving code: the n-th rename raises `Crash`, a
BaseException like the SIGKILL it stands for, so no `except Exception` in spool can absorb it."""

from __future__ import annotations

import os

import pytest


class Crash(BaseException):
    """Stands for the process dying (SIGKILL) at this point."""


def crash_on_rename(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Make the n-th rename from now on raise Crash (the ones before it happen)."""
    real = os.rename
    calls = {"n": 0}

    def rename(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == n:
            raise Crash(f"crash at rename {n}: {src} -> {dst}")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
