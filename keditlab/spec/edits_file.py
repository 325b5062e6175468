"""Edits read from a benchmark file instead of listed in the spec.

A spec may name a benchmark in place of its list of edits::

    edits:
      dataset: zsre                                       # a dataset of keditlab.data.DATASETS
      path: ../datasets/zsre/zsre_mend_train-1k.json      # optional, relative to the spec's folder;
                                                          #   without it the public file is downloaded
      file: zsre/zsre_mend_train-1k.json                  # or: a pinned published file (instead of path),
                                                          #   from $KEDITLAB_DATASETS, the cache, or downloaded
      limit: 100                                          # optional: how many records (default: all)
      offset: 0                                           # optional: how many to skip first
      sample: {n: 50, seed: 0}                            # optional: a random draw from that window
      on_bad_record: stop                                 # or skip: leave malformed records out

The older spelling ``{records: FILE, format: NAME}`` reads the same way.

Validation checks only that the file is there (:func:`file_problem`, cheap,
so ``keditlab validate`` stays instant); resolving reads it
(:func:`read_edits_file`) with the format's reader into the same
:class:`~keditlab.spec.types.EditCase` list inline edits give, so nothing
after the spec knows the difference.  Each record read is held to the rules
of an inline edit (:func:`keditlab.vocabulary.case_problems`: non-empty texts,
the subject inside the prompt, ...) and case ids must differ; a record that
breaks them is an error on the spec's ``path`` (or ``file``) line that names
the record and its field, or, with ``on_bad_record: skip``, is left out and
listed in the run's ``edits_from.skipped``.

The readers live in :mod:`keditlab.data`.  The dependency points one way:
this module imports :mod:`keditlab.data` (to read a spec's benchmark file),
and :mod:`keditlab.data` never imports :mod:`keditlab.spec`: both build on the
ground vocabulary, :mod:`keditlab.vocabulary` (``EditCase``, ``Probe``).  The
import is taken only when a spec reads a file, so loading this package stays
light (``tests/unit/test_layers_imports.py`` checks both).
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


def file_key(value: dict[str, Any]) -> str:
    """The key naming the file in an edits mapping: ``path`` (or the older ``records``)."""
    return "path" if "path" in value else "records"


def read_edits_file(value: dict[str, Any], source: str, source_map: SourceMap | None = None,
                    section: tuple[str, ...] = ("edits",)) -> tuple[tuple[EditCase, ...], EditsFile]:
    """The edit cases of a validated ``edits: {dataset, path, limit, offset, sample, on_bad_record}`` mapping.

    The older spelling ``{records: FILE, format: NAME}`` means ``{path: FILE,
    dataset: NAME}``.  Without a path the dataset's public file is used
    (downloaded into the cache once).  Raises :class:`SpecValidationError`
    (pointing at the spec line) when the file is missing or cannot be
    downloaded, cannot be read as the dataset, has no record at ``offset``, or
    (with ``on_bad_record: stop``) holds a selected record that breaks a rule
    of edit cases (:func:`keditlab.vocabulary.case_problems`) or repeats a case
    id: ``record 534 of 'zsre/zsre_mend_train-1k.json' is not a valid edit:
    alt is an empty string``.
    """
    from keditlab.data.datasets import DATASETS, dataset_cases, dataset_file  # see the module docstring
    from keditlab.data.download import DatasetUnavailableError
    from keditlab.data.knowedit import PartMismatchError
    from keditlab.data.records import SKIP_HINT, BadRecordError

    report = Reporter(source, source_map or SourceMap())
    key = file_key(value)
    written, fmt = value.get(key), value.get("dataset", value.get("format"))
    limit, offset = value.get("limit"), value.get("offset", 0)
    sample, on_bad = value.get("sample"), value.get("on_bad_record", "stop")
    options = {"part": value["part"]} if value.get("part") is not None else {}
    published = value.get("file") if written is None else None
    where = (*section, key) if written is not None else (*section, "file" if published else "dataset" if "dataset" in value else "format")
    if written is not None:
        path = records_path(written, source)
        problem = file_problem(written, source)
        if problem:
            report.add(where, *problem)
            raise SpecValidationError(report.errors)
    else:
        try:
            path = dataset_file(fmt, file=published)  # a local copy, the cache, or downloaded
        except (DatasetUnavailableError, ValueError) as exc:
            problem_text, fix = _one_line(exc, Path("-"))
            report.add(where, problem_text, fix)
            raise SpecValidationError(report.errors) from None
        if not path.is_file():  # validating: the download is deferred to the run (keditlab.data.download)
            return (), EditsFile(str(path), fmt, limit, offset, dict(sample) if sample else None, on_bad, (), value.get("part"))
        written = published or str(path)
    skipped: list[str] = []
    try:
        cases = dataset_cases(fmt, path, limit=limit, offset=offset, sample=sample, on_bad_record=on_bad, skipped=skipped,
                              **options)
    except PartMismatchError as exc:
        report.add((*section, "part"), *_one_line(exc, path))
        raise SpecValidationError(report.errors) from None
    except BadRecordError as exc:  # a record in the format, but not an edit a method can make (an empty target, ...)
        report.add(where, f"record {exc.index} of '{written}' is not a valid edit: {exc.problem}", exc.fix + SKIP_HINT)
        raise SpecValidationError(report.errors) from None
    except (ValueError, OSError) as exc:  # bad JSON, not UTF-8, a record of another format, unreadable
        if isinstance(exc, json.JSONDecodeError):
            problem_text, fix = f"it is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno} of the file)", ""
        else:
            problem_text, fix = _one_line(exc, path)
        others = ", ".join(name for name in DATASETS if name != fmt)
        fix = (f"{fix.rstrip('.')} ({'.'.join(section)}.dataset picks the reader: {others})" if fix else
               f"check that the file is a JSON list of {fmt} records, or give the dataset it is in ({others})")
        report.add(where, f"cannot read '{written}' as {fmt} records: {problem_text}", fix)
        raise SpecValidationError(report.errors) from None
    if not cases:
        from keditlab.data.knowedit import edit_records

        count = len(edit_records(json.loads(path.read_text(encoding="utf-8"))))  # the reader has just read it
        if skipped:
            report.add(where, f"every selected record of '{written}' is malformed ({len(skipped)} skipped); the first: "
                       f"{_one_line(ValueError(skipped[0]), path)[0]}", "check the dataset name and the file")
            raise SpecValidationError(report.errors)
        at = (*section, "offset") if "offset" in value else where
        report.add(at, f"offset {offset} is past the end of '{written}', which has {count} record{'s' if count != 1 else ''}",
                   f"give an offset below {count}" if count else "use a file that has records")
        raise SpecValidationError(report.errors)
    return tuple(cases), EditsFile(str(path), fmt, limit, offset, dict(sample) if sample else None, on_bad, tuple(skipped),
                                   value.get("part"))
