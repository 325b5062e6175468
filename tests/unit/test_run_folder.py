"""Run folders and summaries: never overwrite, shapes other tools can rely on, tables."""

from __future__ import annotations

import json

import pytest

from keditlab.runner.folder import new_run_folder, write_json
from keditlab.runner.render import html_table, text_table
from keditlab.runner.summary import MethodTally, build_summary, metric_rows


def test_new_run_folders_never_reuse_an_existing_one(tmp_path):
    first = new_run_folder(tmp_path, "quickstart")
    (first / "summary.json").write_text("{}")
    second = new_run_folder(tmp_path, "quickstart")
    third = new_run_folder(tmp_path, "quickstart")
    assert len({first, second, third}) == 3
    assert (first / "summary.json").read_text() == "{}"
    assert not any(second.iterdir())


def test_run_folder_name_is_safe(tmp_path):
    folder = new_run_folder(tmp_path, "../../etc/my spec")
    assert folder.parent == tmp_path


def test_write_json_is_complete_and_leaves_no_temporaries(tmp_path):
    write_json(tmp_path / "a.json", {"x": (1, 2)})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def _summary():
    tally = MethodTally("rome", {"layer": 5})
    tally.add({("reliability", "teacher_forced"): 0.0, ("reliability", "probability"): 0.0, ("fluency", "generation"): 3.0},
              {("reliability", "teacher_forced"): 1.0, ("reliability", "probability"): 1.0, ("fluency", "generation"): 3.2}, 2.0, 1.0)
    tally.add({("reliability", "teacher_forced"): 0.5, ("reliability", "probability"): 0.0, ("fluency", "generation"): 3.0},
              {("reliability", "teacher_forced"): 0.5, ("reliability", "probability"): 0.0, ("fluency", "generation"): 3.0}, 4.0, 1.0)
    return build_summary("demo", "smollm2-135m", 2, {"rome": tally})


def test_summary_shape_keeps_protocols_apart():
    summary = _summary()
    metrics = summary["methods"]["rome"]["metrics"]
    assert metrics["reliability"]["teacher_forced"] == {"pre": 0.25, "post": 0.75, "n": 2}
    assert metrics["reliability"]["probability"] == {"pre": 0.0, "post": 0.5, "n": 2}
    assert summary["methods"]["rome"]["timings"]["edit_seconds_mean"] == 3.0
    assert metric_rows(summary)[0][0] == "reliability"
    assert metric_rows(summary)[-1] == ("fluency", "generation")


def test_tables_show_pre_and_post():
    summary = _summary()
    text = text_table(summary)
    assert "reliability (tf)" in text and "0.25 → 0.75" in text and "reliability (prob)" in text
    html = html_table(summary)
    assert "<table" in html and "0.25 → 0.75" in html


def test_rows_are_grouped_by_metric_each_variant_under_its_protocols_row_and_score_last():
    from keditlab.runner.table_files import table_csv

    keys = [("score", "probability"), ("reliability_contains", "generation"), ("fluency", "generation"),
            ("generalization", "teacher_forced"), ("reliability", "generation"), ("reliability_magnitude", "probability"),
            ("portability:Reasoning", "generation"), ("reliability", "teacher_forced"), ("portability", "generation"),
            ("reliability", "probability"), ("locality_accuracy", "teacher_forced"), ("locality", "teacher_forced")]
    tally = MethodTally("rome")
    tally.add({k: 0.0 for k in keys}, {k: 1.0 for k in keys}, 1.0, 1.0)
    summary = build_summary("demo", "m", 1, {"rome": tally})
    expected = [("reliability", "teacher_forced"), ("reliability", "probability"), ("reliability_magnitude", "probability"),
                ("reliability", "generation"), ("reliability_contains", "generation"), ("generalization", "teacher_forced"),
                ("locality", "teacher_forced"), ("locality_accuracy", "teacher_forced"), ("portability", "generation"),
                ("portability:Reasoning", "generation"), ("fluency", "generation"), ("score", "probability")]
    assert metric_rows(summary) == expected
    assert [line.split("  ")[0] for line in text_table(summary).splitlines()[4:16]] == [
        f"{m} ({ {'teacher_forced': 'tf', 'probability': 'prob', 'generation': 'gen'}[p]})" for m, p in expected]
    assert [tuple(line.split(",")[2:4]) for line in table_csv(summary).splitlines()[1:]] == expected
    html = html_table(summary)
    assert [html.index(f">{m} (") for m, _ in expected[::4]] == sorted(html.index(f">{m} (") for m, _ in expected[::4])


def test_run_files_are_strict_json_with_null_for_what_is_not_a_finite_number(tmp_path):
    import json

    import torch

    from keditlab.runner.folder import append_jsonl, write_json

    def strict(text):   # Python's json accepts NaN and Infinity; a strict parser does not
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))

    write_json(tmp_path / "summary.json", {"post": float("nan"), "pre": (0.5, float("inf")), "row": torch.tensor([1.0, float("-inf")])})
    assert strict((tmp_path / "summary.json").read_text()) == {"post": None, "pre": [0.5, None], "row": [1.0, None]}
    append_jsonl(tmp_path / "cases.jsonl", {"value": float("nan"), "path": tmp_path})
    assert strict((tmp_path / "cases.jsonl").read_text()) == {"value": None, "path": str(tmp_path)}
