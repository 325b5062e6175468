"""Validate spec data: the JSON Schema, then the cross-field and model checks, all errors at once.

Validation never stops at the first problem: a user fixing a spec wants the
whole list, in file order.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

from jsonschema import Draft202012Validator, validators

from keditlab.spec.rules import NumLayersOf, run_checks
from keditlab.spec.errors import SpecError, format_path
from keditlab.spec.report import Reporter
from keditlab.spec.schema import load_schema
from keditlab.spec.schema_errors import SchemaErrorTranslator
from keditlab.spec.source import SourceMap


def _is_whole_number(checker: Any, value: Any) -> bool:
    # JSON Schema counts 1.0 as an integer; a spec means a whole number (`seed: 1.0` is a slip).
    return isinstance(value, int) and not isinstance(value, bool)


#: Draft 2020-12, except that ``integer`` means a Python int.
SpecSchemaValidator = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_whole_number),
)


def _values(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Every ``(path, value)`` of ``data``, parents before their children, in document order."""
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _values(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _values(item, (*path, i))


def _document_order(data: Any) -> dict[str, int]:
    """Each field path's rank in a walk of ``data``, to order errors that have no line."""
    order: dict[str, int] = {}
    for path, _ in _values(data):
        order.setdefault(format_path(path), len(order))
    return order


def _non_finite_numbers(data: Any, report: Reporter) -> None:
    """NaN and infinity (YAML's ``.nan``, ``.inf``) pass every schema bound, since no comparison with NaN is true: refuse them here."""
    for path, value in _values(data):
        if isinstance(value, float) and not math.isfinite(value):
            report.add(path, f"{value!r} is not a finite number",
                       "write a number here (.nan and .inf are not settings), or leave the key out for its default")


def validate_data(
    data: Any,
    *,
    source: str,
    source_map: SourceMap | None = None,
    num_layers_of: NumLayersOf | None = None,
    model_config_of: Any = None,
    prior_errors: list[SpecError] | None = None,
) -> list[SpecError]:
    """Every error in ``data`` (already-parsed YAML or a dict), sorted by position.

    ``prior_errors`` are problems found while reading (e.g. duplicate keys); they
    are merged into the result.
    """
    schema = load_schema()
    report = Reporter(source, source_map or SourceMap(), list(prior_errors or []))
    SchemaErrorTranslator(schema, report, data).translate(SpecSchemaValidator(schema).iter_errors(data))
    _non_finite_numbers(data, report)
    run_checks(data, schema, report, num_layers_of, model_config_of)
    rank = _document_order(data)

    def order(error: SpecError) -> tuple[float, float, int]:
        line = error.line if error.line is not None else float("inf")
        return (line, error.column or 0, rank.get(error.path, len(rank)))

    return sorted(report.errors, key=order)  # stable: errors at one place keep their order
