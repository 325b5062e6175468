"""The spec language: YAML files that describe knowledge-editing experiments.

A spec is read in three steps, each in its own module:

1. :mod:`~keditlab.spec.source` reads YAML, remembering where each key and value was;
2. :mod:`~keditlab.spec.validate` checks it against the JSON Schema
   (``schemas/spec.schema.json``) and the rules a schema cannot express,
   collecting *every* error as a :class:`SpecError` with file, line, column,
   field path and a fix;
3. :mod:`~keditlab.spec.resolve` turns valid data into a :class:`Spec` with
   every default filled in, reading the edits from a benchmark file when the
   spec names one (the validators run this step too, so a records file that
   cannot be read is reported like any other error).

Typical use::

    from keditlab.spec import load_spec
    spec = load_spec("specs/quickstart.yaml")          # raises SpecValidationError

    errors = validate_file("specs/quickstart.yaml")    # a list; empty when valid
    for error in errors:
        print(error)   # specs/quickstart.yaml:12:5: edits[0].subject: ... Fix: ...

This package imports no torch.  It builds on the ground vocabulary,
:mod:`keditlab.vocabulary` (:class:`EditCase`, :class:`Probe`, the metric and
protocol names, re-exported here), and on no other keditlab layer except the
torch-free record readers of :mod:`keditlab.data`, imported only when a spec
reads its edits from a file; so validating is instant.  To check layer indices against a
model, pass ``num_layers_of``
(e.g. ``keditlab.models.peek_num_layers``): it is called with the model name
and returns its number of layers, or None to skip the check.  To check that
every method can edit the model's structure (:mod:`keditlab.spec.model_needs`),
pass ``model_config_of`` (e.g. ``keditlab.models.peek.peek_config``): it
returns the model's ``config.json`` as a dict, or None to skip the check.
"""

from __future__ import annotations

import copy
import dataclasses
from os import PathLike
from pathlib import Path
from typing import Any, Callable

from keditlab.spec.errors import SpecError, SpecValidationError, format_path
from keditlab.spec.resolve import resolve
from keditlab.spec.schema import load_schema
from keditlab.spec.source import SourceMap, load_yaml
from keditlab.spec.types import (
    EVALUATE_AT,
    METRIC_NAMES,
    PROTOCOLS,
    RUN_MODES,
    EditCase,
    EditsFile,
    EvalSpec,
    GeneralSpec,
    JudgeSpec,
    MethodSpec,
    ModelSpec,
    Probe,
    RunSettings,
    Spec,
    StatsSpec,
)
from keditlab.spec.report import Reporter
from keditlab.spec.resolve import default_name
from keditlab.spec.sweep import Cell, SweepGrid, SweepSpec, cell_errors, cell_source_map, expand
from keditlab.spec.validate import validate_data

NumLayersOf = Callable[[str], "int | None"]
ModelConfigOf = Callable[[str], "dict[str, Any] | None"]

#: Largest spec file read (a spec of 20,000 inline edits is about 4 MiB; larger edit lists belong in a records file).
MAX_SPEC_BYTES = 64 * 2**20


def _compile(data: Any, source: str, num_layers_of: NumLayersOf | None, source_map: SourceMap | None = None,
             prior_errors: list[SpecError] | None = None,
             model_config_of: ModelConfigOf | None = None) -> tuple[Spec | SweepSpec | None, list[SpecError]]:
    """The resolved spec (a :class:`SweepSpec` for a spec with ``sweep:``) and no errors, or None and every error
    (validation, then reading a records file)."""
    if isinstance(data, dict) and "sweep" in data:
        return _compile_sweep(data, source, num_layers_of, source_map or SourceMap(), prior_errors or [], model_config_of)
    errors = validate_data(data, source=source, source_map=source_map, num_layers_of=num_layers_of, prior_errors=prior_errors,
                           model_config_of=model_config_of)
    if errors:
        return None, errors
    try:
        return resolve(data, source, source_map), []
    except SpecValidationError as exc:  # the edits' records file could not be read
        return None, exc.errors


def _compile_sweep(data: dict[str, Any], source: str, num_layers_of: NumLayersOf | None, source_map: SourceMap,
                   prior_errors: list[SpecError], model_config_of: ModelConfigOf | None) -> tuple[SweepSpec | None, list[SpecError]]:
    """A sweep's grid and every cell resolved, or every error: the section's own, then each cell's (keditlab.spec.sweep)."""
    report = Reporter(source, source_map, list(prior_errors))
    grid = expand(data, report, load_schema()["properties"])
    if grid is None or report.errors:
        return None, report.errors
    specs: dict[int, Spec] = {}

    def errors_of(cell: Cell) -> list[SpecError]:
        cell_map = cell_source_map(source_map, grid, cell)
        spec, errors = _compile(cell.data, source, num_layers_of, cell_map, model_config_of=model_config_of)
        if spec is not None:
            specs[cell.index] = spec
        return errors

    from keditlab.data.download import failures_remembered   # a leaf module, as for _no_downloads

    with failures_remembered():   # cells share records files: a file out of reach is tried once, not once per cell
        errors = cell_errors(grid, errors_of)
    if errors:
        return None, errors
    name = data.get("name") if isinstance(data.get("name"), str) else default_name(source)
    return SweepSpec(name, source, grid, tuple(specs[cell.index] for cell in grid.cells)), []


def _check_text(text: str, source: str, num_layers_of: NumLayersOf | None,
                model_config_of: ModelConfigOf | None = None) -> tuple[Spec | SweepSpec | None, list[SpecError]]:
    loaded = load_yaml(text, source)
    if loaded.data is None and loaded.errors:  # a syntax error: nothing further can be trusted
        return None, loaded.errors
    return _compile(loaded.data, source, num_layers_of, loaded.source_map, loaded.errors, model_config_of)


def _read(path: str | PathLike[str]) -> tuple[str | None, list[SpecError]]:
    source = str(path)
    try:
        if Path(path).exists() and not Path(path).is_file():   # a folder, /dev/zero, a pipe: never read without end
            return None, [SpecError(source, None, None, "", "not a regular file", "pass the path of a spec file (.yaml)")]
        if Path(path).is_file() and Path(path).stat().st_size > MAX_SPEC_BYTES:
            return None, [SpecError(source, None, None, "", f"the file is over {MAX_SPEC_BYTES // 2**20} MiB, too large for a spec",
                                    "keep large edit lists in a records file and name it under `edits: {dataset, path}`")]
        return Path(path).read_text(encoding="utf-8"), []
    except FileNotFoundError:
        return None, [SpecError(source, None, None, "", "no such file", "check the path")]
    except UnicodeDecodeError as exc:
        return None, [SpecError(source, None, None, "", f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})", "save it as UTF-8")]
    except OSError as exc:
        return None, [SpecError(source, None, None, "", f"cannot read the file: {exc.strerror or exc}",
                                "check the path, and that the file can be read")]


def validate_text(text: str, source: str = "<string>", *, num_layers_of: NumLayersOf | None = None,
                  model_config_of: ModelConfigOf | None = None) -> list[SpecError]:
    """Every error in spec ``text`` (empty list when it is valid).

    Validation downloads nothing: a published benchmark file that is not here
    yet is left for the run to fetch (``keditlab validate`` prints it as a note).
    """
    with _no_downloads():
        return _check_text(text, source, num_layers_of, model_config_of)[1]


def validate_file(path: str | PathLike[str], *, num_layers_of: NumLayersOf | None = None,
                  model_config_of: ModelConfigOf | None = None) -> list[SpecError]:
    """Every error in the spec file at ``path`` (empty when valid); never raises for a bad spec.

    An unreadable file is reported as an error too, so a command line tool
    can simply print ``str(error)`` for each.
    """
    text, errors = _read(path)
    if text is None:
        return errors
    return validate_text(text, str(path), num_layers_of=num_layers_of, model_config_of=model_config_of)


def parse_spec(text: str, source: str = "<string>", *, num_layers_of: NumLayersOf | None = None,
                  model_config_of: ModelConfigOf | None = None) -> Spec:
    """The resolved :class:`Spec` for YAML ``text``; raises :class:`SpecValidationError` listing every error."""
    spec, errors = _check_text(text, source, num_layers_of, model_config_of)
    return _one_spec(spec, errors, source)


def load_spec(path: str | PathLike[str], *, num_layers_of: NumLayersOf | None = None,
                  model_config_of: ModelConfigOf | None = None) -> Spec:
    """The resolved :class:`Spec` in the file at ``path``; raises :class:`SpecValidationError`."""
    text, errors = _read(path)
    if text is None:
        raise SpecValidationError(errors)
    return parse_spec(text, str(path), num_layers_of=num_layers_of, model_config_of=model_config_of)


def _plain(value: Any) -> Any:
    """Notebook data as YAML would give it: tuples become lists (JSON Schema arrays)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return copy.copy(value)


def validate_dict(data: dict[str, Any], source: str = "<dict>", *, num_layers_of: NumLayersOf | None = None,
                  model_config_of: ModelConfigOf | None = None) -> list[SpecError]:
    """Every error in a spec given as Python data (errors name paths, not lines); downloads nothing."""
    with _no_downloads():
        return _compile(_plain(data), source, num_layers_of, model_config_of=model_config_of)[1]


def _no_downloads() -> Any:
    """The validators' guard: published files a run would download are deferred, not fetched."""
    from keditlab.data.download import deferred_downloads  # the one place spec reaches data (a leaf module)

    return deferred_downloads()


def spec_from_dict(data: dict[str, Any], source: str = "<dict>", *, num_layers_of: NumLayersOf | None = None,
                  model_config_of: ModelConfigOf | None = None) -> Spec:
    """The resolved :class:`Spec` for a spec written as a dict (in a notebook); raises :class:`SpecValidationError`."""
    spec, errors = _compile(_plain(data), source, num_layers_of, model_config_of=model_config_of)
    return _one_spec(spec, errors, source)


def _one_spec(spec: Spec | SweepSpec | None, errors: list[SpecError], source: str) -> Spec:
    """The spec, or the errors raised; a sweep is refused where one run is meant, with the way to run it."""
    if isinstance(spec, SweepSpec):
        raise SpecValidationError([SpecError(
            source, None, None, "sweep", f"this spec is a sweep of {len(spec)} cells, not one run",
            f"run it with `keditlab sweep {source if not source.startswith('<') else 'SPEC'}` (keditlab.sweep(...) in a "
            "notebook), or remove `sweep:` to run the spec once")])
    if spec is None:
        raise SpecValidationError(errors)
    return spec


def parse_sweep(text: str, source: str = "<string>", *, num_layers_of: NumLayersOf | None = None,
                model_config_of: ModelConfigOf | None = None) -> SweepSpec:
    """The :class:`SweepSpec` for YAML ``text`` with a ``sweep:`` section; raises :class:`SpecValidationError`.

    A spec without ``sweep:`` is a sweep of one cell (so a sweep folder can hold any spec).
    """
    loaded = load_yaml(text, source)
    if loaded.data is None and loaded.errors:
        raise SpecValidationError(loaded.errors)
    data = loaded.data
    if isinstance(data, dict) and "sweep" not in data:
        spec = _one_spec(*_compile(data, source, num_layers_of, loaded.source_map, loaded.errors, model_config_of),
                         source)
        grid = SweepGrid((), (Cell(0, (), (), data),))
        return SweepSpec(spec.name, source, grid, (spec,), text)
    sweep, errors = _compile(data, source, num_layers_of, loaded.source_map, loaded.errors, model_config_of)
    if not isinstance(sweep, SweepSpec):
        raise SpecValidationError(errors)
    return dataclasses.replace(sweep, text=text)


def load_sweep(path: str | PathLike[str], *, num_layers_of: NumLayersOf | None = None,
               model_config_of: ModelConfigOf | None = None) -> SweepSpec:
    """The :class:`SweepSpec` in the file at ``path``; raises :class:`SpecValidationError`."""
    text, errors = _read(path)
    if text is None:
        raise SpecValidationError(errors)
    return parse_sweep(text, str(path), num_layers_of=num_layers_of, model_config_of=model_config_of)


__all__ = [
    "EVALUATE_AT",
    "METRIC_NAMES",
    "PROTOCOLS",
    "RUN_MODES",
    "EditCase",
    "EditsFile",
    "EvalSpec",
    "GeneralSpec",
    "JudgeSpec",
    "MethodSpec",
    "ModelSpec",
    "Probe",
    "RunSettings",
    "Spec",
    "SpecError",
    "SpecValidationError",
    "StatsSpec",
    "SweepSpec",
    "format_path",
    "load_schema",
    "load_spec",
    "load_sweep",
    "parse_spec",
    "parse_sweep",
    "spec_from_dict",
    "validate_dict",
    "validate_file",
    "validate_text",
]
