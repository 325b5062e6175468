"""The spec language: YAML files that describe knowledge-editing experiments.

A spec is read in three steps, each in its own module:

1. :mod:`~keditlab.spec.source` reads YAML, remembering where each key and value was;
2. :mod:`~keditlab.spec.validate` checks it against the JSON Schema
   (``schemas/spec.schema.json``) and the rules a schema cannot express,
   collecting *every* error as a :class:`SpecError` with file, line, column,
   field path and a fix;
3. :mod:`~keditlab.spec.resolve` turns valid data into a :class:`Spec` with
   every default filled in.

Typical use::

    from keditlab.spec import load_spec
    spec = load_spec("specs/quickstart.yaml")          # raises SpecValidationError

    errors = validate_file("specs/quickstart.yaml")    # a list; empty when valid
    for error in errors:
        print(error)   # specs/quickstart.yaml:12:5: edits[0].subject: ... Fix: ...

This package imports no torch and no other keditlab layer, so validating is
instant.  To check layer indices against a model, pass ``num_layers_of``
(e.g. ``keditlab.models.peek_num_layers``): it is called with the model name
and returns its number of layers, or None to skip the check.
"""

from __future__ import annotations

import copy
from os import PathLike
from pathlib import Path
from typing import Any, Callable

from keditlab.spec.errors import SpecError, SpecValidationError, format_path
from keditlab.spec.resolve import resolve
from keditlab.spec.schema import load_schema
from keditlab.spec.source import load_yaml
from keditlab.spec.types import (
    EVALUATE_AT,
    METRIC_NAMES,
    RUN_MODES,
    EditCase,
    EvalSpec,
    MethodSpec,
    ModelSpec,
    Probe,
    RunSettings,
    Spec,
    StatsSpec,
)
from keditlab.spec.validate import validate_data

NumLayersOf = Callable[[str], "int | None"]


def _check_text(text: str, source: str, num_layers_of: NumLayersOf | None) -> tuple[Any, list[SpecError]]:
    loaded = load_yaml(text, source)
    if loaded.data is None and loaded.errors:  # a syntax error: nothing further can be trusted
        return None, loaded.errors
    errors = validate_data(
        loaded.data,
        source=source,
        source_map=loaded.source_map,
        num_layers_of=num_layers_of,
        prior_errors=loaded.errors,
    )
    return loaded.data, errors


def _read(path: str | PathLike[str]) -> tuple[str | None, list[SpecError]]:
    source = str(path)
    try:
        return Path(path).read_text(encoding="utf-8"), []
    except FileNotFoundError:
        return None, [SpecError(source, None, None, "", "no such file", "check the path")]
    except UnicodeDecodeError as exc:
        return None, [SpecError(source, None, None, "", f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})", "save it as UTF-8")]
    except OSError as exc:
        return None, [SpecError(source, None, None, "", f"cannot read the file: {exc.strerror or exc}")]


def validate_text(text: str, source: str = "<string>", *, num_layers_of: NumLayersOf | None = None) -> list[SpecError]:
    """Every error in spec ``text`` (empty list when it is valid)."""
    return _check_text(text, source, num_layers_of)[1]


def validate_file(path: str | PathLike[str], *, num_layers_of: NumLayersOf | None = None) -> list[SpecError]:
    """Every error in the spec file at ``path`` (empty when valid); never raises for a bad spec.

    An unreadable file is reported as an error too, so a command line tool
    can simply print ``str(error)`` for each.
    """
    text, errors = _read(path)
    if text is None:
        return errors
    return validate_text(text, str(path), num_layers_of=num_layers_of)


def parse_spec(text: str, source: str = "<string>", *, num_layers_of: NumLayersOf | None = None) -> Spec:
    """The resolved :class:`Spec` for YAML ``text``; raises :class:`SpecValidationError` listing every error."""
    data, errors = _check_text(text, source, num_layers_of)
    if errors:
        raise SpecValidationError(errors)
    return resolve(data, source)


def load_spec(path: str | PathLike[str], *, num_layers_of: NumLayersOf | None = None) -> Spec:
    """The resolved :class:`Spec` in the file at ``path``; raises :class:`SpecValidationError`."""
    text, errors = _read(path)
    if text is None:
        raise SpecValidationError(errors)
    return parse_spec(text, str(path), num_layers_of=num_layers_of)


def _plain(value: Any) -> Any:
    """Notebook data as YAML would give it: tuples become lists (JSON Schema arrays)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return copy.copy(value)


def validate_dict(data: dict[str, Any], source: str = "<dict>", *, num_layers_of: NumLayersOf | None = None) -> list[SpecError]:
    """Every error in a spec given as Python data (errors name paths, not lines)."""
    return validate_data(_plain(data), source=source, num_layers_of=num_layers_of)


def spec_from_dict(data: dict[str, Any], source: str = "<dict>", *, num_layers_of: NumLayersOf | None = None) -> Spec:
    """The resolved :class:`Spec` for a spec written as a dict (in a notebook); raises :class:`SpecValidationError`."""
    plain = _plain(data)
    errors = validate_data(plain, source=source, num_layers_of=num_layers_of)
    if errors:
        raise SpecValidationError(errors)
    return resolve(plain, source)


__all__ = [
    "EVALUATE_AT",
    "METRIC_NAMES",
    "RUN_MODES",
    "EditCase",
    "EvalSpec",
    "MethodSpec",
    "ModelSpec",
    "Probe",
    "RunSettings",
    "Spec",
    "SpecError",
    "SpecValidationError",
    "StatsSpec",
    "format_path",
    "load_schema",
    "load_spec",
    "parse_spec",
    "spec_from_dict",
    "validate_dict",
    "validate_file",
    "validate_text",
]
