"""General ability in a run: when the harness is run, on which model, and where its scores go.

``evaluate: {general: {tasks: [knowns], limit: 100}}`` (:mod:`keditlab.evaluate.general`
does the measuring) is run by :class:`GeneralRun`, which the runner calls at
four moments:

* **before anything is loaded** (:meth:`GeneralRun.open`): the run mode must
  keep edits on the model (the spec rule of :mod:`keditlab.spec.general`,
  asked again for a ``Spec`` built in Python), the harness must be installed,
  and every task must exist with its data readable (a harness task's data is
  downloaded here, once).  Each failure is a ``RunError`` before the model loads;
* **before the edits** (:meth:`~GeneralRun.measure_before`): once, on the
  unedited model, shared by every method of the run (as the ``pre`` of the
  edit metrics is);
* **after edits**, at the measurements the schedule makes
  (:meth:`~GeneralRun.measures_at`, :meth:`~GeneralRun.measure_after`): the
  last one of each method (mode ``batch``: the last batch's, with that batch
  on the model; mode ``sequential``: after all the edits) and, with
  ``evaluate_at: {every: k}``, every one, so the general score follows the
  retention curve.  ``after_each`` measures each batch's edits at once, but
  the general score only at the end: a harness run per batch would cost more
  than the edits;
* **when the summary is written** (:meth:`~GeneralRun.add_to_summary`): each
  score becomes its own row of every method, ``general:<task>`` under
  ``lm-eval:<metric>``, with ``pre`` (the unedited model), ``post`` (its last
  measurement for that method) and ``n`` (examples read); the method gets a
  ``general`` entry with every measurement, and a sequential method's curve
  points carry the general scores measured there.

Every measurement is also a line of ``general.jsonl`` in the run folder
(``method`` null for the one before the edits), written as it is taken, so a
resumed run keeps those of the work it keeps (:meth:`~GeneralRun.take_up`).

A method whose edits are a context placed before keditlab's prompts (IKE)
leaves the weights unedited, and the harness reads its own prompts without
that context: its general score would be the unedited model's.  It is not
measured (``post`` null), and the run says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keditlab.evaluate.general import GeneralError, GeneralEvaluator, GeneralResult, harness_version
from keditlab.runner import folder as run_folder
from keditlab.runner.schedule import Measure, RunError, Step
from keditlab.spec.general import general_problems
from keditlab.vocabulary import general_row

#: The run folder's file of general-ability measurements, one line each.
GENERAL_FILE = "general.jsonl"


class GeneralRun:
    """One run's general-ability measurements: before the edits, and after them per method."""

    def __init__(self, spec: Any, evaluator: GeneralEvaluator, log: Any = print) -> None:
        self.spec = spec
        self.settings = spec.evaluate.general
        self.evaluator = evaluator
        self.log = log
        self.before: GeneralResult | None = None
        self.lines: list[dict[str, Any]] = []          # every measurement, as general.jsonl holds it
        self.skipped: dict[str, str] = {}              # method label -> why it was not measured

    @classmethod
    def open(cls, spec: Any, log: Any = print) -> "GeneralRun | None":
        """The run's general-ability measurements, checked before any model is loaded; None when the spec asks for none."""
        settings = spec.evaluate.general
        if settings is None:
            return None
        for problem in general_problems(list(settings.tasks), spec.run.mode):
            raise RunError(f"{problem.message}. Fix: {problem.fix}.")
        tasks = ", ".join(settings.tasks)
        log(f"Checking the general-ability tasks ({tasks}) …")
        try:
            evaluator = GeneralEvaluator(settings, batch_size=spec.evaluate.batch_size, seed=spec.run.seed)
            evaluator.check_tasks()
        except GeneralError as exc:
            raise RunError(str(exc)) from None
        return cls(spec, evaluator, log)

    def describe(self) -> dict[str, Any]:
        """What the manifest records: the harness's version, the tasks, the limit, and the knowns file (its sha256 and source)."""
        from keditlab.data.datasets import file_provenance

        described: dict[str, Any] = {"harness": "lm-eval", "version": harness_version(), "tasks": list(self.settings.tasks),
                                     "limit": self.settings.limit, "batch_size": self.evaluator.batch_size}
        if self.settings.knowns_file:
            described["knowns_file"] = {"path": self.settings.knowns_file, **(file_provenance(self.settings.knowns_file) or {})}
        return described

    def points(self, steps: list[Step]) -> set[int]:
        """The measurements (``Measure.point``) after which the general ability is measured: the last, and every one
        of a sequential run with ``evaluate_at: {every: k}``."""
        measures = [step.point for step in steps if isinstance(step, Measure)]
        if not measures:
            return set()
        every = isinstance(self.spec.run.evaluate_at, dict) and self.spec.run.mode == "sequential"
        return set(measures) if every else {measures[-1]}

    def measures_at(self, steps: list[Step], step: Measure) -> bool:
        """Whether the general ability is measured after ``step``."""
        return step.point in self.points(steps)

    def take_up(self, folder: Path, kept: list[dict[str, Any]]) -> None:
        """A resumed run: keep the measurements after edits whose case records are kept (the before is taken again)."""
        path = folder / GENERAL_FILE
        if not path.is_file():
            return
        points = {(record.get("method"), record.get("point")) for record in kept}
        try:
            lines = run_folder.read_jsonl(path)
        except ValueError:   # a last line the stop cut short: what it held is measured again
            lines = []
        self.lines = [line for line in lines if line.get("method") is not None and (line["method"], line.get("point")) in points]

    def _write(self, folder: Path | None, line: dict[str, Any]) -> None:
        self.lines.append(line)
        if folder:
            run_folder.write_jsonl(folder / GENERAL_FILE, self._ordered())

    def _ordered(self) -> list[dict[str, Any]]:
        return sorted(self.lines, key=lambda line: line.get("method") is not None)   # the before first

    def measure_before(self, model: Any, tokenizer: Any, folder: Path | None) -> None:
        """The general ability of the unedited model: every method's ``pre``."""
        self.log(f"Measuring general ability before editing ({', '.join(self.settings.tasks)}"
                 f"{f', {self.settings.limit} examples each' if self.settings.limit else ''}) …")
        self.lines = [line for line in self.lines if line.get("method") is not None]
        self.before = self.evaluator.measure(model, tokenizer)
        self._write(folder, {"method": None, "point": None, "edits_applied": 0, **self.before.to_dict()})
        self.log("general ability before editing: " + _shown(self.before))

    def measure_after(self, label: str, step: Measure, model: Any, tokenizer: Any, folder: Path | None,
                      reads_context: bool = False) -> None:
        """The general ability of the model as it is after ``step`` of method ``label``.

        ``reads_context``: the method's edits are a context placed before prompts
        (IKE), which the harness's tasks do not read; not measured (said once).
        """
        if reads_context:
            if label not in self.skipped:
                self.skipped[label] = ("its edits are a context placed before keditlab's prompts, which the harness's "
                                       "tasks do not read; the weights are unedited, so the score would be the unedited model's")
                self.log(f"[{label}] general ability not measured: {self.skipped[label]}")
            return
        self.log(f"[{label}] measuring general ability with {step.edits_applied} edits on the model …")
        result = self.evaluator.measure(model, tokenizer)
        self._write(folder, {"method": label, "point": step.point, "edits_applied": step.edits_applied, **result.to_dict()})
        self.log(f"[{label}] general ability with {step.edits_applied} edits on the model: " + _shown(result))

    def add_to_summary(self, summary: dict[str, Any]) -> None:
        """Each method's general rows (``general:<task>`` / ``lm-eval:<metric>``), its ``general`` entry and its curve's scores."""
        before = self._scores(self.before.to_dict()["scores"]) if self.before else {}
        for label, method in summary.get("methods", {}).items():
            mine = [line for line in self.lines if line.get("method") == label]
            mine.sort(key=lambda line: line.get("point") or 0)
            last = self._scores(mine[-1]["scores"]) if mine else {}
            for row in dict.fromkeys([*before, *last]):
                metric, protocol = row
                pre, post = before.get(row), last.get(row)
                method.setdefault("metrics", {}).setdefault(metric, {})[protocol] = {
                    "pre": pre["value"] if pre else None, "post": post["value"] if post else None,
                    "n": (post or pre or {}).get("n")}
            method["general"] = {
                "tasks": list(self.settings.tasks), "limit": self.settings.limit,
                "pre": self.before.to_dict() if self.before else None,
                "points": [{key: line[key] for key in ("point", "edits_applied", "scores", "seconds")} for line in mine],
                **({"skipped": self.skipped[label]} if label in self.skipped else {}),
            }
            for line in mine:   # a sequential method's curve point measured at the same time holds the scores too
                for point in method.get("curve") or []:
                    if point.get("edits_applied") == line["edits_applied"]:
                        for (metric, protocol), score in self._scores(line["scores"]).items():
                            point.setdefault("metrics", {}).setdefault(metric, {})[protocol] = score["value"]

    @staticmethod
    def _scores(scores: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
        return {general_row(score["task"], score["metric"]): score for score in scores}


def _shown(result: GeneralResult) -> str:
    """``knowns acc 0.72 ± 0.03 (n=200), 12 s``: a measurement as the log prints it."""
    parts = []
    for score in result.scores:
        value = "—" if score.value is None else f"{score.value:.3f}"
        stderr = f" ± {score.stderr:.3f}" if score.stderr is not None else ""
        parts.append(f"{score.task} {score.metric} {value}{stderr}" + (f" (n={score.n})" if score.n else ""))
    return "; ".join(parts) + f", {result.seconds:.0f} s"
