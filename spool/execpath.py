"""Where a job type's program lives along PATH, found once instead of by every start.

`execvp` tries `execve` in each PATH directory until one works: with `true` in /usr/bin and
/usr/local/sbin first on PATH, that is 8 failed `execve` calls per attempt. The worker finds the
program the way `execvp` would — the first PATH entry holding an executable regular file — and
keeps it until the config is reloaded. Only hits are kept: a missing program is searched again
at each start (a deploy may add it) and fails with the error `execvp` gives. A relative PATH
entry before the hit leaves the search to `execvp` (it depends on the working directory).
"""

from __future__ import annotations

import os
import stat

_found: dict[tuple[str, str | None], str] = {}


def find_program(name: str, path: str | None) -> str | None:
    """The absolute path `execvp` would run for `name` with this PATH (None: let it search)."""
    if not name or "/" in name:
        return None
    key = (name, path)
    if key in _found:
        return _found[key]
    for directory in os.get_exec_path({"PATH": path} if path is not None else None):
        if not os.path.isabs(directory):
            return None
        candidate = os.path.join(directory, name)
        try:
            mode = os.stat(candidate).st_mode
        except OSError:
            continue
        if stat.S_ISREG(mode) and os.access(candidate, os.X_OK):
            _found[key] = candidate
            return candidate
    return None


def forget(name: str | None = None, path: str | None = None) -> None:
    """Search again: for one program that failed to start, or for all (a config reload)."""
    if name is None:
        _found.clear()
    else:
        _found.pop((name, path), None)
