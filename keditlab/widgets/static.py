"""The dashboard as one static HTML page: for wherever widgets do not render.

An exported notebook, GitHub's notebook viewer, a CI log turned into HTML: none
of them runs the JavaScript ipywidgets need.  :func:`static_html` gives the
same content as :func:`keditlab.show` without it: the methods × metrics table
(one column group per protocol, each cell ``pre → post`` coloured by the
change), the bar charts as embedded PNG images, the retention curve of a
sequential run, and the per-edit drill-down as ``<details>`` blocks a reader
opens one by one.  Each part carries a CSS class (``keditlab-table``,
``keditlab-chart``, ``keditlab-drilldown``, ``keditlab-retention``) so tests
and style sheets can find it.

The same pieces are the HTML the widgets show, so the two cannot drift apart.
"""

from __future__ import annotations

import html
import math
from typing import Any

from keditlab.widgets import require_notebook_extra

require_notebook_extra("keditlab.widgets.static_html", ("pandas", "matplotlib"))

import pandas as pd  # noqa: E402 - after the check, so a missing pandas is named with its fix

from keditlab.widgets import charts
from keditlab.widgets.data import METRIC_ORDER, edit_list, edit_rows, metrics_frame, metrics_table, records_of, retention_frame, run_notes

STYLE = """<style>
.keditlab table{border-collapse:collapse;font-size:13px;margin:4px 0}
.keditlab th,.keditlab td{border:1px solid #ddd;padding:3px 7px;text-align:center}
.keditlab td.text{text-align:left;font-family:monospace;white-space:pre-wrap;max-width:28em}
.keditlab .pass{color:#1a7f37;font-weight:bold}.keditlab .fail{color:#cf222e;font-weight:bold}
.keditlab caption{caption-side:top;text-align:left;font-weight:bold}
.keditlab details{margin:3px 0}.keditlab summary{cursor:pointer}
</style>"""


def _fmt(value: Any) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def change_colour(change: Any, metric: str = "") -> str:
    """A background for a change: green when the value rose, red when it fell, stronger the larger the change.

    Every metric here is "higher is better" (locality is agreement with the
    unedited model, so a fall is damage).  Fluency is scored in bits, not
    fractions, so its change is scaled down before colouring.
    """
    if change is None or (isinstance(change, float) and math.isnan(change)) or abs(change) < 0.005:
        return ""
    strength = min(1.0, abs(change) / (2.0 if metric == "fluency" else 1.0))
    rgb = "40,167,69" if change > 0 else "207,34,46"
    return f"background:rgba({rgb},{0.12 + 0.5 * strength:.2f})"


def table_html(run: Any) -> str:
    """The methods × (protocol, metric) table; each cell ``pre → post``, coloured by the change."""
    records = records_of(run)
    table = metrics_table(records)
    if table.empty:
        return "<p>This run measured nothing.</p>"
    groups: dict[str, list[str]] = {}
    for protocol, metric, _ in table.columns:
        groups.setdefault(protocol, [])
        if metric not in groups[protocol]:
            groups[protocol].append(metric)
    top = "".join(f"<th colspan='{len(ms)}' class='protocol'>{html.escape(charts.PROTOCOL_SHORT.get(p, p))}: "
                  f"{html.escape(p.replace('_', '-'))}</th>" for p, ms in groups.items())
    second = "".join(f"<th>{html.escape(m)}</th>" for ms in groups.values() for m in ms)
    body = []
    for method in table.index:
        cells = []
        for protocol, metrics in groups.items():
            for metric in metrics:
                get = (lambda what: table.loc[method].get((protocol, metric, what)))
                pre, post, change = get("pre"), get("post"), get("change")
                title = f"change {change:+.2f}" if change is not None and not pd.isna(change) else "not measured"
                cells.append(f"<td style='{change_colour(change, metric)}' title='{title}' "
                             f"data-metric='{html.escape(metric)}' data-protocol='{html.escape(protocol)}'>"
                             f"{_fmt(pre)} → {_fmt(post)}</td>")
        body.append(f"<tr><th style='text-align:left'>{html.escape(str(method))}</th>{''.join(cells)}</tr>")
    notes = "".join(f"<br><small style='font-weight:normal'>{html.escape(n)}</small>" for n in run_notes(records))
    return (f"<table class='keditlab-table'><caption>{html.escape(records.title)}, pre → post{notes}</caption>"
            f"<thead><tr><th rowspan='2'>method</th>{top}</tr><tr>{second}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            "<p><small>green: rose after the edit, red: fell. tf = teacher-forced token accuracy (locality: tokens whose "
            "prediction did not move); prob = P(target) &gt; P(ground truth); gen = the greedy answer is the target (locality: answer unchanged; fluency: n-gram entropy of generations).</small></p>")


def charts_html(run: Any) -> str:
    frame = metrics_frame(run)
    if frame.empty:
        return ""
    return charts.img_tag(charts.metric_bars(frame), "bar charts: each metric before and after, per method")


def retention_html(run: Any) -> str:
    """The retention curve of a sequential run, as a chart and a small table; empty for other runs."""
    frame = retention_frame(run)
    if frame.empty:
        return ""
    tf = frame[frame["protocol"] == "teacher_forced"]
    wide = tf.pivot_table(index=["method", "edits_applied"], columns="metric", values="value", sort=False)
    wide = wide[sorted(wide.columns, key=lambda m: METRIC_ORDER.index(m) if m in METRIC_ORDER else len(METRIC_ORDER))]
    rows = "".join("<tr><td>" + html.escape(str(method)) + f"</td><td>{applied}</td>" +
                   "".join(f"<td>{_fmt(v)}</td>" for v in values) + "</tr>"
                   for (method, applied), values in zip(wide.index, wide.to_numpy().tolist()))
    head = "".join(f"<th>{html.escape(m)}</th>" for m in wide.columns)
    return ("<div class='keditlab-retention'><p><b>Retention</b>: post (tf) of the edits measured at each point, as edits "
            "accumulate on one model</p>"
            + charts.img_tag(charts.retention_plot(frame), "retention curve: post values against edits applied")
            + f"<table><thead><tr><th>method</th><th>edits applied</th>{head}</tr></thead><tbody>{rows}</tbody></table></div>")


def _mark(passed: Any) -> str:
    if passed is None or (isinstance(passed, float) and math.isnan(passed)):
        return ""
    return "<span class='pass'>✓ pass</span>" if passed else "<span class='fail'>✗ fail</span>"


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "<span style='color:#888'>not generated</span>"
    return html.escape(str(value))


def _given(value: Any) -> bool:
    """A value the records hold: not None, and not the NaN pandas puts where a record had none (a generation row's answer)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def edit_html(rows: pd.DataFrame) -> str:
    """One edit's probes as a table: kind, prompt → answer, value before → after, pass/fail, generations."""
    if rows.empty:
        return "<p>No records for this edit.</p>"
    first = rows.iloc[0]
    truth = f"{html.escape(str(first['ground_truth']))} → " if _given(first["ground_truth"]) else ""
    body = "".join(
        f"<tr data-kind='{html.escape(str(r['kind']))}'><td>{html.escape(str(r['kind']))}<br><small>{html.escape(charts.PROTOCOL_SHORT.get(r['protocol'], r['protocol']))}</small></td>"
        f"<td class='text'>{html.escape(str(r['prompt']))}" + (f" <b>{html.escape(str(r['answer']))}</b>" if _given(r["answer"]) else "") + "</td>"
        f"<td>{_fmt(r['pre'])} → {_fmt(r['post'])}</td><td>{_mark(r['passed'])}</td>"
        f"<td class='text'>{_text(r['generation_before'])}</td><td class='text'>{_text(r['generation_after'])}</td></tr>"
        for _, r in rows.iterrows())
    return (f"<div class='keditlab-edit'><p><b>{html.escape(str(first['method']))}</b>, edit "
            f"<code>{html.escape(str(first['case_id']))}</code> (subject <i>{html.escape(str(first['subject']))}</i>): "
            f"{truth}<b>{html.escape(str(first['target']))}</b></p>"
            "<table><thead><tr><th>probe</th><th>prompt and answer</th><th>before → after</th><th>pass</th>"
            "<th>greedy generation before</th><th>after</th></tr></thead>"
            f"<tbody>{body}</tbody></table></div>")


def drilldown_html(run: Any, limit: int = 50) -> str:
    """Every (method, edit) as a ``<details>`` block: its summary line, and :func:`edit_html` inside."""
    records = records_of(run)
    rows = edit_rows(records)
    listing = edit_list(records)
    blocks = []
    for _, item in listing.head(limit).iterrows():
        part = rows[(rows["method"] == item["method"]) & (rows["case_id"] == item["case_id"])]
        blocks.append(f"<details><summary>{html.escape(str(item['method']))} · <code>{html.escape(str(item['case_id']))}</code> "
                      f"{html.escape(str(item['prompt']))} → <b>{html.escape(str(item['target']))}</b> "
                      f"({item['passed']}/{item['probes']} probes pass)</summary>{edit_html(part)}</details>")
    more = f"<p><small>{len(listing) - limit} more in cases.jsonl</small></p>" if len(listing) > limit else ""
    return f"<div class='keditlab-drilldown'><p><b>Per edit</b> (click to open)</p>{''.join(blocks)}{more}</div>"


def static_html(run: Any) -> str:
    """The whole dashboard as self-contained HTML (no JavaScript, figures embedded)."""
    records = records_of(run)
    where = f"<p><small>results: <code>{html.escape(str(records.path))}</code></small></p>" if records.path else ""
    return (f"<div class='keditlab'>{STYLE}{table_html(records)}{charts_html(records)}{retention_html(records)}"
            f"{drilldown_html(records)}{where}</div>")
