"""Validate spec data: the JSON Schema, then the cross-field and model checks, all errors at once.

Validation never stops at the first problem: a user fixing a spec wants the
whole list, in file order.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

from keditlab.spec.checks import NumLayersOf, run_checks
from keditlab.spec.errors import SpecError
from keditlab.spec.report import Reporter
from keditlab.spec.schema import load_schema
from keditlab.spec.schema_errors import SchemaErrorTranslator
from keditlab.spec.source import SourceMap


def _order(error: SpecError) -> tuple[float, float]:
    return (error.line if error.line is not None else float("inf"), error.column or 0)


def validate_data(
    data: Any,
    *,
    source: str,
    source_map: SourceMap | None = None,
    num_layers_of: NumLayersOf | None = None,
    prior_errors: list[SpecError] | None = None,
) -> list[SpecError]:
    """Every error in ``data`` (already-parsed YAML or a dict), sorted by position.

    ``prior_errors`` are problems found while reading (e.g. duplicate keys); they
    are merged into the result.
    """
    schema = load_schema()
    report = Reporter(source, source_map or SourceMap(), list(prior_errors or []))
    SchemaErrorTranslator(schema, report).translate(Draft202012Validator(schema).iter_errors(data))
    run_checks(data, schema, report, num_layers_of)
    return sorted(report.errors, key=_order)  # stable: same-position errors keep their order
