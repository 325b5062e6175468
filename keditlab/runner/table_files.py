"""The KnowEdit-style results table: method × dataset × metric, one column per protocol.

Written beside ``summary.json`` as ``table.csv`` (one row per method,
dataset, metric and protocol, with ``pre``, ``post`` and ``n``: runs stack
into one frame with ``pandas.concat``) and ``table.md`` (one row per method,
dataset and metric, the protocols side by side as ``pre → post`` cells, so a
teacher-forced value is never read as a generation one; the general-ability
scores, ``evaluate.general``, in a table of their own under it, since their
protocols are the harness's metrics).  ``keditlab show``
prints the Markdown table.  Both are built from the summary alone.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from keditlab.runner.render import judge_line
from keditlab.runner.summary import metric_family, metric_rows
from keditlab.vocabulary import GENERAL_FAMILY
from keditlab.vocabulary import PROTOCOLS as PROTOCOL_COLUMNS

#: CounterFact's names for the probability protocol's values (Meng et al., 2022).
COUNTERFACT = {"reliability": "ES", "generalization": "PS", "locality": "NS", "reliability_magnitude": "EM",
               "generalization_magnitude": "PM", "locality_magnitude": "NM", "score": "S"}
NOTE = ("Protocols are columns and never averaged together (docs/protocols.md). probability: reliability = ES, "
        "generalization = PS, locality = NS, *_magnitude = EM/PM/NM, score = S (harmonic mean of ES, PS, NS). "
        "generation: exact match of the greedy answer (*_contains: answer or alias contained); locality = answer "
        "unchanged; multihop = any question answered. locality (teacher_forced) = agreement with the unedited "
        "model; locality_accuracy = accuracy against the dataset's answer.")


def dataset_of(summary: dict[str, Any]) -> str:
    """The dataset a summary's edits came from (``spec`` for edits listed in the spec)."""
    return summary.get("dataset") or "spec"


def _metrics(summary: dict[str, Any]) -> list[str]:
    seen: list[str] = []
    for metric, _ in metric_rows(summary):
        if metric not in seen:
            seen.append(metric)
    return seen


def table_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per method, dataset, metric and protocol: ``method, dataset, metric, protocol, pre, post, n``."""
    rows = []
    for label, method in summary["methods"].items():
        for metric, protocol in metric_rows(summary):
            values = method["metrics"].get(metric, {}).get(protocol)
            if values is None:
                continue
            rows.append({"method": label, "dataset": dataset_of(summary), "metric": metric, "protocol": protocol,
                         "pre": values.get("pre"), "post": values.get("post"), "n": values.get("n")})
    return rows


def table_csv(summary: dict[str, Any]) -> str:
    """The long table as CSV text (empty cells for values that are null)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, ["method", "dataset", "metric", "protocol", "pre", "post", "n"], lineterminator="\n")
    writer.writeheader()
    for row in table_rows(summary):
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return out.getvalue()


def _cell(values: dict[str, Any] | None) -> str:
    if not values:
        return ""
    fmt = (lambda v: "—" if v is None else f"{v:.3f}")
    return f"{fmt(values.get('pre'))} → {fmt(values.get('post'))}"


def table_markdown(summary: dict[str, Any]) -> str:
    """The wide table as Markdown: method, dataset, metric, then one ``pre → post`` column per protocol."""
    lines = [f"| method | dataset | metric | {' | '.join(PROTOCOL_COLUMNS)} |", "|---|---|---|" + "---|" * len(PROTOCOL_COLUMNS)]
    for label, method in summary["methods"].items():
        for metric in _metrics(summary):
            cells = [_cell(method["metrics"].get(metric, {}).get(p)) for p in PROTOCOL_COLUMNS]
            if not any(cells):
                continue
            name = f"{metric} ({COUNTERFACT[metric]})" if metric in COUNTERFACT and cells[1] else metric
            lines.append(f"| {label} | {dataset_of(summary)} | {name} | {' | '.join(cells)} |")
    judge = judge_line(summary)
    general = general_markdown(summary)
    return ("\n".join(lines) + "\n\n" + NOTE + (f"\n\n{judge}" if judge else "")
            + (f"\n\n{general}" if general else "") + "\n")


def general_markdown(summary: dict[str, Any]) -> str:
    """The general-ability rows as a table of their own (their protocols are the harness's metrics, not columns of
    the edit table): method, task, metric, ``pre → post``, examples read; empty when the run measured none."""
    rows = [(metric, protocol) for metric, protocol in metric_rows(summary) if metric_family(metric) == GENERAL_FAMILY]
    if not rows:
        return ""
    lines = ["General ability (lm-evaluation-harness, the whole model before any edit → after the last):", "",
             "| method | task | metric | pre → post | n |", "|---|---|---|---|---|"]
    for label, method in summary["methods"].items():
        for metric, protocol in rows:
            values = method["metrics"].get(metric, {}).get(protocol)
            if values is not None:
                lines.append(f"| {label} | {metric.split(':', 1)[1]} | {protocol} | {_cell(values)} | {values.get('n') or ''} |")
    return "\n".join(lines)
