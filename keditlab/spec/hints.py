"""Small helpers that make messages human: did-you-mean, and naming values and types.

Kept apart from validation so every message in keditlab suggests and
describes things the same way.
"""

from __future__ import annotations

from typing import Any, Iterable

from keditlab.vocabulary import closest, did_you_mean, shorten  # noqa: F401  (re-exported: messages everywhere use them)

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


def quoted_list(items: Iterable[Any]) -> str:
    """``a, b, c`` for choices a user copies from."""
    return ", ".join(str(i) for i in items)


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


# -- suggestions built from the user's own edit ---------------------------------------------

#: Words that open a sentence or a question, capitalised only because they come first.
_OPENERS = frozenset(
    "the a an what who whom whose which when where why how in on at of for to from by is are was were does do did "
    "this that these those it its there".split()
)
#: Short lowercase words that may sit inside a name (``Leaning Tower of Pisa``, ``Charles de Gaulle``).
_JOINERS = frozenset("of de du la le von van der den da di the and".split())


def _bare(word: str) -> str:
    return word.strip(".,;:!?\"'()[]{}“”‘’")


def subject_in(prompt: str) -> str | None:
    """The entity a prompt is most likely about: its longest run of capitalised words.

    ``Toyota is a company from the country of`` → ``Toyota``; ``The Eiffel Tower
    is located in`` → ``Eiffel Tower`` (an opening ``The``/``What``/... is
    capitalised only because it comes first).  Lowercase joiners inside a name
    are kept (``Tower of Pisa``).  None when no word is capitalised.  The result
    is spelled exactly as in the prompt, as a subject must be.
    """
    if not isinstance(prompt, str):
        return None
    words = [_bare(w) for w in prompt.split()]
    runs: list[list[str]] = []
    current: list[str] = []
    for i, word in enumerate(words):
        capital = bool(word) and (word[0].isupper() or word[0].isdigit() and current != [])
        if capital and not (i == 0 and word.lower() in _OPENERS):
            current.append(word)
        elif current and word.lower() in _JOINERS and i + 1 < len(words) and words[i + 1][:1].isupper():
            current.append(word)
        else:
            if current:
                runs.append(current)
            current = []
    if current:
        runs.append(current)
    if not runs:
        return None
    best = max(runs, key=len)  # the first of the longest
    phrase = " ".join(best)
    return phrase if phrase in prompt else None


def _quoted(text: Any) -> str:
    return f'"{shorten(str(text), 50)}"'


def _text_value(mapping: Any, key: str) -> str | None:
    value = mapping.get(key) if isinstance(mapping, dict) else None
    return value if isinstance(value, str) and value.strip() else None


def suggested_value(key: str, mapping: Any) -> str | None:
    """What to write for ``key`` of an edit, a probe or a traced prompt, built from that mapping's own values.

    A fix built from the spec's own documentation examples reads as nonsense next
    to another fact (a Mount Fuji edit told to add ``target: Rome``), so a
    suggestion either comes from the mapping itself — the subject is taken from
    the prompt's words — or is a placeholder that says what is needed, quoting
    the mapping's values where it has them.  Never another fact's answer.  None
    for a key this does not know (the caller falls back to the schema's example).
    """
    prompt, subject = _text_value(mapping, "prompt"), _text_value(mapping, "subject")
    target, truth = _text_value(mapping, "target"), _text_value(mapping, "ground_truth")
    if key == "subject":
        found = subject_in(prompt) if prompt else None
        if found:
            return found
        return f"<the entity {_quoted(prompt)} is about, spelled as there>" if prompt else "<the entity the fact is about>"
    if key == "target":
        instead = f", instead of {truth}," if truth else ""
        return f"<the new answer{instead} to {_quoted(prompt)}>" if prompt else "<the new answer the edited model should give>"
    if key == "ground_truth":
        if prompt:
            return f"<the answer the unedited model gives to {_quoted(prompt)}>"
        return "<the answer the model gives before the edit>"
    if key == "prompt":
        answer = _text_value(mapping, "answer")
        if answer:  # a probe
            return f"<a prompt the model should complete with {answer}>"
        if subject and target:
            return f"<a sentence about {subject} that {target} should complete>"
        if subject:
            return f"<a sentence about {subject} that the model completes>"
        return "<the text the model completes, naming the subject>"
    if key == "answer":
        return f"<the answer to {_quoted(prompt)}>" if prompt else "<the expected completion>"
    return None
