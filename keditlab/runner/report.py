"""Results as tables: plain text for the terminal, HTML for notebooks.

Both read only a summary dict (see :mod:`keditlab.runner.summary`), so a run
folder saved yesterday renders the same as a run that just finished.
"""

from __future__ import annotations

import html
from typing import Any

from keditlab.runner.summary import metric_rows

LEGEND = ("(tf = teacher-forced token accuracy; prob = P(target) > P(ground truth); gen = n-gram entropy of generations;\n"
          " target not said = edits after which greedy decoding from the prompt does not give the target;\n"
          " one-off set-up = statistics and context prefixes, computed once and cached, not part of the seconds per edit)")

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
    rows.extend(_footer_rows(summary, labels))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    title = f"{summary['spec']} on {summary['model']}: {summary['num_cases']} edits, pre → post"
    return "\n".join([title, *lines, LEGEND])


def _footer_rows(summary: dict[str, Any], labels: list[str]) -> list[list[str]]:
    """Rows under the metrics: edits that did not take, seconds per edit, one-off set-up."""
    n = summary["num_cases"]
    methods = [summary["methods"][m] for m in labels]
    rows = [  # a run saved before these checks existed has no "warnings": show a dash, not a false 0
        ["target not said (edits)", *("—" if "warnings" not in m else f"{m['warnings'].get('target_not_said', 0)}/{n}" for m in methods)],
        ["seconds per edit", *(_seconds(m["timings"]) for m in methods)],
    ]
    if any(m["timings"].get("setup_seconds_total") for m in methods):
        rows.append(["one-off set-up (s)", *(f"{m['timings'].get('setup_seconds_total') or 0:.1f}" for m in methods)])
    return rows


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
    for label, *cells in _footer_rows(summary, labels):
        body.append(f"<tr><th style='text-align:left'>{html.escape(label)}</th>" + "".join(
            f"<td style='text-align:center'>{html.escape(cell)}</td>" for cell in cells) + "</tr>")
    caption = title or f"{summary['spec']} on {summary['model']}: {summary['num_cases']} edits, pre → post"
    return (
        f"<table><caption style='caption-side:top;text-align:left'><b>{html.escape(caption)}</b></caption>"
        f"<thead><tr><th>metric (protocol)</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        f"<small>{html.escape(LEGEND.strip('()').replace(chr(10), ' '))}</small>"
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
