"""Which limit pools a job needs (docs/protocol.md, Limit tokens): its job type's `limits` plus the
job file's own, each `NAME` (one pool) or `NAME:KEY` (a partitioned limit: one pool per KEY, which
may hold `{arg}` placeholders filled from the job's args as argv items are).

A pool lives in `limits/<name>/<key>/`, `<key>` being `_` for a plain `NAME` and otherwise the
first 32 hex digits of the SHA-256 of the KEY's UTF-8 bytes: any value makes a safe, fixed-length
directory name, and every host derives the same one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from spool.config import Config
from spool.errors import InvalidInput
from spool.templates import expand_item, placeholders

UNPARTITIONED = "_"
DIGEST_CHARS = 32
MAX_KEY_BYTES = 1024


@dataclass(frozen=True, order=True)
class PoolRef:
    """One pool a job needs: a limit's name and, for a partitioned limit, the key's value."""

    name: str
    value: str | None = None

    @property
    def key(self) -> str:
        """The pool's directory name under `limits/<name>/`."""
        return UNPARTITIONED if self.value is None else pool_key(self.value)

    @property
    def label(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


def pool_key(value: str) -> str:
    """The directory name of a partitioned pool (see the module docstring)."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:DIGEST_CHARS]


def check_limit_list(value: Any) -> list[str]:
    """A job file's `limits` field: a list of "NAME" or "NAME:KEY" strings."""
    if not isinstance(value, list) or not all(isinstance(ref, str) and ref.partition(":")[0]
                                              for ref in value):
        raise InvalidInput(f"field 'limits' must be a list of \"NAME\" or \"NAME:KEY\" strings, "
                           f"not {value!r}")
    return value


def pools_of(config: Config, body: dict[str, Any]) -> tuple[PoolRef, ...]:
    """The pools `body` needs, sorted, each once; InvalidInput naming an undeclared limit or a
    placeholder its args lack."""
    jtype = config.job_type(body.get("job") or "")
    refs = [*(jtype.limits if jtype else ()), *(body.get("limits") or ())]
    return tuple(sorted({_resolve(config, ref, body.get("args")) for ref in refs}))


def _resolve(config: Config, ref: str, args: Any) -> PoolRef:
    name, partitioned, template = ref.partition(":")
    if name not in config.limits:
        known = ", ".join(sorted(config.limits)) or "none declared in spool.toml"
        raise InvalidInput(f"unknown limit {name!r} in {ref!r} (known: {known})")
    if not partitioned:
        return PoolRef(name)
    needed = placeholders([template])
    if needed and not isinstance(args, dict):
        raise InvalidInput(f"limit {ref!r} is keyed by args: args must be an object with "
                           f"{', '.join(needed)}, not {args!r}")
    missing = [each for each in needed if each not in args]
    if missing:
        raise InvalidInput(f"limit {ref!r} needs argument {missing[0]!r} "
                           f"(give it with -a {missing[0]}=VALUE)")
    value = expand_item(template, {each: _text(args[each]) for each in needed})
    if not value or len(value.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidInput(f"limit {ref!r} gives the key {value!r}: a key must be 1 to "
                           f"{MAX_KEY_BYTES} bytes")
    return PoolRef(name, value)


def _text(value: Any) -> str:
    """An arg as a key: a string as it is, anything else as JSON (as argv items get it)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
