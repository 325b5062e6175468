"""A run's results as plain tables: what every dashboard view is drawn from.

Computation and rendering stay apart.  The functions here read only a run's
records (``summary.json``, ``cases.jsonl``; see docs/results.md) and return
pandas DataFrames that tests can check; :mod:`keditlab.widgets.charts`,
:mod:`keditlab.widgets.static` and :mod:`keditlab.widgets.dashboard` only draw
them.  Nothing here calls a method or loads a model, so a run folder saved
yesterday gives the same frames as a run that just finished.

Every value is keyed by ``(metric, protocol)``, as in the records: a
teacher-forced reliability and a probability-test reliability answer different
questions (Meng et al., 2022, report both for CounterFact), so they get
different columns and are never averaged together.  A protocol this module has
never heard of (one a later benchmark adds) gets its own column group all the
same: the frames list whatever the records hold.

Three frames:

:func:`metrics_frame`
    one row per (method, metric, protocol): ``pre``, ``post``, ``change``, ``n``
    (:func:`metrics_table` pivots it to methods × (protocol, metric)).
:func:`edit_rows`
    one row per probe of every edit, at the edit's last measurement: what a
    drill-down shows (prompt, answer, value before and after, passed, and the
    greedy generation before and after where the records hold one).
:func:`retention_frame`
    sequential runs: one row per (method, point of the curve, metric, protocol),
    how the edits held up as more went on (Gupta et al., 2024, "Model editing at
    scale leads to gradual and catastrophic forgetting").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keditlab.widgets import require_notebook_extra

require_notebook_extra("keditlab.widgets.data", ("pandas",))
import pandas as pd

from keditlab.runner.render import last_records
from keditlab.runner.result import Run, load_run
from keditlab.runner.summary import PROTOCOL_ORDER, metric_order_key
from keditlab.vocabulary import METRIC_NAMES

#: Metrics in reading order; a metric's variants (``reliability_contains``) follow it, and one this list lacks
#: comes after them (:func:`keditlab.runner.summary.metric_order_key`, the order of the text table too).
METRIC_ORDER = METRIC_NAMES
#: The probe kind each metric is measured on, as the drill-down names it.
PROBE_KIND = {"reliability": "edit prompt", "generalization": "rephrase", "locality": "locality", "portability": "portability"}
#: A probe passes when its value after the edit reaches this.  Teacher-forced values are the fraction of answer
#: tokens that are the argmax (locality: that kept their pre-edit argmax), so 1.0 means "every token right"; the
#: probability test is 0 or 1.  Fluency (an entropy) has no pass mark.
PASS_AT = 1.0


def records_of(run: Any) -> Run:
    """``run`` as a :class:`~keditlab.runner.result.Run`: a ``Run`` itself, a run folder, or a ``{"summary", "cases"}`` dict.

    A sweep folder (or a :class:`~keditlab.runner.sweep_result.SweepResult`) becomes one ``Run`` with an entry per
    cell and method (:func:`keditlab.runner.sweep_result.merged_run`).

    A folder is read by :func:`keditlab.load_run`, the one reader of run
    folders.  Raises ``TypeError``/``FileNotFoundError`` naming what was given
    and what is expected.
    """
    if isinstance(run, Run):
        return run
    if isinstance(run, (str, Path)):
        from keditlab.runner.sweep_result import is_sweep_folder, merged_run

        return merged_run(run) if is_sweep_folder(run) else load_run(run)
    if isinstance(run, dict) and "summary" in run:
        return Run(run["summary"], list(run.get("cases", [])), run.get("manifest", {}), None)
    if hasattr(run, "record") and hasattr(run, "path") and isinstance(getattr(run, "record"), dict):  # a SweepResult
        from keditlab.runner.sweep_result import merged_run

        return merged_run(run.path)
    if all(hasattr(run, a) for a in ("summary", "cases")):
        return Run(run.summary, list(run.cases), getattr(run, "manifest", {}) or {}, getattr(run, "path", None))
    raise TypeError(f"cannot show a {type(run).__name__}: pass a keditlab Run (what keditlab.run returns), "
                    "the path of a run folder, or a dict with 'summary' and 'cases'")


def _order(value: str, order: tuple[str, ...]) -> tuple[int, str]:
    return (order.index(value) if value in order else len(order), value)


def metrics_frame(run: Any) -> pd.DataFrame:
    """One row per (method, metric, protocol): ``pre`` and ``post`` means, ``change = post - pre``, ``n`` edits.

    Methods keep the spec's order; protocols follow :data:`PROTOCOL_ORDER` and
    metrics are grouped as in the text table (each metric, then its variants:
    :func:`keditlab.runner.summary.metric_order_key`), unknown ones after them.
    """
    summary = records_of(run).summary
    rows = []
    for label, method in summary["methods"].items():
        for metric, protocols in method.get("metrics", {}).items():
            for protocol, values in protocols.items():
                pre, post = values.get("pre"), values.get("post")
                rows.append({"method": label, "method_name": method.get("method", label), "metric": metric,
                             "protocol": protocol, "pre": pre, "post": post,
                             "change": None if pre is None or post is None else round(post - pre, 6),
                             "n": values.get("n")})
    frame = pd.DataFrame(rows, columns=["method", "method_name", "metric", "protocol", "pre", "post", "change", "n"])
    if frame.empty:
        return frame
    labels = list(summary["methods"])
    frame["_m"] = frame["method"].map(labels.index)
    frame["_k"] = frame["metric"].map(metric_order_key)
    frame["_p"] = frame["protocol"].map(lambda p: _order(p, PROTOCOL_ORDER))
    frame = frame.sort_values(["_m", "_p", "_k"]).drop(columns=["_m", "_k", "_p"]).reset_index(drop=True)
    return frame.astype({"pre": float, "post": float, "change": float})


def metrics_table(run: Any) -> pd.DataFrame:
    """Methods as rows; columns ``(protocol, metric, pre|post|change)``: one column group per protocol."""
    frame = metrics_frame(run)
    if frame.empty:
        return pd.DataFrame()
    wide = frame.pivot_table(index="method", columns=["protocol", "metric"], values=["pre", "post", "change"], sort=False, dropna=False)
    wide = wide.reorder_levels([1, 2, 0], axis=1)
    columns = sorted(wide.columns, key=lambda c: (_order(c[0], PROTOCOL_ORDER), metric_order_key(c[1]), ("pre", "post", "change").index(c[2])))
    wide = wide[columns].dropna(axis=1, how="all")
    wide = wide.reindex([m for m in records_of(run).summary["methods"] if m in wide.index])
    wide.columns.names = ["protocol", "metric", "value"]
    return wide


def _generations(measurement: dict[str, Any]) -> dict[str, str]:
    return {g["prompt"]: g["text"] for g in measurement.get("generations", [])}


def _passed(metric: str, value: float | None) -> bool | None:
    if value is None or metric not in PROBE_KIND:
        return None
    return value >= PASS_AT - 1e-9


EDIT_COLUMNS = ["method", "case_id", "subject", "target", "ground_truth", "metric", "protocol", "kind", "prompt",
                "answer", "pre", "post", "passed", "generation_before", "generation_after"]


def edit_rows(run: Any, method: str | None = None, case_id: str | None = None) -> pd.DataFrame:
    """One row per probe of each edit at its last measurement (the drill-down), in run order.

    Columns: :data:`EDIT_COLUMNS`.  ``kind`` is ``edit prompt``, ``rephrase``,
    ``locality`` or ``portability``; ``passed`` applies :data:`PASS_AT` to the
    post value (``None`` for fluency); ``generation_before/after`` are the
    greedy continuations of that prompt when the records hold them (the edit
    prompt always; rephrases when fluency was measured), else ``None``.  A
    run's ``fluency`` becomes one row per edit with ``kind`` ``generation``.
    """
    records = records_of(run)
    rows = []
    for record in last_records(records.cases):
        if method is not None and record["method"] != method:
            continue
        if case_id is not None and str(record["case_id"]) != str(case_id):
            continue
        edit = record.get("edit", {})
        pre, post = record.get("pre", {}), record.get("post", {})
        gen_pre, gen_post = _generations(pre), _generations(post)
        before_values = {(p["metric"], p["protocol"], p["prompt"], p["answer"]): p["value"] for p in pre.get("probes", [])}
        base = {"method": record["method"], "case_id": str(record["case_id"]), "subject": edit.get("subject"),
                "target": edit.get("target"), "ground_truth": edit.get("ground_truth")}
        for probe in post.get("probes", []):
            key = (probe["metric"], probe["protocol"], probe["prompt"], probe["answer"])
            rows.append({**base, "metric": probe["metric"], "protocol": probe["protocol"],
                         "kind": PROBE_KIND.get(probe["metric"], probe["metric"]), "prompt": probe["prompt"],
                         "answer": probe["answer"], "pre": before_values.get(key), "post": probe["value"],
                         "passed": _passed(probe["metric"], probe["value"]),
                         "generation_before": gen_pre.get(probe["prompt"]), "generation_after": gen_post.get(probe["prompt"])})
        if post.get("fluency") is not None:
            rows.append({**base, "metric": "fluency", "protocol": "generation", "kind": "generation",
                         "prompt": edit.get("prompt"), "answer": None, "pre": pre.get("fluency"), "post": post.get("fluency"),
                         "passed": None, "generation_before": gen_pre.get(edit.get("prompt")),
                         "generation_after": gen_post.get(edit.get("prompt"))})
    return pd.DataFrame(rows, columns=EDIT_COLUMNS)


def edit_list(run: Any) -> pd.DataFrame:
    """One row per (method, edit): ids, prompt, ``ground_truth → target``, and how many of its probes passed."""
    rows = edit_rows(run)
    out = []
    for (method, case_id), group in rows.groupby(["method", "case_id"], sort=False):
        judged = group[group["passed"].notna()]
        first = group.iloc[0]
        prompt = group[group["kind"] == "edit prompt"]["prompt"]
        out.append({"method": method, "case_id": case_id, "subject": first["subject"],
                    "prompt": prompt.iloc[0] if len(prompt) else None, "ground_truth": first["ground_truth"],
                    "target": first["target"], "passed": int(judged["passed"].astype(bool).sum()), "probes": len(judged)})
    return pd.DataFrame(out, columns=["method", "case_id", "subject", "prompt", "ground_truth", "target", "passed", "probes"])


def retention_frame(run: Any) -> pd.DataFrame:
    """The curves of sequential runs, long form: method, point, edits_applied, measured, metric, protocol, value.

    Empty for a run with no method measured at more than one point (``single``
    and ``batch`` runs, or ``sequential`` measured once after all edits): a
    curve of one point says nothing the table does not.
    """
    summary = records_of(run).summary
    rows = []
    for label, method in summary["methods"].items():
        curve = method.get("curve") or []
        if len(curve) < 2:
            continue
        for point, entry in enumerate(curve):
            for metric, protocols in entry.get("metrics", {}).items():
                for protocol, value in protocols.items():
                    rows.append({"method": label, "point": point, "edits_applied": entry["edits_applied"],
                                 "measured": entry.get("measured"), "metric": metric, "protocol": protocol, "value": value})
    return pd.DataFrame(rows, columns=["method", "point", "edits_applied", "measured", "metric", "protocol", "value"])


def run_notes(run: Any) -> list[str]:
    """Short lines under the title: the mode, edits whose target was not said, seconds per edit."""
    from keditlab.runner.render import mode_line  # the same words as the text table

    summary = records_of(run).summary
    notes = [line for line in [mode_line(summary)] if line]
    n = summary.get("num_cases")
    for label, method in summary["methods"].items():
        parts = []
        warnings = method.get("warnings", {})
        if warnings.get("target_not_said"):
            parts.append(f"target not said after {warnings['target_not_said']} of {n} edits")
        if warnings.get("outputs_unchanged"):
            parts.append(f"OUTPUTS UNCHANGED after {warnings['outputs_unchanged']} of {n} edits")
        seconds = method.get("timings", {}).get("edit_seconds_mean")
        if seconds is not None:
            parts.append(f"{seconds:.1f} s per edit")
        if parts:
            notes.append(f"{label}: " + ", ".join(parts))
    return notes
