"""A sweep folder read back: its cells, their runs, and the merged table (no torch, no model).

A sweep folder (written by :mod:`keditlab.runner.sweep_run`) holds::

    spec.yaml     the spec as it was given (a resumed sweep expands its cells from this copy)
    sweep.json    every cell: its coordinates, status (pending, running, complete, failed),
                  run folder, start and end times, seconds, the node it ran on, its error
    cells/        one ordinary run folder per cell (keditlab.load_run opens each)
    table.csv     every complete cell's rows: the swept coordinates, method, model,
                  dataset, metric, protocol, pre, post, n
    table.md      the same, protocols side by side; with `run.seed` swept, the seeds of
                  one setting are one row: the mean, ± the standard deviation, and n seeds

``keditlab show SWEEP_FOLDER`` prints it; ``keditlab.show(sweep_folder)`` shows
the run dashboard with one entry per cell and method (:func:`merged_run`).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keditlab.runner.result import Run, load_run
from keditlab.runner.table_files import NOTE, table_rows
from keditlab.vocabulary import PROTOCOLS

SWEEP_FILE = "sweep.json"
SWEEP_FORMAT = 1
#: A cell's states: not started (or to be run again), being run, finished with a run folder, stopped by an error.
STATUSES = ("pending", "running", "complete", "failed")
#: Axes that have a column of their own in the table whatever the sweep varies (read from each cell's summary).
OWN_COLUMNS = ("method", "model")
#: The axis whose values are repeats of one setting: the Markdown table gives their mean and spread.
SEED = "run.seed"


def is_sweep_folder(path: str | Path) -> bool:
    return (Path(path) / SWEEP_FILE).is_file()


def read_sweep(folder: str | Path) -> dict[str, Any]:
    """``sweep.json`` of ``folder``; a folder without one is named with the fix."""
    path = Path(folder).expanduser() / SWEEP_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{Path(folder)} is not a sweep folder: it has no {SWEEP_FILE}. Fix: pass the folder "
                                "`keditlab sweep` printed at its end (under runs/ by default)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}): it was edited by hand or cut "
                         "short. Fix: restore it; the cells' run folders under cells/ are intact") from None


def cell_runs(folder: str | Path, record: dict[str, Any] | None = None) -> list[tuple[dict[str, Any], Run]]:
    """``(cell record, Run)`` for every complete cell, in cell order."""
    folder = Path(folder)
    record = record or read_sweep(folder)
    return [(cell, load_run(folder / cell["folder"])) for cell in record["cells"]
            if cell["status"] == "complete" and cell.get("folder")]


#: The table's own columns: a swept key of the same name (a bundle called `dataset`) gets its column as `sweep.<key>`.
TABLE_COLUMNS = ("cell", "method", "model", "dataset", "metric", "protocol", "pre", "post", "n")


def _column(key: str) -> str:
    return f"sweep.{key}" if key in TABLE_COLUMNS else key


def _axis_columns(record: dict[str, Any]) -> list[str]:
    return [_column(axis["key"]) for axis in record.get("axes", []) if axis["key"] not in OWN_COLUMNS]


def merged_rows(folder: str | Path, record: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per complete cell, method, dataset, metric and protocol, with the cell's coordinates as columns."""
    record = record or read_sweep(folder)
    axes = _axis_columns(record)
    rows = []
    for cell, run in cell_runs(folder, record):
        for row in table_rows(run.summary):
            coords = {_column(key): label for key, label in cell["coords"].items()}
            rows.append({"cell": cell["index"], **{key: coords.get(key, "") for key in axes},
                         "method": row["method"], "model": run.summary.get("model", ""), **{k: row[k] for k in
                         ("dataset", "metric", "protocol", "pre", "post", "n")}})
    return rows


def merged_csv(folder: str | Path, record: dict[str, Any] | None = None) -> str:
    record = record or read_sweep(folder)
    columns = ["cell", *_axis_columns(record), "method", "model", "dataset", "metric", "protocol", "pre", "post", "n"]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    for row in merged_rows(folder, record):
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return out.getvalue()


def _spread(values: list[float]) -> str:
    text = f"{statistics.fmean(values):.3f}"
    if len(values) > 1:
        text += f" ± {statistics.stdev(values):.3f}"
    return text


def _cell_text(rows: list[dict[str, Any]]) -> str:
    pre = [r["pre"] for r in rows if r["pre"] is not None]
    post = [r["post"] for r in rows if r["post"] is not None]
    if not pre and not post:
        return ""
    return f"{_spread(pre) if pre else '—'} → {_spread(post) if post else '—'}"


def merged_markdown(folder: str | Path, record: dict[str, Any] | None = None) -> str:
    """The merged table: one row per setting, method, model, dataset and metric; the protocols as columns."""
    record = record or read_sweep(folder)
    rows = merged_rows(folder, record)
    # a swept column that only repeats the dataset's name (`edits`, a bundle of datasets) says nothing new here
    axes = [key for key in _axis_columns(record) if key != SEED
            and not (rows and all(row[key] == row["dataset"] for row in rows))]
    seeds = any(axis["key"] == SEED for axis in record.get("axes", []))
    groups: dict[tuple[Any, ...], dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        key = (row["method"], row["model"], row["dataset"], *(row[a] for a in axes), row["metric"])
        groups.setdefault(key, {}).setdefault(row["protocol"], []).append(row)
    head = ["method", "model", "dataset", *axes, "metric", *PROTOCOLS] + (["seeds"] if seeds else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, by_protocol in groups.items():
        cells = [_cell_text(by_protocol.get(protocol, [])) for protocol in PROTOCOLS]
        count = max(len(rows) for rows in by_protocol.values())
        lines.append("| " + " | ".join([*map(str, key), *cells] + ([str(count)] if seeds else [])) + " |")
    done = sum(cell["status"] == "complete" for cell in record["cells"])
    header = f"Sweep {record.get('spec', '')}: {done} of {len(record['cells'])} cells complete"
    failed = [cell for cell in record["cells"] if cell["status"] == "failed"]
    notes = [f"- cell {cell['index']} ({cell_label(cell)}) failed: {cell.get('error') or 'no error recorded'}" for cell in failed]
    seed_note = (" With `run.seed` swept, a value is the mean over the seeds ± their standard deviation; `seeds` "
                 "counts them.") if seeds else ""
    return "\n".join([header, "", *lines, "", NOTE + seed_note, *([""] + notes if notes else [])]) + "\n"


def cell_label(cell: dict[str, Any]) -> str:
    """``method=rome, run.seed=0``: a cell of ``sweep.json`` named by its coordinates (``the spec`` for a sweep of one)."""
    return ", ".join(f"{key}={value}" for key, value in cell["coords"].items()) or "the spec"


def merged_run(folder: str | Path) -> Run:
    """The sweep as one :class:`Run` for the dashboard: a "method" per cell and method (``rome · zsre · 0``)."""
    folder = Path(folder)
    record = read_sweep(folder)
    methods: dict[str, Any] = {}
    cases: list[dict[str, Any]] = []
    models: list[str] = []
    for cell, run in cell_runs(folder, record):
        tail = " · ".join(value for key, value in cell["coords"].items() if key != "method")
        for label, method in run.summary["methods"].items():
            name = f"{label} · {tail}" if tail else label
            methods[name] = method
            cases.extend({**case, "method": name} for case in run.cases if case.get("method") == label)
        if run.summary.get("model") and run.summary["model"] not in models:
            models.append(run.summary["model"])
    summary = {"spec": record.get("spec", "sweep"), "model": ", ".join(models) or "?",
               "num_cases": len({(c.get("method"), c.get("case_id")) for c in cases}), "methods": methods}
    return Run(summary=summary, cases=cases, manifest={"sweep": record}, path=folder)


@dataclass
class SweepResult:
    """A sweep folder: ``record`` is ``sweep.json``; printing it gives the merged table."""

    path: Path
    record: dict[str, Any]

    @classmethod
    def load(cls, folder: str | Path) -> "SweepResult":
        return cls(Path(folder), read_sweep(folder))

    @property
    def status(self) -> str:
        return self.record.get("status", "running")

    def counts(self) -> dict[str, int]:
        return {status: sum(cell["status"] == status for cell in self.record["cells"]) for status in STATUSES}

    def runs(self) -> dict[int, Run]:
        """Each complete cell's :class:`Run`, by cell number."""
        return {cell["index"]: run for cell, run in cell_runs(self.path, self.record)}

    def rows(self) -> list[dict[str, Any]]:
        """The merged table's rows (what ``table.csv`` holds), e.g. for ``pandas.DataFrame(result.rows())``."""
        return merged_rows(self.path, self.record)

    def table(self) -> str:
        return merged_markdown(self.path, self.record)

    def __str__(self) -> str:
        counts = ", ".join(f"{n} {status}" for status, n in self.counts().items() if n)
        resume = (f"\nContinue it with: keditlab sweep --resume {self.path}" if self.status != "complete" else "")
        return f"{self.table()}\nsweep: {self.path} ({self.status}: {counts}){resume}"

    def __repr__(self) -> str:
        return f"SweepResult({self.record.get('spec')!r}, {len(self.record['cells'])} cells, status={self.status!r}, path={str(self.path)!r})"

    def _repr_html_(self) -> str:
        import html

        return f"<pre>{html.escape(str(self))}</pre>"
