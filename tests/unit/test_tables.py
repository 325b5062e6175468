"""The KnowEdit-style table: method x dataset x metric, protocols as columns; CSV, Markdown, `keditlab show`."""

from __future__ import annotations

import csv
import io
import json

from keditlab.cli import main
from keditlab.runner.summary import MethodTally, build_summary
from keditlab.runner.table_files import table_csv, table_markdown, table_rows


def summary():
    rome, ftm = MethodTally("rome"), MethodTally("ft-m")
    for tally, post in ((rome, 1.0), (ftm, 0.5)):
        pre_scores = {("reliability", "teacher_forced"): 0.0, ("reliability", "generation"): 0.0,
                      ("reliability", "probability"): 0.0, ("generalization", "probability"): 0.0,
                      ("locality", "probability"): 1.0}
        post_scores = {("reliability", "teacher_forced"): post, ("reliability", "generation"): post / 2,
                       ("reliability", "probability"): 1.0, ("generalization", "probability"): post,
                       ("locality", "probability"): 1.0}
        tally.add(pre_scores, post_scores, 1.0, 1.0)
    return build_summary("bench", "smollm2-135m", 1, {"rome": rome, "ft-m": ftm}, "record 0 of cf.json", "counterfact")


def test_csv_has_one_row_per_method_dataset_metric_protocol():
    rows = list(csv.DictReader(io.StringIO(table_csv(summary()))))
    assert len(rows) == len(table_rows(summary())) == 2 * 6  # five measured keys and Score S, per method
    rel = {(r["method"], r["protocol"]): float(r["post"]) for r in rows if r["metric"] == "reliability"}
    assert rel == {("rome", "teacher_forced"): 1.0, ("rome", "generation"): 0.5, ("rome", "probability"): 1.0,
                   ("ft-m", "teacher_forced"): 0.5, ("ft-m", "generation"): 0.25, ("ft-m", "probability"): 1.0}
    score = next(r for r in rows if r["method"] == "ft-m" and r["metric"] == "score")
    assert score["protocol"] == "probability" and float(score["post"]) == round(3 / (1 + 2 + 1), 6)
    assert {r["dataset"] for r in rows} == {"counterfact"}


def test_markdown_puts_protocols_in_separate_columns():
    text = table_markdown(summary())
    assert "| method | dataset | metric | teacher_forced | probability | generation |" in text
    assert "| rome | counterfact | reliability (ES) | 0.000 → 1.000 | 0.000 → 1.000 | 0.000 → 0.500 |" in text
    assert "| ft-m | counterfact | score (S) |  | 0.000 → 0.750 |  |" in text


def test_show_prints_the_table(tmp_path, capsys):
    data = summary()
    (tmp_path / "summary.json").write_text(json.dumps(data))
    (tmp_path / "cases.jsonl").write_text("")
    (tmp_path / "manifest.json").write_text(json.dumps({"spec": {}}))
    assert main(["show", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| rome | counterfact | reliability (ES) |" in out and "reliability (gen)" in out
