"""``run.mode``, ``run.batch_size`` and ``run.evaluate_at`` in the spec language: resolution, errors with lines, capabilities."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from keditlab.spec import RunSettings, SpecError, load_schema, parse_spec, validate_text
from keditlab.spec.schema import describe_capabilities, method_catalogue

ROOT = Path(__file__).resolve().parents[2]

EDITS = """\
edits:
  - prompt: "The Eiffel Tower is located in the city of"
    subject: Eiffel Tower
    target: Rome
"""


def spec_text(method: str, run: str) -> str:
    return f"keditlab: 1\nmethod: {method}\n{EDITS}run:\n" + textwrap.indent(textwrap.dedent(run), "  ")


def errors_of(method: str, run: str) -> list[SpecError]:
    return validate_text(spec_text(method, run), "modes.yaml")


def only_error(method: str, run: str) -> SpecError:
    errors = errors_of(method, run)
    assert len(errors) == 1, "\n".join(map(str, errors))
    return errors[0]


@pytest.mark.parametrize("run, expected", [
    ("seed: 0", RunSettings()),
    ("mode: batch\nbatch_size: 4", RunSettings(mode="batch", batch_size=4)),
    ("mode: sequential", RunSettings(mode="sequential", evaluate_at="after_each")),
    ("mode: sequential\nbatch_size: 2\nevaluate_at: after_all", RunSettings(mode="sequential", batch_size=2, evaluate_at="after_all")),
    ("mode: sequential\nbatch_size: 5\nevaluate_at: {every: 10}", RunSettings(mode="sequential", batch_size=5, evaluate_at={"every": 10})),
])
def test_run_settings_resolve_with_their_defaults(run, expected):
    assert parse_spec(spec_text("ft-m", run)).run == expected


def test_the_resolved_spec_writes_the_schedule_back(tmp_path):
    import yaml

    for run in ("seed: 0", "mode: sequential\nbatch_size: 5\nevaluate_at: {every: 10}", "mode: batch\nbatch_size: 3"):
        spec = parse_spec(spec_text("ft-m", run), "x.yaml")
        data = spec.to_spec_data()["run"]
        assert ("evaluate_at" in data) == (spec.run.mode == "sequential")
        path = tmp_path / "resolved.yaml"
        path.write_text(yaml.safe_dump(spec.to_spec_data(), sort_keys=False), encoding="utf-8")
        assert parse_spec(path.read_text(), "x.yaml") == spec


# (id, method, run section, path, line, column, fragments); the run section starts on line 7
CASES = [
    ("batch-with-rome", "rome", "mode: batch\nbatch_size: 4",
     "method", 2, 9, ["method 'rome' cannot apply several edits in one call, which run.mode batch (line 8) asks for",
                      "Fix: use run.mode single (or sequential, to keep each edit on the model) with batch_size 1, "
                      "or a batch method such as adalora, alphaedit, emmet, ft-l, ft-m, grace, ike, kn, locft-bf, lora, memit, mend, serac, t-patcher, ultraedit, wise."]),
    ("batch-with-rome-in-a-list", "[ft-m, {name: rome, label: r5, layer: 3}]", "mode: batch",
     "method[1].name", 2, 23, ["method 'r5' (rome) cannot apply several edits", "line 8"]),
    ("sequential-batches-with-rome", "rome", "mode: sequential\nbatch_size: 3",
     "method", 2, 9, ["which run.batch_size 3 (line 9) asks for", "Fix: use batch_size 1 (the edits are then applied one at a time"]),
    ("batch-size-in-single-mode", "ft-m", "batch_size: 4",
     "run.batch_size", 8, 15, ["batch_size 4 needs run.mode batch or sequential: run.mode is single (the default)",
                               "Fix: add `mode: batch` (each batch of 4 edits", "or use batch_size 1"]),
    ("evaluate-at-in-batch-mode", "ft-m", "mode: batch\nbatch_size: 2\nevaluate_at: after_all",
     "run.evaluate_at", 10, 16, ["evaluate_at is for run.mode sequential only; in mode batch each batch is measured",
                                 "Fix: remove evaluate_at, or use `mode: sequential`"]),
    ("evaluate-at-in-single-mode", "ft-m", "evaluate_at: after_each",
     "run.evaluate_at", 8, 16, ["in mode single each edit is measured right after it is applied"]),
    ("every-not-a-multiple", "ft-m", "mode: sequential\nbatch_size: 4\nevaluate_at: {every: 10}",
     "run.evaluate_at.every", 10, 24, ["evaluate_at every 10 is not a multiple of batch_size 4",
                                       "Fix: use a multiple of 4 for every (e.g. 8 or 12), or a batch_size that divides 10"]),
    ("unknown-mode", "ft-m", "mode: batched",
     "run.mode", 8, 9, ["unknown run mode 'batched' (did you mean 'batch'?)", "Known run modes: single, batch, sequential"]),
    ("batch-size-zero", "ft-m", "mode: batch\nbatch_size: 0",
     "run.batch_size", 9, 15, ["batch_size must be at least 1, got 0"]),
    ("unknown-evaluation-point", "ft-m", "mode: sequential\nevaluate_at: after-all",
     "run.evaluate_at", 9, 16, ["unknown evaluation point 'after-all' (did you mean 'after_all'?)"]),
    ("bare-number-for-every", "ft-m", "mode: sequential\nevaluate_at: 5",
     "run.evaluate_at", 9, 16, ["expected text or a mapping", "Fix: write evaluate_at: {every: 5}"]),
    ("every-zero", "ft-m", "mode: sequential\nevaluate_at: {every: 0}",
     "run.evaluate_at.every", 9, 24, ["every must be at least 1, got 0. Fix: give 1 or more."]),
]


@pytest.mark.parametrize(("method", "run", "path", "line", "column", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_impossible_schedules_are_reported_at_their_line(method, run, path, line, column, fragments):
    error = only_error(method, run)
    assert (error.path, error.line, error.column) == (path, line, column), str(error)
    for fragment in fragments:
        assert fragment in str(error), str(error)
    assert "Fix:" in str(error)


@pytest.mark.parametrize("method, run", [
    ("rome", "mode: sequential"),
    ("rome", "mode: sequential\nevaluate_at: {every: 3}"),
    ("[ft-l, ft-m]", "mode: batch\nbatch_size: 8"),
    ("ft-m", "mode: sequential\nbatch_size: 4\nevaluate_at: {every: 8}"),
    ("ft-m", "mode: batch"),  # a batch of one: the single schedule, allowed
])
def test_possible_schedules_are_valid(method, run):
    assert errors_of(method, run) == []


def test_capabilities_are_in_the_schema_and_the_catalogue():
    from keditlab.methods import get_method, method_names

    defs = load_schema()["$defs"]
    for name in method_names():
        assert defs[f"method-{name}"]["x-keditlab-capabilities"] == get_method(name).capabilities.to_dict()
    catalogue = {m.name: m for m in method_catalogue()}
    assert catalogue["rome"].capabilities["batch"] is False and catalogue["ft-m"].capabilities["batch"] is True


def test_capabilities_read_as_one_line():
    assert describe_capabilities({"batch": True, "sequential": True, "needs_statistics": False, "changes_weights": True,
                                  "restorable": True}) == "can: batch, sequential · no statistics · changes weights · restorable"
    assert describe_capabilities({"batch": False, "sequential": True, "needs_statistics": True, "changes_weights": True,
                                  "restorable": True}) == "can: sequential (not batch) · needs statistics · changes weights · restorable"
    assert describe_capabilities({"batch": False, "sequential": False, "changes_weights": False, "restorable": False}) == (
        "can: single edits only · no statistics · leaves weights unchanged · not restorable")


def test_validate_command_names_the_line_of_a_batch_with_rome(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(spec_text("rome", "mode: batch\nbatch_size: 4"), encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "keditlab", "validate", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"{path}:2:9: method: method 'rome' cannot apply several edits in one call" in result.stderr
    assert "Traceback" not in result.stderr


def test_methods_command_prints_what_each_method_can_do():
    result = subprocess.run([sys.executable, "-m", "keditlab", "methods"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = result.stdout.splitlines()
    rome = lines.index("rome: Rank-One Model Editing (Meng et al., 2022)")
    assert lines[rome + 1] == "    can: sequential (not batch) · needs statistics · changes weights · restorable"
