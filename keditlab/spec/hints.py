"""Small helpers that make messages human: did-you-mean, and naming values and types.

Kept apart from validation so every message in keditlab suggests and
describes things the same way.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable

#: How JSON Schema type names read in a message.
TYPE_WORDS = {
    "object": "a mapping (key: value lines)",
    "array": "a list",
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "nothing (null)",
}


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice most like ``word`` (a typo's likely intent), or None if none is close."""
    choices = [c for c in choices if isinstance(c, str)]
    lowered = {c.lower(): c for c in choices}
    if isinstance(word, str) and word.lower() in lowered:  # wrong case only
        return lowered[word.lower()]
    matches = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` or an empty string."""
    match = closest(word, choices)
    return f" (did you mean '{match}'?)" if match else ""


def quoted_list(items: Iterable[Any]) -> str:
    """``a, b, c`` for choices a user copies from."""
    return ", ".join(str(i) for i in items)


def shorten(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def describe_value(value: Any) -> str:
    """What the user wrote, named by kind: ``the text 'abc'``, ``the number 5``, ``a list``."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{'true' if value else 'false'} (a boolean)"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text '{shorten(value)}'"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def describe_types(types: Iterable[str]) -> str:
    """``a list or a mapping`` for a set of JSON Schema type names."""
    words = [TYPE_WORDS.get(t, t) for t in types]
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " or " + words[-1]


def json_type(value: Any) -> str:
    """The JSON Schema type name of a Python value (bool is not an integer)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
