"""The results table rendered: plain text for the terminal, HTML for notebooks.

(The same means written as files, ``table.csv`` and ``table.md``, are
:mod:`keditlab.runner.table_files`.)  Rows are grouped by metric, in the order
of :func:`keditlab.runner.summary.metric_rows`.  Both read only a summary dict (see :mod:`keditlab.runner.summary`), so a run
folder saved yesterday renders the same as a run that just finished.  Under
the title a line says the run's mode (``mode: sequential, batches of 10, ...``:
which model the post values were measured on), and when a judge judged the
generated answers (``evaluate.judge``) a second line names it; a sequential run measured at
several points gets a short block under the table, its curve: how the edits
held up as more went on.  A run saved before modes existed shows neither.
"""

from __future__ import annotations

import html
from typing import Any

from keditlab.runner.summary import metric_family, metric_rows
from keditlab.vocabulary import GENERAL_FAMILY, PROTOCOL_SHORT

#: Under the table.  Two rows can look contradictory and are not: ``reliability (gen)`` is exact match of the
#: answer (the generation from the edit prompt, framed by ``evaluate.context``, cut at its first sentence end or
#: line break, normalised; :mod:`keditlab.evaluate.answers`), while "target not said" counts edits whose greedy
#: continuation of the edit prompt as written does not *begin* with the target
#: (:meth:`keditlab.evaluate.CaseMeasurement.says`).  " Rome, Italy." begins with Rome and is not exactly Rome.
LEGEND = ("(tf = teacher-forced token accuracy; prob = P(target) > P(ground truth) (locality: the true answer stays above\n"
          " the target), _magnitude: by how much; gen = the generated answer, up to its first sentence end or line break,\n"
          " is exactly the target (_contains: contains it; locality: answer unchanged; fluency: n-gram entropy);\n"
          " target not said = edits whose greedy continuation of the edit prompt does not begin with the target,\n"
          " so ' Rome, Italy.' is said, yet counts 0 in reliability (gen), which asks for 'Rome' alone;\n"
          " one-off set-up = statistics and context prefixes, computed once and cached, not part of the seconds per edit)")


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
    lines = _aligned(rows, rule=True)
    title = f"{summary['spec']} on {summary['model']}: {_edits(summary)}, pre → post"
    heading = [line for line in (mode_line(summary), judge_line(summary)) if line]
    return "\n".join([title, *heading, *lines, LEGEND, *general_legend(summary), *curve_block(summary)])


def _edits(summary: dict[str, Any]) -> str:
    """``6 edits``, or ``100 edits (records 0-99 of zsre_mend_train-1k.json, read as zsre)`` when read from a file."""
    origin = summary.get("edits_from")
    return f"{summary['num_cases']} edits" + (f" ({origin})" if origin else "")


def _aligned(rows: list[list[str]], rule: bool = False) -> list[str]:
    """Rows as lines of left-aligned columns; ``rule``: a line of dashes under the first."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    if rule:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def describe_mode(mode: str, batch_size: int, evaluate_at: Any, num_cases: int) -> str:
    """The schedule in words, e.g. ``sequential, batches of 10, measured after all 100 edits``."""
    if mode == "single":
        return "single, each edit alone on the unedited model"
    batches = "one edit at a time" if batch_size == 1 else f"batches of {batch_size}"
    if mode == "batch":
        return f"batch, {batches}, each on the unedited model"
    every = evaluate_at.get("every") if isinstance(evaluate_at, dict) else None
    if every is not None:
        when = f"all edits so far measured every {every} edits (the table: after all {num_cases})"
    elif evaluate_at == "after_all":
        when = f"measured after all {num_cases} edits"
    else:
        when = "each measured right after it is applied"
    return f"sequential, {batches} on top of each other, {when}"


def mode_line(summary: dict[str, Any]) -> str | None:
    """``mode: ...`` for the table; None for a run saved before modes existed (it was single)."""
    methods = list(summary["methods"].values())
    described = {describe_mode(m["mode"], m.get("batch_size", 1), m.get("evaluate_at"), summary["num_cases"])
                 for m in methods if "mode" in m}
    if len(described) != 1:  # no mode recorded, or (one day) methods run in different modes: each has its own
        return None
    return f"mode: {described.pop()}"


def judge_line(summary: dict[str, Any]) -> str | None:
    """``judge: ...`` when a judge gave the generation figures (``evaluate.judge``); None for the rules."""
    judge = summary.get("judge")
    if not judge:
        return None
    return (f"judge: {judge} (gen = its yes or no on each answer; locality_accuracy too; "
            "_exact: exact match, _contains: answer contained)")


#: The curve's columns in the retention block: teacher-forced post means.
CURVE_METRICS = ("reliability", "generalization", "locality")
#: At most this many points are printed; summary.json has them all.
CURVE_ROWS = 12


def _curve_points(curve: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Up to :data:`CURVE_ROWS` points, evenly spread, the first and last always included."""
    if len(curve) <= CURVE_ROWS:
        return curve
    step = (len(curve) - 1) / (CURVE_ROWS - 1)
    return [curve[round(i * step)] for i in range(CURVE_ROWS)]


def curve_rows(summary: dict[str, Any], label: str) -> list[list[str]]:
    """A method's curve as rows (header first): edits applied, edits measured, teacher-forced post means, and the
    general-ability scores where they were measured (``—`` at the points without one)."""
    curve = summary["methods"][label].get("curve") or []
    metrics = [m for m in CURVE_METRICS if any("teacher_forced" in p["metrics"].get(m, {}) for p in curve)]
    general = list(dict.fromkeys((m, protocol) for p in curve for m, protocols in p["metrics"].items()
                                 if metric_family(m) == GENERAL_FAMILY for protocol in protocols))
    fmt = (lambda v: "—" if v is None else f"{v:.2f}")
    rows = [["edits applied", "measured", *metrics, *(f"{m} ({protocol.split(':', 1)[-1]})" for m, protocol in general)]]
    for point in _curve_points(curve):
        rows.append([str(point["edits_applied"]), str(point["measured"]),
                     *(fmt(point["metrics"].get(m, {}).get("teacher_forced")) for m in metrics),
                     *(fmt(point["metrics"].get(m, {}).get(protocol)) for m, protocol in general)])
    return rows


def general_legend(summary: dict[str, Any]) -> list[str]:
    """Under the legend when the table has general-ability rows: what they are (docs/protocols.md, General ability)."""
    if not any(metric_family(metric) == GENERAL_FAMILY for metric, _ in metric_rows(summary)):
        return []
    return ["(general:TASK (lm-eval:METRIC) = lm-evaluation-harness's METRIC on TASK for the whole model, not an edit\n"
            " metric: before any edit → after the method's last measurement (batch: with the last batch on the model);\n"
            " every measurement is in summary.json and general.jsonl)"]


def curve_block(summary: dict[str, Any]) -> list[str]:
    """Under the table, per method with a curve of more than one point: how its edits held up as more went on."""
    lines: list[str] = []
    for label, method in summary["methods"].items():
        curve = method.get("curve") or []
        if len(curve) < 2:
            continue  # one point is the table itself
        every = method.get("evaluate_at", {}).get("every") if isinstance(method.get("evaluate_at"), dict) else None
        what = "all edits so far" if every is not None else "the batch just applied"
        shown = "" if len(curve) <= CURVE_ROWS else f"; {CURVE_ROWS} of {len(curve)} points, all in summary.json"
        lines += ["", f"{label}: post (tf) of {what}, as edits accumulate{shown}", *_aligned(curve_rows(summary, label))]
    return lines


def _footer_rows(summary: dict[str, Any], labels: list[str]) -> list[list[str]]:
    """Rows under the metrics: edits that did not take, seconds per edit, one-off set-up."""
    n = summary["num_cases"]
    methods = [summary["methods"][m] for m in labels]
    rows = [  # a run saved before these checks existed has no "warnings": show a dash, not a false 0
        ["target not said (edits)", *("—" if "warnings" not in m else f"{m['warnings'].get('target_not_said', 0)}/{n}" for m in methods)],
    ]
    if any(m.get("warnings", {}).get("edit_failed") for m in methods):  # refused and rolled back (docs/reliability.md)
        rows.append(["EDITS FAILED, rolled back", *(f"{m.get('warnings', {}).get('edit_failed', 0)}/{n}" for m in methods)])
    if any(m.get("warnings", {}).get("outputs_unchanged") for m in methods):  # a method that wrote nothing: say so loudly
        rows.append(["OUTPUTS UNCHANGED (edits)", *(f"{m.get('warnings', {}).get('outputs_unchanged', 0)}/{n}" for m in methods)])
    rows += [
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
    caption = title or f"{summary['spec']} on {summary['model']}: {_edits(summary)}, pre → post"
    mode_html = "".join(f"<br><small>{html.escape(line)}</small>" for line in (mode_line(summary), judge_line(summary)) if line)
    return (
        f"<table><caption style='caption-side:top;text-align:left'><b>{html.escape(caption)}</b>{mode_html}</caption>"
        f"<thead><tr><th>metric (protocol)</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        f"<small>{html.escape(LEGEND.strip('()').replace(chr(10), ' '))}</small>"
        + "".join(f"<br><small>{html.escape(line.strip('()').replace(chr(10), ' '))}</small>" for line in general_legend(summary))
        + "".join(_html_curve(summary, label) for label in labels)
    )


def _html_curve(summary: dict[str, Any], label: str) -> str:
    """The retention block of :func:`curve_block` as a small HTML table (nothing for a curve of one point)."""
    if len(summary["methods"][label].get("curve") or []) < 2:
        return ""
    head, *rows = curve_rows(summary, label)

    def row_html(row: list[str], tag: str) -> str:
        return "<tr>" + "".join(f"<{tag} style='text-align:center'>{html.escape(cell)}</{tag}>" for cell in row) + "</tr>"

    body = "".join(row_html(row, "td") for row in rows)
    return (f"<p><b>{html.escape(label)}</b>: post (tf) as edits accumulate</p>"
            f"<table><thead>{row_html(head, 'th')}</thead><tbody>{body}</tbody></table>")


def last_records(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each (method, case)'s record from its last measurement, in run order (one per pair, as the summary counts)."""
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for record in cases:
        if "failed" in record:   # an edit refused and rolled back has no measurement
            continue
        key = (record["method"], str(record["case_id"]))
        if key not in last or record.get("point", 0) >= last[key].get("point", 0):
            last[key] = record
    return list(last.values())


def html_generations(cases: list[dict[str, Any]], limit: int = 20) -> str:
    """Before/after greedy generations from each edit prompt, one row per (method, case), at its last measurement."""
    rows = []
    for record in last_records(cases)[:limit]:
        pre = record["pre"]["generations"][0]["text"] if record["pre"]["generations"] else ""
        post = record["post"]["generations"][0]["text"] if record["post"]["generations"] else ""
        rows.append(
            "<tr>" + "".join(f"<td style='text-align:left'>{html.escape(str(v))}</td>" for v in (
                record["method"], record["edit"]["prompt"], f"{record['edit'].get('ground_truth') or ''} → {record['edit']['target']}", pre, post)) + "</tr>"
        )
    head = "".join(f"<th style='text-align:left'>{h}</th>" for h in ("method", "prompt", "edit", "before", "after"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
