"""Edits read from a benchmark file instead of listed in the spec.

A spec may name a file of benchmark records in place of its list of edits::

    edits:
      records: ../datasets/zsre/zsre_mend_train-1k.json   # relative to the spec's folder
      format: zsre                                        # a reader of keditlab.data.records
      limit: 100                                          # optional: how many records (default: all)
      offset: 0                                           # optional: how many to skip first

Validation checks only that the file is there (:func:`file_problem`, cheap,
so ``keditlab validate`` stays instant); resolving reads it
(:func:`read_edits_file`) with the format's reader into the same
:class:`~keditlab.spec.types.EditCase` list inline edits give, so nothing
after the spec knows the difference.

The readers live in :mod:`keditlab.data`, which builds on this layer's data
classes (no torch); it is imported only when a spec reads a file, so loading
this package stays light and the two never import each other at start-up.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from keditlab.spec.errors import SpecValidationError
from keditlab.spec.hints import closest
from keditlab.spec.report import Reporter
from keditlab.spec.source import SourceMap
from keditlab.spec.types import EditCase, EditsFile

RECORDS = ("edits", "records")


def spec_folder(source: str) -> Path:
    """The folder a relative records path is read from: the spec file's, or the current one for text and dicts."""
    if source.startswith("<"):
        return Path.cwd()
    return Path(source).expanduser().absolute().parent


def records_path(written: str, source: str) -> Path:
    """The records file named ``written`` in the spec read from ``source`` (``~`` expanded, made absolute)."""
    path = Path(written).expanduser()
    if not path.is_absolute():
        path = spec_folder(source) / path
    return Path(os.path.normpath(path))


def file_problem(written: str, source: str) -> tuple[str, str] | None:
    """``(message, fix)`` when ``written`` names no readable file, else None."""
    path = records_path(written, source)
    if path.is_file():
        return None
    relative = not Path(written).expanduser().is_absolute()
    read_from = (f"; a relative path is read from {'the current folder' if source.startswith('<') else 'the spec file'}"
                 f"'s folder, {spec_folder(source)}") if relative else ""
    if path.is_dir():
        return (f"records '{written}' is a folder ({path}), not a file",
                f"name the JSON file of records inside it{read_from}")
    fix = "correct the path"
    if path.parent.is_dir():
        match = closest(path.name, sorted(p.name for p in path.parent.iterdir() if p.is_file()))
        if match:
            fix = f"did you mean '{match}'? Correct the path"
    return f"records file '{written}' does not exist (looked for {path})", fix + read_from


def _one_line(exc: BaseException, path: Path) -> tuple[str, str]:
    """A reader's error as ``(problem, fix)``: its message on one line, without the path it repeats."""
    text = " ".join(str(exc).split())
    text = text.removeprefix(f"{path}: ")
    problem, _, fix = text.partition(" Fix: ")
    return problem.rstrip("."), fix


def read_edits_file(value: dict[str, Any], source: str, source_map: SourceMap | None = None) -> tuple[tuple[EditCase, ...], EditsFile]:
    """The edit cases of a validated ``edits: {records, format, limit, offset}`` mapping, and where they came from.

    Raises :class:`SpecValidationError` (pointing at the spec line) when the
    file is missing, cannot be read as ``format``, or has no record at ``offset``.
    """
    from keditlab.data.records import READERS  # see the module docstring: data builds on this layer

    report = Reporter(source, source_map or SourceMap())
    written, fmt = value["records"], value["format"]
    limit, offset = value.get("limit"), value.get("offset", 0)
    path = records_path(written, source)
    problem = file_problem(written, source)
    if problem:
        report.add(RECORDS, *problem)
        raise SpecValidationError(report.errors)
    try:
        cases = READERS[fmt](path, limit=limit, offset=offset)
    except (ValueError, OSError) as exc:  # bad JSON, not UTF-8, a record of another format, unreadable
        if isinstance(exc, json.JSONDecodeError):
            problem_text, fix = f"it is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno} of the file)", ""
        else:
            problem_text, fix = _one_line(exc, path)
        others = ", ".join(name for name in READERS if name != fmt)
        fix = (f"{fix.rstrip('.')} (edits.format picks the reader: {others})" if fix else
               f"check that the file is a JSON list of {fmt} records, or give the format it is in ({others})")
        report.add(RECORDS, f"cannot read '{written}' as {fmt} records: {problem_text}", fix)
        raise SpecValidationError(report.errors) from None
    if not cases:
        count = len(json.loads(path.read_text(encoding="utf-8")))  # the reader has just read it as a list
        where = ("edits", "offset") if "offset" in value else RECORDS
        report.add(where, f"offset {offset} is past the end of '{written}', which has {count} record{'s' if count != 1 else ''}",
                   f"give an offset below {count}" if count else "use a file that has records")
        raise SpecValidationError(report.errors)
    return tuple(cases), EditsFile(str(path), fmt, limit, offset)
