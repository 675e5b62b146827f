"""`{name}` placeholders in argv items and limit keys (README, Writing jobs): only `{name}` with
`name` an identifier is a placeholder; any other brace is literal, and `{{`/`}}` give one brace."""

from __future__ import annotations

import re

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


def placeholders(command: tuple[str, ...] | list[str]) -> list[str]:
    """The placeholder names of an argv template, in order, each once (README, Writing jobs): only
    `{name}` with `name` an identifier; any other brace is literal."""
    names: dict[str, None] = {}
    for item in command:
        for match in _PLACEHOLDER.finditer(item):
            if match.group(1) is not None and match.group(1).isidentifier():
                names[match.group(1)] = None
    return list(names)


def expand_item(item: str, mapping: dict[str, str]) -> str:
    """One argv item with its placeholders replaced from `mapping` (KeyError: one missing),
    `{{`/`}}` made single braces and every other brace kept as written."""
    def replace(match: re.Match[str]) -> str:
        text, name = match.group(0), match.group(1)
        if name is None:
            return text[0]
        return mapping[name] if name.isidentifier() else text
    return _PLACEHOLDER.sub(replace, item)
