"""The schedule: which edits go on the model when, what is measured on it, when it is undone."""

from __future__ import annotations

import subprocess
import sys

from pathlib import Path

import pytest

from keditlab.runner.schedule import Apply, Measure, Restore, ScheduleError, last_measurements, plan

ROOT = Path(__file__).resolve().parents[2]


def test_single_applies_measures_and_restores_each_edit_alone():
    assert plan(3) == [
        Apply((0,), 0), Measure((0,), 1, 0), Restore(),
        Apply((1,), 1), Measure((1,), 1, 1), Restore(),
        Apply((2,), 2), Measure((2,), 1, 2), Restore(),
    ]


def test_batch_restores_after_every_batch_and_keeps_the_last_partial_one():
    assert plan(5, "batch", 2) == [
        Apply((0, 1), 0), Measure((0, 1), 2, 0), Restore(),
        Apply((2, 3), 1), Measure((2, 3), 2, 1), Restore(),
        Apply((4,), 2), Measure((4,), 1, 2), Restore(),
    ]


def test_batch_of_one_is_the_single_schedule():
    assert plan(4, "batch", 1) == plan(4, "single", 1)


def test_sequential_after_each_measures_each_batch_on_top_of_the_earlier_ones():
    assert plan(5, "sequential", 2) == plan(5, "sequential", 2, "after_each") == [
        Apply((0, 1), 0), Measure((0, 1), 2, 0),
        Apply((2, 3), 1), Measure((2, 3), 4, 1),
        Apply((4,), 2), Measure((4,), 5, 2),
        Restore(),
    ]


def test_sequential_after_all_measures_every_edit_once_at_the_end():
    assert plan(5, "sequential", 2, "after_all") == [
        Apply((0, 1), 0), Apply((2, 3), 1), Apply((4,), 2),
        Measure((0, 1, 2, 3, 4), 5, 0),
        Restore(),
    ]


def test_sequential_every_k_measures_all_edits_so_far_and_always_the_end():
    assert plan(5, "sequential", 2, {"every": 2}) == [
        Apply((0, 1), 0), Measure((0, 1), 2, 0),
        Apply((2, 3), 1), Measure((0, 1, 2, 3), 4, 1),
        Apply((4,), 2), Measure((0, 1, 2, 3, 4), 5, 2),
        Restore(),
    ]
    assert plan(6, "sequential", 2, {"every": 4}) == [
        Apply((0, 1), 0), Apply((2, 3), 1), Measure((0, 1, 2, 3), 4, 0),
        Apply((4, 5), 2), Measure(tuple(range(6)), 6, 1),
        Restore(),
    ]
    # k larger than the stream: the end only; k dividing it: no repeated end point
    assert [s.edits_applied for s in plan(3, "sequential", 1, {"every": 10}) if isinstance(s, Measure)] == [3]
    assert [s.edits_applied for s in plan(6, "sequential", 3, {"every": 3}) if isinstance(s, Measure)] == [3, 6]


@pytest.mark.parametrize("mode, batch_size, evaluate_at", [
    ("single", 1, None), ("batch", 3, None), ("sequential", 2, "after_each"),
    ("sequential", 2, "after_all"), ("sequential", 2, {"every": 4}),
])
def test_every_plan_applies_each_edit_once_measures_each_and_ends_restored(mode, batch_size, evaluate_at):
    steps = plan(7, mode, batch_size, evaluate_at)
    applied = [case for step in steps if isinstance(step, Apply) for case in step.cases]
    assert applied == list(range(7))
    assert [s.batch for s in steps if isinstance(s, Apply)] == list(range(len([s for s in steps if isinstance(s, Apply)])))
    assert [s.point for s in steps if isinstance(s, Measure)] == list(range(len([s for s in steps if isinstance(s, Measure)])))
    assert sorted(last_measurements(steps)) == list(range(7))
    assert isinstance(steps[-1], Restore)
    on_model = 0
    for step in steps:  # edits_applied is what is on the model, and only applied edits are measured
        if isinstance(step, Apply):
            on_model += len(step.cases)
        elif isinstance(step, Measure):
            assert step.edits_applied == on_model and len(step.cases) <= on_model
        else:
            on_model = 0


def test_last_measurements_are_the_end_of_the_stream():
    steps = plan(5, "sequential", 2, {"every": 2})
    assert last_measurements(steps) == {0: 2, 1: 2, 2: 2, 3: 2, 4: 2}
    assert last_measurements(plan(3)) == {0: 0, 1: 1, 2: 2}


@pytest.mark.parametrize("args, fragments", [
    ((4, "single", 2), ["run.batch_size", "needs run.mode batch or sequential", "Fix: add `mode: batch`"]),
    ((4, "batch", 2, "after_all"), ["run.evaluate_at", "sequential only", "Fix: remove evaluate_at"]),
    ((4, "sequential", 2, {"every": 3}), ["run.evaluate_at.every", "not a multiple of batch_size 2", "(e.g. 2 or 4)"]),
    ((4, "batched", 2), ["unknown run mode 'batched' (did you mean 'batch'?)"]),
    ((4, "batch", 0), ["batch_size must be a whole number of at least 1, got 0"]),
    ((4, "sequential", 1, "after-all"), ["evaluate_at must be after_each or after_all or {every: k}"]),
])
def test_settings_that_are_no_schedule_are_named_with_a_fix(args, fragments):
    with pytest.raises(ScheduleError) as info:
        plan(*args)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_the_schedule_imports_no_torch():
    """The module itself is pure Python (its package's ``__init__`` brings in the runner, and torch, on purpose)."""
    code = ("import importlib.util, sys\n"
            "spec = importlib.util.spec_from_file_location('schedule', 'keditlab/runner/schedule.py')\n"
            "module = sys.modules['schedule'] = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(module)\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
