"""JSON values spool can write and read back: nested at most MAX_DEPTH, every string
encodable as UTF-8, no NaN or infinity. Anything else is InvalidInput naming the value, never a
RecursionError, UnicodeEncodeError or a hang.
"""

from __future__ import annotations

import json
from typing import Any

from spool.errors import InvalidInput

MAX_DEPTH = 100  # lists and objects nested in one JSON document (a job object is level 1)
_STRICT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def load_json(data: bytes | str, what: str) -> Any:
    """The JSON value in `data`; InvalidInput naming `what` when it is not JSON or is nested
    deeper than MAX_DEPTH (the parser's own recursion limit never shows as RecursionError)."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise InvalidInput(f"{what}: {too_deep()}") from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise InvalidInput(f"{what}: not valid JSON: {exc}") from None
    if not within_depth(value, _brackets(data)):
        raise InvalidInput(f"{what}: {too_deep()}")
    return value


def too_deep() -> str:
    return f"JSON nested deeper than {MAX_DEPTH} levels"


def _brackets(data: bytes | str) -> int:
    """An upper bound of the nesting depth of JSON text: its count of `[` and `{`."""
    if isinstance(data, str):
        return data.count("[") + data.count("{")
    return data.count(b"[") + data.count(b"{")


def within_depth(value: Any, bound: int | None = None) -> bool:
    """Whether `value` nests lists and objects at most MAX_DEPTH deep. Iterative, so it never
    recurses; a cycle counts as too deep. `bound`, a known upper bound, skips the walk."""
    if (bound is not None and bound <= MAX_DEPTH) or not isinstance(value, (dict, list, tuple)):
        return True
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return False
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, (dict, list, tuple)))
    return True


def printable(text: str) -> str:
    """`text` as UTF-8 can hold it: the bytes of a surrogate-escaped file name, or a lone
    surrogate, become replacement characters (for records and messages, never for paths)."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")


def check_value(value: Any, what: str) -> None:
    """InvalidInput naming `what` unless spool can write `value` as JSON and read it back: no
    NaN or infinity, no string UTF-8 cannot encode (a lone surrogate), at most MAX_DEPTH deep."""
    try:
        text = _STRICT.encode(value)
    except RecursionError:
        raise InvalidInput(f"{what}: {too_deep()}") from None
    except (TypeError, ValueError) as exc:
        problem = "NaN and Infinity are not JSON numbers" if "float" in str(exc) else exc
        raise InvalidInput(f"{what} is not a JSON value: {problem}") from None
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        around = text[max(0, exc.start - 20):exc.end + 20]
        raise InvalidInput(f"{what}: {text[exc.start:exc.end]!r} is not encodable as UTF-8 "
                           f"(a lone surrogate) in {around!r}") from None
    if not within_depth(value, _brackets(text)):
        raise InvalidInput(f"{what}: {too_deep()}")
