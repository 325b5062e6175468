"""Warnings instead of silence: a ground truth the model does not say, an edit that did not take, an edit that changed nothing."""

from __future__ import annotations

import re

from keditlab.evaluate import CaseMeasurement, Generation, starts_with_answer
from keditlab.evaluate.measurement import ProbeResult
from keditlab.runner.edit_warnings import (
    GROUND_TRUTH_NOT_SAID, OUTPUTS_UNCHANGED, TARGET_NOT_SAID, ground_truth_warning, target_warning, unchanged_warning,
)
from keditlab.runner.render import html_table, text_table
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


def test_an_answer_that_starts_a_new_line_is_shown_as_such_never_as_empty():
    warning = ground_truth_warning(CASE, said("\n\nThe Eiffel Tower is in Paris, France."))
    assert "it starts a new line, then says 'The Eiffel Tower is in Paris, France.'" in warning["message"]
    assert "''" not in warning["message"]
    blank = target_warning("rome", CASE, said("\n\n"))
    assert "the model says nothing but white space ('\\n\\n'), not 'Rome'" in blank["message"]
    assert "''" not in blank["message"]
    plain = target_warning("rome", CASE, said(" Paris, France."))
    assert "after it the model says 'Paris, France.', not 'Rome'" in plain["message"]


def test_the_probability_sentence_only_when_the_spec_asks_for_that_protocol():
    asked = ground_truth_warning(CASE, said(" London"), ("teacher_forced", "probability"))
    assert "The probability test still compares the target with 'Paris'" in asked["message"]
    not_asked = ground_truth_warning(CASE, said(" London"), ("teacher_forced", "generation"))
    assert "probability" not in not_asked["message"]
    assert not_asked["message"].endswith("it says 'London'. Give the ground truth the model holds, or leave ground_truth out.")


def reads(nll: float) -> CaseMeasurement:
    """A measurement whose teacher-forced reading of the edit prompt gives the target this NLL."""
    probe = ProbeResult("reliability", "teacher_forced", CASE.prompt, CASE.target, 0.0, [1], {"nll": nll, "answer_ids": [1]})
    return CaseMeasurement("eiffel", [probe], [Generation(CASE.prompt, " Paris")])


def test_an_edit_that_changed_nothing_is_flagged_and_a_small_change_is_not():
    warning = unchanged_warning("wise", CASE, reads(7.25), reads(7.25))
    assert warning["code"] == OUTPUTS_UNCHANGED
    assert warning["message"].startswith("[wise] edit 'eiffel' left the model's outputs unchanged")
    assert "keditlab methods" in warning["message"]
    assert unchanged_warning("wise", CASE, reads(7.25), reads(7.2499)) is None   # moved, if only a little
    assert unchanged_warning("wise", CASE, said(" Paris"), said(" Paris")) is None  # reliability not measured: no claim


def _summary():
    tally = MethodTally("rome")
    scores = {("reliability", "teacher_forced"): 1.0}
    tally.add(scores, scores, 2.0, 1.0, setup_s=40.0, warnings=[TARGET_NOT_SAID])
    tally.add(scores, scores, 4.0, 1.0, setup_s=0.0, warnings=[GROUND_TRUTH_NOT_SAID, TARGET_NOT_SAID])
    tally.add(scores, scores, 3.0, 1.0, warnings=[OUTPUTS_UNCHANGED, TARGET_NOT_SAID])
    return build_summary("demo", "smollm2-135m", 3, {"rome": tally})


def test_summary_counts_warnings_and_keeps_setup_out_of_per_edit_seconds():
    rome = _summary()["methods"]["rome"]
    assert rome["warnings"] == {"outputs_unchanged": 1, "target_not_said": 3, "ground_truth_not_said": 1,
                                 "edit_failed": 0}
    assert rome["timings"]["edit_seconds_mean"] == 3.0
    assert rome["timings"]["setup_seconds_total"] == 40.0


def test_tables_show_the_count_and_the_one_off_setup():
    summary = _summary()
    text = text_table(summary)
    assert re.search(r"target not said \(edits\) +3/3", text)
    assert re.search(r"OUTPUTS UNCHANGED \(edits\) +1/3", text)
    assert "3.0 + 1.0 eval" in text
    assert "one-off set-up (s)" in text and "40.0" in text
    html = html_table(summary)
    assert "3/3" in html and "OUTPUTS UNCHANGED" in html and "one-off set-up" in html


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
