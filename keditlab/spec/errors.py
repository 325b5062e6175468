"""The errors a spec can have, each one pointing at the exact place to fix.

A spec is written by a person, so an error is worth as much as its address:
:class:`SpecError` carries the file, the 1-based line and column, the field
path (``edits[0].subject``), what is wrong and how to fix it.  Validation
collects *every* error and raises them together as a
:class:`SpecValidationError`, so one round of editing fixes them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

PathPart = str | int
Path = tuple[PathPart, ...]


def format_path(path: Iterable[PathPart]) -> str:
    """``('edits', 0, 'subject')`` → ``'edits[0].subject'``, the way a user reads it."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _sentence(text: str) -> str:
    text = text.strip()
    return text if not text or text[-1] in ".?!" else text + "."


@dataclass(frozen=True)
class SpecError:
    """One problem in a spec: where it is, what is wrong, and how to fix it.

    ``line``/``column`` are 1-based and ``None`` when the spec came from a dict
    (a notebook) rather than a file.  ``path`` is empty for the spec as a whole.
    """

    file: str
    line: int | None
    column: int | None
    path: str
    message: str
    fix: str = ""

    @property
    def location(self) -> str:
        """``file:line:column`` (or just ``file`` without a position)."""
        if self.line is None:
            return self.file
        if self.column is None:
            return f"{self.file}:{self.line}"
        return f"{self.file}:{self.line}:{self.column}"

    def __str__(self) -> str:
        text = f"{self.location}: "
        if self.path:
            text += f"{self.path}: "
        text += _sentence(self.message)
        if self.fix:
            text += f" Fix: {_sentence(self.fix)}"
        return text


class SpecValidationError(Exception):
    """A spec has one or more errors; ``.errors`` lists every one of them."""

    def __init__(self, errors: list[SpecError]) -> None:
        self.errors = list(errors)
        super().__init__(str(self))

    def __str__(self) -> str:
        count = len(self.errors)
        files = sorted({e.file for e in self.errors})
        where = f" in {', '.join(files)}" if files else ""
        header = f"{count} error{'s' if count != 1 else ''}{where}:"
        return "\n".join([header, *(f"  {e}" for e in self.errors)])
