"""The schedule of a run: which edits go on the model when, what is measured, when it is undone.

A run's three modes differ only in the order of three kinds of step, so the
runner has one loop that follows a plan, and this module, pure Python (no
torch, no model), makes the plan:

``Apply(cases, batch)``
    one method call that applies the edits ``cases`` (indices into the spec's
    edits) on top of whatever is on the model now; ``batch`` numbers the calls
    from 0.
``Measure(cases, edits_applied, point)``
    measure the edits ``cases`` on the model as it is now, which holds
    ``edits_applied`` edits; ``point`` numbers the measurements from 0.
``Restore()``
    undo every edit on the model, last applied first, back to the unedited
    weights bit for bit.

For five edits with ``batch_size`` 2 (batches ``(0, 1)``, ``(2, 3)``, ``(4,)``)::

    single      Apply(0) Measure(0) Restore  Apply(1) Measure(1) Restore  ...  (batch_size is 1)
    batch       Apply(0,1) Measure(0,1) Restore  Apply(2,3) Measure(2,3) Restore  Apply(4) Measure(4) Restore
    sequential, after_each
                Apply(0,1) Measure(0,1)  Apply(2,3) Measure(2,3)  Apply(4) Measure(4)  Restore
    sequential, after_all
                Apply(0,1) Apply(2,3) Apply(4) Measure(0..4)  Restore
    sequential, {every: 2}
                Apply(0,1) Measure(0,1)  Apply(2,3) Measure(0..3)  Apply(4) Measure(0..4)  Restore

With ``{every: k}`` every measurement covers *all* edits so far (a retention
curve: are the early edits still there?), and the end of the stream is always
measured, even when the number of edits is not a multiple of ``k``.  A plan
always ends with the model restored.  docs/runs.md tells the same story for
users.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from keditlab.spec.rules import run_settings_problems


@dataclass(frozen=True)
class Apply:
    """Apply the edits ``cases`` (indices into the spec's edits) in one method call; ``batch`` numbers the calls."""

    cases: tuple[int, ...]
    batch: int


@dataclass(frozen=True)
class Measure:
    """Measure the edits ``cases`` on the model as it is, holding ``edits_applied`` edits; ``point`` numbers measurements."""

    cases: tuple[int, ...]
    edits_applied: int
    point: int


@dataclass(frozen=True)
class Restore:
    """Undo every edit on the model, last applied first."""


Step = Union[Apply, Measure, Restore]


class RunError(ValueError):
    """A spec that cannot run: it does not fit the model it names, or asks a method for a mode it cannot do.

    Raised by :func:`keditlab.runner.run.run_spec` before any work (importable
    from there); defined here, with no torch, so that the schedule's own error
    can be one.
    """


class ScheduleError(RunError):
    """The run settings do not describe a schedule (an unknown mode, ``batch_size`` 4 in mode single, ...).

    A :class:`RunError`: the runner lets it through unchanged, so a ``Spec``
    built in Python gets the validator's words once, from here.
    """


def plan(num_cases: int, mode: str = "single", batch_size: int = 1, evaluate_at: Any = None) -> list[Step]:
    """The steps of one method's run over ``num_cases`` edits, in order (see the module docstring).

    ``mode`` is ``single``, ``batch`` or ``sequential``; ``batch_size`` the edits
    per method call; ``evaluate_at`` (sequential only; ``None`` means
    ``after_each``) is ``"after_each"``, ``"after_all"`` or ``{"every": k}``.
    Settings that do not fit together raise :class:`ScheduleError` with the
    same words as the spec validator
    (:func:`keditlab.spec.rules.run_settings_problems`).
    """
    problems = run_settings_problems(mode, batch_size, evaluate_at)
    if problems:
        raise ScheduleError("; ".join(f"run.{'.'.join(map(str, p.key))}: {p.message}. Fix: {p.fix}." for p in problems))
    batches = [tuple(range(start, min(start + batch_size, num_cases))) for start in range(0, num_cases, batch_size)]
    steps: list[Step] = []
    if mode in ("single", "batch"):
        for index, cases in enumerate(batches):
            steps += [Apply(cases, index), Measure(cases, len(cases), index), Restore()]
        return steps

    evaluate_at = evaluate_at or "after_each"
    every = evaluate_at.get("every") if isinstance(evaluate_at, dict) else None
    applied = points = 0
    for index, cases in enumerate(batches):
        steps.append(Apply(cases, index))
        applied += len(cases)
        if evaluate_at == "after_each":
            steps.append(Measure(cases, applied, points))
            points += 1
        elif every is not None and (applied % every == 0 or applied == num_cases):
            steps.append(Measure(tuple(range(applied)), applied, points))
            points += 1
    if evaluate_at == "after_all" and num_cases:
        steps.append(Measure(tuple(range(num_cases)), num_cases, 0))
    if steps:
        steps.append(Restore())
    return steps


def last_measurements(steps: list[Step]) -> dict[int, int]:
    """Each case's last measurement point in ``steps``: the one the summary and the warnings use."""
    last: dict[int, int] = {}
    for step in steps:
        if isinstance(step, Measure):
            for case in step.cases:
                last[case] = step.point
    return last
