"""Results as tables: plain text for the terminal, HTML for notebooks.

Both read only a summary dict (see :mod:`keditlab.runner.summary`), so a run
folder saved yesterday renders the same as a run that just finished.
"""

from __future__ import annotations

import html
from typing import Any

from keditlab.runner.summary import metric_rows

PROTOCOL_SHORT = {"teacher_forced": "tf", "probability": "prob", "generation": "gen"}


def _cell(values: dict[str, Any]) -> str:
    pre, post = values.get("pre"), values.get("post")
    fmt = (lambda v: "—" if v is None else f"{v:.2f}")
    return f"{fmt(pre)} → {fmt(post)}"


def _row_label(metric: str, protocol: str) -> str:
    return f"{metric} ({PROTOCOL_SHORT.get(protocol, protocol)})"


def text_table(summary: dict[str, Any]) -> str:
    """Methods as columns, metric (protocol) as rows, each cell ``pre → post``."""
    labels = list(summary["methods"])
    rows = [["metric (protocol)", *labels]]
    for metric, protocol in metric_rows(summary):
        rows.append([
            _row_label(metric, protocol),
            *(_cell(summary["methods"][m]["metrics"].get(metric, {}).get(protocol, {})) for m in labels),
        ])
    rows.append(["seconds per edit", *(_seconds(summary["methods"][m]["timings"]) for m in labels)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    title = f"{summary['spec']} on {summary['model']}: {summary['num_cases']} edits, pre → post"
    return "\n".join([title, *lines, "(tf = teacher-forced token accuracy; prob = P(target) > P(ground truth); gen = n-gram entropy of generations)"])


def _seconds(timings: dict[str, Any]) -> str:
    edit, evaluation = timings.get("edit_seconds_mean"), timings.get("eval_seconds_mean")
    if edit is None:
        return "—"
    return f"{edit:.1f} + {evaluation:.1f} eval"


def html_table(summary: dict[str, Any], title: str | None = None) -> str:
    """The same table as :func:`text_table`, as HTML with post values coloured by size."""
    labels = list(summary["methods"])
    head = "".join(f"<th style='text-align:center'>{html.escape(m)}</th>" for m in labels)
    body = []
    for metric, protocol in metric_rows(summary):
        cells = []
        for m in labels:
            values = summary["methods"][m]["metrics"].get(metric, {}).get(protocol, {})
            post = values.get("post")
            colour = "" if post is None or metric == "fluency" else f"background:rgba({int(220 * (1 - post))},{int(180 * post)},80,0.25)"
            cells.append(f"<td style='text-align:center;{colour}'>{html.escape(_cell(values))}</td>")
        body.append(f"<tr><th style='text-align:left'>{html.escape(_row_label(metric, protocol))}</th>{''.join(cells)}</tr>")
    body.append("<tr><th style='text-align:left'>seconds per edit</th>" + "".join(
        f"<td style='text-align:center'>{html.escape(_seconds(summary['methods'][m]['timings']))}</td>" for m in labels) + "</tr>")
    caption = title or f"{summary['spec']} on {summary['model']}: {summary['num_cases']} edits, pre → post"
    return (
        f"<table><caption style='caption-side:top;text-align:left'><b>{html.escape(caption)}</b></caption>"
        f"<thead><tr><th>metric (protocol)</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        "<small>tf = teacher-forced token accuracy; prob = P(target) &gt; P(ground truth); "
        "gen = n-gram entropy of greedy generations</small>"
    )


def html_generations(cases: list[dict[str, Any]], limit: int = 20) -> str:
    """Before/after greedy generations from each edit prompt, one row per (method, case)."""
    rows = []
    for record in cases[:limit]:
        pre = record["pre"]["generations"][0]["text"] if record["pre"]["generations"] else ""
        post = record["post"]["generations"][0]["text"] if record["post"]["generations"] else ""
        rows.append(
            "<tr>" + "".join(f"<td style='text-align:left'>{html.escape(str(v))}</td>" for v in (
                record["method"], record["edit"]["prompt"], f"{record['edit'].get('ground_truth') or ''} → {record['edit']['target']}", pre, post)) + "</tr>"
        )
    head = "".join(f"<th style='text-align:left'>{h}</th>" for h in ("method", "prompt", "edit", "before", "after"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
