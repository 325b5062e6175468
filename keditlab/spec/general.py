"""The rules of ``evaluate.general`` that a JSON Schema cannot say.

General ability (docs/protocols.md) runs lm-evaluation-harness tasks on the
whole model, before the edits and after them.  Three things about the section
depend on the rest of the spec, or on names the schema cannot list:

* **the run mode.**  ``single`` undoes each edit right after measuring it, so
  the model never holds more than one edit; a general score there would be one
  harness run per edit (each as long as the run's whole evaluation) and would
  measure one edit at a time.  So ``general`` asks for ``mode: batch`` (the
  score is taken with the last batch on the model) or ``mode: sequential``
  (after all the edits, and at every ``evaluate_at: {every: k}`` point).
  ``batch_size: 1`` in mode ``batch`` is mode ``single``'s schedule with one
  general score, after the last edit, for whoever wants exactly that;
* **the task names.**  keditlab's offline tasks (:data:`GENERAL_TASKS`) are
  known here; the harness's own tasks (thousands, and they change with its
  version) are not, and looking them up takes the harness seconds, so a name is
  refused here only when it looks like a slip for an offline task
  (``known``, ``Knowns``).  Any other name goes to the harness, and the runner
  asks it before the model is loaded (:mod:`keditlab.evaluate.general`);
* **the knowns file** is read by the ``knowns`` task only, and must exist.

:func:`general_problems` is written on plain values, without positions, so
the runner asks the same question of a ``Spec`` built in Python (a
``RunError`` with the same words); :func:`check_general` places each problem
on its spec line.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from keditlab.spec.edits_file import file_problem
from keditlab.spec.report import Reporter
from keditlab.spec.types import GENERAL_TASKS, GeneralSpec, RunSettings
from keditlab.vocabulary import closest

#: What a fix says about the harness's own tasks: how to name one, and that its first run needs the network.
HARNESS_TASKS = ("or the name of an lm-evaluation-harness task such as hellaswag or arc_easy (`lm-eval ls tasks` "
                 "lists them): the harness downloads a task's data from the Hugging Face Hub the first time it runs, "
                 "so that run needs the network, and later runs read its cache")


class GeneralProblem(NamedTuple):
    """One problem with ``evaluate.general``: the key under it that is wrong (``()``: the section), what, and the fix."""

    key: tuple[str | int, ...]
    message: str
    fix: str


def mode_problem(mode: Any, *, mode_given: bool = True, where: str = "") -> GeneralProblem | None:
    """Why ``evaluate.general`` cannot be measured in run ``mode``; None when it can.

    ``where`` is written after the mode's name (`` (line 9)``); ``mode_given``
    False says the mode is the default.
    """
    if mode != "single":
        return None
    shown = f"run.mode{where} is single" + ("" if mode_given else " (the default)")
    return GeneralProblem(
        (),
        f"evaluate.general measures the whole model with the edits on it, and {shown}, which undoes each edit right "
        "after measuring it: a general score per edit would be one harness run per edit, each on a model holding one edit",
        "add `mode: batch` with a `batch_size` to `run:` (the general ability is measured with the last batch on the "
        "model; batch_size 1 keeps single's schedule) or `mode: sequential` (measured after all the edits, and at every "
        "point of `evaluate_at: {every: k}`)",
    )


def task_problem(index: int, task: Any) -> GeneralProblem | None:
    """Why the ``index``-th task name cannot be run: it looks like a slip for an offline task; None otherwise."""
    if not isinstance(task, str) or task in GENERAL_TASKS:
        return None
    meant = closest(task, GENERAL_TASKS)
    if meant is None:
        return None   # a harness task: the runner asks the harness before loading the model
    return GeneralProblem(
        ("tasks", index),
        f"unknown general-ability task {task!r} (did you mean '{meant}'?); keditlab's offline tasks are: "
        f"{', '.join(GENERAL_TASKS)}",
        f"write `{meant}` (keditlab's offline task: ROME's known facts, read from a local file, no network), "
        + HARNESS_TASKS,
    )


def general_problems(tasks: Any, mode: Any, *, mode_given: bool = True, where: str = "") -> list[GeneralProblem]:
    """What is wrong with an ``evaluate.general`` asking for ``tasks`` in run ``mode`` (empty: nothing)."""
    problems = [problem for problem in [mode_problem(mode, mode_given=mode_given, where=where)] if problem]
    if isinstance(tasks, (list, tuple)):
        problems += [problem for i, task in enumerate(tasks) if (problem := task_problem(i, task))]
    return problems


def check_general(data: dict[str, Any], report: Reporter) -> None:
    """``evaluate.general`` fits the run mode, names tasks that can be run, and its knowns file exists."""
    evaluate = data.get("evaluate")
    general = evaluate.get("general") if isinstance(evaluate, dict) else None
    if not isinstance(general, dict):
        return   # absent, or a value of the wrong kind (the schema's to report)
    run = data.get("run") if isinstance(data.get("run"), dict) else {}
    mode = run.get("mode", RunSettings().mode)
    position = report.source_map.value(("run", "mode")) if "mode" in run else None
    tasks = general.get("tasks", list(GeneralSpec().tasks))
    for problem in general_problems(tasks, mode, mode_given="mode" in run,
                                    where=f" (line {position.line})" if position else ""):
        report.add(("evaluate", "general", *problem.key), problem.message, problem.fix, **({"at": "key"} if not problem.key else {}))
    knowns_file = general.get("knowns_file")
    if isinstance(knowns_file, str) and knowns_file.strip():
        if isinstance(tasks, list) and "knowns" not in tasks:
            report.add(("evaluate", "general", "knowns_file"), "knowns_file is read by the knowns task, which "
                       "evaluate.general.tasks does not name", "add `knowns` to `tasks`, or remove `knowns_file`", at="key")
        else:
            problem = file_problem(knowns_file, report.source)
            if problem:
                report.add(("evaluate", "general", "knowns_file"), *problem)
