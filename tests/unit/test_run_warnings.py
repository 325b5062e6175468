"""Warnings instead of silence: a ground truth the model does not say, an edit that did not take."""

from __future__ import annotations

from keditlab.evaluate import CaseMeasurement, Generation, starts_with_answer
from keditlab.runner.checks import GROUND_TRUTH_NOT_SAID, TARGET_NOT_SAID, ground_truth_warning, target_warning
from keditlab.runner.report import html_table, text_table
from keditlab.runner.summary import MethodTally, build_summary
from keditlab.spec.types import EditCase

CASE = EditCase(prompt="The Eiffel Tower is located in the city of", subject="Eiffel Tower", target="Rome",
                ground_truth="Paris", case_id="eiffel")


def said(text: str) -> CaseMeasurement:
    return CaseMeasurement("eiffel", [], [Generation(CASE.prompt, text)])


def test_starts_with_answer_ignores_case_and_spacing_but_not_order():
    assert starts_with_answer(" Rome, the capital of Italy", "Rome")
    assert starts_with_answer("  rome\n", "Rome")
    assert starts_with_answer(" United  Arab Emirates.", "United Arab Emirates")
    assert not starts_with_answer(" the city of Rome", "Rome")
    assert not starts_with_answer(" Romania", "Rome")
    assert not starts_with_answer("", "Rome")


def test_ground_truth_the_model_says_raises_nothing():
    assert ground_truth_warning(CASE, said(" Paris, France.")) is None
    assert ground_truth_warning(EditCase("p of", "p", "x"), said(" anything")) is None  # no ground truth given


def test_ground_truth_the_model_does_not_say_is_named_with_what_it_says():
    warning = ground_truth_warning(CASE, said(" the capital of France, Paris."))
    assert warning["code"] == GROUND_TRUTH_NOT_SAID
    assert warning["said"] == "the capital of France, Paris."
    message = warning["message"]
    assert "'eiffel'" in message and "'Paris'" in message and "the capital of France" in message
    assert "leave ground_truth out" in message


def test_edit_that_did_not_take_is_flagged():
    assert target_warning("rome", CASE, said(" Rome, Italy")) is None
    warning = target_warning("rome", CASE, said(" Paris, France, and it is the most visited monument in the whole world"))
    assert warning["code"] == TARGET_NOT_SAID
    assert warning["message"].startswith("[rome] edit 'eiffel' did not take")
    assert warning["said"].endswith("…") and len(warning["said"]) <= 60


def _summary():
    tally = MethodTally("rome")
    scores = {("reliability", "teacher_forced"): 1.0}
    tally.add(scores, scores, 2.0, 1.0, setup_s=40.0, warnings=[TARGET_NOT_SAID])
    tally.add(scores, scores, 4.0, 1.0, setup_s=0.0, warnings=[GROUND_TRUTH_NOT_SAID, TARGET_NOT_SAID])
    tally.add(scores, scores, 3.0, 1.0)
    return build_summary("demo", "smollm2-135m", 3, {"rome": tally})


def test_summary_counts_warnings_and_keeps_setup_out_of_per_edit_seconds():
    rome = _summary()["methods"]["rome"]
    assert rome["warnings"] == {"target_not_said": 2, "ground_truth_not_said": 1}
    assert rome["timings"]["edit_seconds_mean"] == 3.0
    assert rome["timings"]["setup_seconds_total"] == 40.0


def test_tables_show_the_count_and_the_one_off_setup():
    summary = _summary()
    text = text_table(summary)
    assert "target not said (edits)  2/3" in text
    assert "3.0 + 1.0 eval" in text
    assert "one-off set-up (s)" in text and "40.0" in text
    html = html_table(summary)
    assert "2/3" in html and "one-off set-up" in html


def test_tables_of_runs_without_setup_or_warnings_stay_short():
    tally = MethodTally("ft-m")
    tally.add({}, {}, 1.0, 1.0)
    text = text_table(build_summary("demo", "m", 1, {"ft-m": tally}))
    assert "0/1" in text and "one-off" not in text.split("(tf =")[0]


def test_runs_saved_before_the_checks_show_a_dash_not_a_false_zero():
    tally = MethodTally("rome")
    tally.add({}, {}, 1.0, 1.0)
    summary = build_summary("old", "m", 1, {"rome": tally})
    del summary["methods"]["rome"]["warnings"]
    assert "target not said (edits)  —" in text_table(summary)
