"""Collects SpecErrors during validation, turning field paths into file positions."""

from __future__ import annotations

from dataclasses import dataclass, field

from keditlab.spec.errors import Path, SpecError, format_path
from keditlab.spec.source import SourceMap


@dataclass
class Reporter:
    """Where errors go while a spec is checked; knows the file and where each field was written."""

    source: str
    source_map: SourceMap = field(default_factory=SourceMap)
    errors: list[SpecError] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._seen = set(self.errors)

    def add(self, path: Path, message: str, fix: str = "", *, at: str = "value", shown_path: Path | None = None) -> None:
        """Record an error about ``path``; ``at="key"`` points at the key (for unknown keys).

        ``shown_path`` is the path printed in the message, when it differs from the
        one whose position is used (a missing key is reported at its parent).
        """
        position = self.source_map.key(path) if at == "key" else self.source_map.value(path)
        error = SpecError(
            file=self.source,
            line=position.line if position else None,
            column=position.column if position else None,
            path=format_path(path if shown_path is None else shown_path),
            message=message,
            fix=fix,
        )
        if error not in self._seen:   # a set beside the list: checking the list made validation quadratic in errors
            self._seen.add(error)
            self.errors.append(error)
