"""A finished run as an object: :class:`Run`, and :func:`load_run` to reopen a run folder.

This is the one reader of a run folder (``summary.json``, ``cases.jsonl``,
``manifest.json``; see :mod:`keditlab.runner.folder` and docs/results.md): the
command line (``keditlab show``), the notebook display and the dashboards
(:mod:`keditlab.widgets`) all read runs through it.  Reading a run needs no
model and imports no torch, so a run saved yesterday opens at once.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keditlab.runner.folder import read_jsonl
from keditlab.runner.render import html_generations, html_table, text_table
from keditlab.spec.hints import did_you_mean
from keditlab.vocabulary import METRIC_NAMES, PROTOCOL_LONG, PROTOCOL_SHORT, PROTOCOLS  # noqa: F401 (PROTOCOL_SHORT re-exported)

#: The files a finished run folder holds; ``manifest.json`` is read when present (the table needs only the first two).
RUN_FILES = ("summary.json", "cases.jsonl")
#: The moments a value is measured at: before and after the edit.
WHEN = ("pre", "post")


@dataclass(repr=False)
class Run:
    """A finished run: its resolved spec, summary, per-case records and folder.

    In a notebook, a ``Run`` shows itself as a results table with the before/after
    generations; :func:`load_run` (``Run.load``) reopens a saved run the same way.
    ``summary`` is ``summary.json``, ``cases`` the lines of ``cases.jsonl`` and
    ``manifest`` ``manifest.json`` (docs/results.md names every key).
    """

    summary: dict[str, Any]
    cases: list[dict[str, Any]]
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def load(cls, folder: str | Path) -> "Run":
        """The run saved in ``folder`` (see :func:`load_run`)."""
        return load_run(folder)

    @property
    def title(self) -> str:
        """``quickstart on smollm2-135m: 6 edits``, with the benchmark records when the edits came from a file."""
        s = self.summary
        origin = f" ({s['edits_from']})" if s.get("edits_from") else ""
        return f"{s.get('spec', 'run')} on {s.get('model', '?')}: {s.get('num_cases', '?')} edits{origin}"

    def metric(self, method: str, metric: str, protocol: str = "teacher_forced", when: str = "post") -> float | None:
        """One mean from the summary, e.g. ``run.metric("rome", "reliability")``.

        ``method`` is a method's label, ``protocol`` one of ``teacher_forced``,
        ``probability``, ``generation``, and ``when`` is ``"pre"`` (before the
        edit) or ``"post"`` (after it).  Asking for something this run does not
        have raises :class:`MetricLookupError` naming what it does have, so a
        typo is never read as a missing value.
        """
        methods = self.summary["methods"]
        if method not in methods:
            raise MetricLookupError(
                f"this run has no method {method!r}{did_you_mean(method, methods)}; its methods (labels) are: {', '.join(methods)}"
            )
        if when not in WHEN:
            raise MetricLookupError(
                f"when must be 'pre' (before the edit) or 'post' (after it), got {when!r}{did_you_mean(str(when), WHEN)}"
            )
        measured = methods[method]["metrics"]
        if metric not in measured:
            requested = self.manifest.get("spec", {}).get("evaluate", {}).get("metrics", [])
            if metric in METRIC_NAMES and metric in requested:
                probe = {"generalization": "rephrase", "locality": "locality", "portability": "portability"}.get(metric, metric)
                problem = f"metric {metric!r} has no value in this run: it was asked for, but no edit has {probe} probes"
            elif metric in METRIC_NAMES:
                problem = f"metric {metric!r} was not measured in this run (it is chosen by the spec's `evaluate:`)"
            else:
                problem = f"unknown metric {metric!r}{did_you_mean(str(metric), METRIC_NAMES)}"
            listed = sorted(measured, key=lambda m: METRIC_NAMES.index(m) if m in METRIC_NAMES else len(METRIC_NAMES))
            raise MetricLookupError(f"{problem}; measured for {method!r}: {', '.join(listed) or 'nothing'}")
        protocols = measured[metric]
        if protocol not in protocols:
            has = f"{metric!r} was measured under: {', '.join(protocols)}"
            if protocol in PROTOCOLS:
                problem = f"{metric!r} was not measured under the protocol {protocol!r} for {method!r}"
                if protocol == "probability":
                    problem += " (that protocol needs a ground_truth in the edits)"
            elif protocol in PROTOCOL_LONG:
                problem = f"{protocol!r} is the table's short name; write protocol={PROTOCOL_LONG[protocol]!r}"
            else:
                problem = f"unknown protocol {protocol!r}{did_you_mean(str(protocol), PROTOCOLS)}; protocols are: {', '.join(PROTOCOLS)}"
            raise MetricLookupError(f"{problem}. {has}")
        return protocols[protocol].get(when)

    def table(self) -> str:
        """The results table as text, as ``keditlab run`` and ``keditlab show`` print it."""
        return text_table(self.summary)

    @property
    def status(self) -> str:
        """``complete``, or ``failed`` / ``interrupted`` for a run that stopped early (its table holds what it measured)."""
        return self.summary.get("status") or self.manifest.get("status") or "complete"

    def _partial_note(self) -> str:
        if self.status == "complete":
            return ""
        if self.status == "running":
            return (f"PARTIAL RUN (no summary: killed outright, or still going on): the table holds the "
                    f"{self.summary.get('measured', len(self.cases))} records measured so far, each edit at its latest "
                    f"measurement. Continue it with: keditlab run --resume {self.path}")
        error = self.manifest.get("error")
        return (f"PARTIAL RUN ({self.status}{': ' + error if error else ''}): the table holds only what was measured "
                "before it stopped.")

    def __str__(self) -> str:
        where = f"\nresults: {self.path}" if self.path else ""
        note = self._partial_note()
        return (note + "\n" if note else "") + self.table() + where

    def __repr__(self) -> str:
        methods = ", ".join(self.summary["methods"])
        return f"Run({self.summary['spec']!r}, {self.summary['num_cases']} edits, methods=[{methods}], path={str(self.path) if self.path else None!r})"

    def _repr_html_(self) -> str:
        where = f"<p><small>results: <code>{self.path}</code></small></p>" if self.path else ""
        note = self._partial_note()
        return (f"<p><b>{html.escape(note)}</b></p>" if note else "") + html_table(self.summary) + "<h4>Before / after (greedy generation from the edit prompt)</h4>" + html_generations(self.cases) + where


class MetricLookupError(KeyError):
    """``Run.metric`` was asked for a method, metric, protocol or moment the run does not have.

    A ``KeyError`` (so ``except KeyError`` still catches it) whose message reads
    as a sentence rather than a quoted key.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def load_run(path: str | Path) -> Run:
    """Reopen the run saved in the folder ``path`` (what ``keditlab run`` printed as ``results: ...``).

    The folder's ``summary.json`` and ``cases.jsonl`` make the table and the
    per-edit records; ``manifest.json`` (the resolved spec, versions, times) is
    read when it is there.  The result is the :class:`Run` the run returned:
    ``run.metric("rome", "reliability")``, ``print(run)``, ``keditlab.show(run)``.
    Nothing is recomputed and no model is loaded.

    A run that stopped early (``status: failed`` or ``interrupted``) opens with
    what it measured (``run.status`` says which; printing it says "PARTIAL RUN").
    So does a run killed outright, or still going on (``status: running``, no
    summary): its table is made from the records in ``cases.jsonl``
    (:func:`~keditlab.runner.resume.partial_summary`).  A folder that is not a
    run raises ``FileNotFoundError`` naming the missing file and what to do::

        run = keditlab.load_run("runs/quickstart-20250101-120000")
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a keditlab run folder: {'it is a file' if folder.exists() else 'no such folder'}. "
                                "Fix: pass the folder a run wrote (printed as 'results: ...' at its end, under runs/ by default)")
    missing = [name for name in RUN_FILES if not (folder / name).is_file()]
    manifest = _read_json(folder / "manifest.json") if (folder / "manifest.json").is_file() else {}
    if missing == ["cases.jsonl"] and manifest.get("status") in ("failed", "interrupted"):
        missing = []   # it stopped before measuring any edit: its summary says so, and it has no records
    if missing and manifest.get("status") == "running" and "summary.json" in missing:
        from keditlab.runner.resume import partial_summary, read_records

        cases = read_records(folder / "cases.jsonl")   # a last line the kill cut short is left out
        return Run(summary=partial_summary(manifest, cases), cases=cases, manifest=manifest, path=folder)
    if missing:
        why = (f"missing {', '.join(missing)}. Fix: pass the folder a run wrote (printed as 'results: ...' at its "
               "end), not its parent or a file inside it")
        raise FileNotFoundError(f"{folder} is not a complete keditlab run folder: {why}")
    cases = read_jsonl(folder / "cases.jsonl") if (folder / "cases.jsonl").is_file() else []
    return Run(summary=_read_json(folder / "summary.json"), cases=cases, manifest=manifest, path=folder)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}): the file was cut short or edited "
                         "by hand. Fix: run the spec again, or restore the file") from None
