"""The three protocols against hand-computed values: fixed token probabilities and fixed generations."""

from __future__ import annotations

import math

import pytest

from keditlab.evaluate import answers, measurement
from keditlab.evaluate import (CaseMeasurement, ProbeResult, case_scores, contains_answer, cut_answer, exact_match,
                               harmonic_mean, measure, normalize, probability_test)
from keditlab.evaluate.teacher_forced import TFResult
from keditlab.runner.summary import MethodTally
from keditlab.spec.types import EditCase, EvalSpec, Probe
from tests.unit.test_evaluate_unit import WordTokenizer
from tests.conftest import make_tiny_model


# --- probability: ES/PS/NS and their magnitudes, Score S ------------------------------------------

def test_probability_magnitude_is_the_difference_of_per_token_probabilities():
    new = TFResult(1.0, [5], [5], nll=math.log(2))        # per-token probability 0.5
    true = TFResult(0.0, [6, 7], [6, 7], nll=math.log(5))  # per-token probability 0.2
    value, extra = probability_test(new, true)
    assert value == 1.0 and extra["magnitude"] == pytest.approx(0.3)
    value, extra = probability_test(true, new)
    assert value == 0.0 and extra["magnitude"] == pytest.approx(-0.3)


def test_score_s_is_the_harmonic_mean_of_es_ps_ns():
    assert harmonic_mean([1.0, 0.5, 0.25]) == pytest.approx(3 / (1 + 2 + 4))
    assert harmonic_mean([1.0, 0.0, 1.0]) == 0.0
    tally = MethodTally("rome")
    for es, ps, ns in [(1.0, 1.0, 0.5), (1.0, 0.0, 1.0)]:
        scores = {("reliability", "probability"): es, ("generalization", "probability"): ps,
                  ("locality", "probability"): ns}
        tally.add(scores, scores, 1.0, 1.0)
    metrics = tally.to_dict()["metrics"]
    assert metrics["score"]["probability"]["post"] == pytest.approx(3 / (1 / 1.0 + 1 / 0.5 + 1 / 0.75), abs=1e-6)


def probe(metric, protocol, value, group="", **extra):
    return ProbeResult(metric, protocol, "p", "a", value, None, extra, group)


def test_case_scores_name_every_value_with_its_protocol():
    probes = [
        probe("reliability", "probability", 1.0, magnitude=0.4),
        probe("generalization", "probability", 0.0, magnitude=-0.1),
        probe("generalization", "probability", 1.0, magnitude=0.3),
        probe("locality", "probability", 1.0, magnitude=0.2),
        probe("locality", "teacher_forced", 0.5, accuracy=0.0),
        probe("reliability", "generation", 0.0, contains=1.0),
        probe("portability", "generation", 1.0, "Reasoning", contains=1.0),
        probe("portability", "generation", 0.0, "Subject_Aliasing", contains=0.0),
        probe("locality", "generation", 1.0, accuracy=1.0, contains=1.0),
    ]
    scores = case_scores(probes)
    assert scores[("reliability", "probability")] == 1.0 and scores[("reliability_magnitude", "probability")] == 0.4
    assert scores[("generalization", "probability")] == 0.5
    assert scores[("generalization_magnitude", "probability")] == pytest.approx(0.1)
    assert scores[("locality_magnitude", "probability")] == 0.2
    assert scores[("locality", "teacher_forced")] == 0.5 and scores[("locality_accuracy", "teacher_forced")] == 0.0
    assert scores[("reliability", "generation")] == 0.0 and scores[("reliability_contains", "generation")] == 1.0
    assert scores[("portability", "generation")] == 0.5
    assert scores[("portability:Reasoning", "generation")] == 1.0
    assert scores[("portability:Subject_Aliasing", "generation")] == 0.0
    assert scores[("locality_accuracy", "generation")] == 1.0
    assert all(protocol in ("teacher_forced", "probability", "generation") for _, protocol in scores)


def test_multihop_counts_a_case_when_any_question_is_answered_and_ripple_only_executed_tests():
    scores = case_scores([
        probe("multihop", "generation", 0.0, "new", contains=0.0),
        probe("multihop", "generation", 1.0, "new", contains=1.0),
        probe("multihop", "generation", 0.0, "new", contains=0.0),
        probe("multihop", "generation", 0.0, "original", contains=1.0),
        probe("ripple", "generation", 1.0, "Compositionality_I", contains=1.0),
        probe("ripple", "generation", None, "Compositionality_I", executed=False),
        probe("ripple", "generation", 0.0, "Compositionality_I", contains=1.0),
    ])
    assert scores[("multihop", "generation")] == 1.0
    assert scores[("multihop_original", "generation")] == 0.0
    assert scores[("multihop_original_contains", "generation")] == 1.0
    assert scores[("ripple:Compositionality_I", "generation")] == 0.5
    assert scores[("ripple_contains:Compositionality_I", "generation")] == 1.0
    assert scores[("ripple_executed:Compositionality_I", "generation")] == pytest.approx(2 / 3)


def test_ripple_counts_each_test_once_any_query_for_or_all_for_and():
    """A RippleEdits test of several queries is one test: OR passes on any query, AND needs all (Cohen et al., 2024)."""
    def query(value, test, combine, contains=None, executed=True):
        return probe("ripple", "generation", value if executed else None, "Subject_Aliasing", test=test,
                     test_condition=combine, contains=value if contains is None else contains, executed=executed)

    scores = case_scores([
        query(0.0, "t0", "OR"), query(1.0, "t0", "OR"),                          # passes: one alias answered
        query(1.0, "t1", "AND", contains=1.0), query(0.0, "t1", "AND", contains=1.0),  # fails exact, passes contained
        query(0.0, "t2", "OR", executed=False), query(0.0, "t2", "OR", executed=False),  # not executed
    ])
    assert scores[("ripple:Subject_Aliasing", "generation")] == 0.5           # (1 + 0) / 2 executed tests
    assert scores[("ripple_contains:Subject_Aliasing", "generation")] == 1.0
    assert scores[("ripple_executed:Subject_Aliasing", "generation")] == pytest.approx(2 / 3)
    assert scores[("ripple", "generation")] == 0.5


# --- generation: answers cut, normalised, matched -------------------------------------------------

@pytest.mark.parametrize("text,answer", [(" Paris. It is a city", "Paris."), (" Paris, France.\nThe", "Paris, France."),
                                         ("\n\nRome\nand", "Rome"), (" the capital", "the capital"),
                                         (" 3.5 million people!", "3.5 million people!")])
def test_answer_is_cut_at_the_first_sentence_end_or_newline(text, answer):
    assert cut_answer(text) == answer


def test_exact_and_contained_against_the_answer_and_aliases():
    assert normalize("The  Beatles!") == "beatles"
    assert exact_match("The Beatles.", ["Beatles"]) and not exact_match("Paris, France", ["Paris"])
    assert contains_answer("Paris, France", ["Paris"]) and not contains_answer("Parisian food", ["Paris"])
    assert exact_match("USA", ["United States of America", "USA"])
    assert not exact_match("", ["", "x"]) and not contains_answer("anything", [""])


# --- measure() with fixed generations --------------------------------------------------------------

class FixedAnswers:
    """Stands in for generate_answers: a fixed continuation per prompt (``default`` otherwise), recording prompts."""

    def __init__(self, table, default=" nothing."):
        self.table, self.default, self.seen = table, default, []

    def __call__(self, model, tokenizer, prompts, max_new_tokens=50, batch_size=16, done=None):
        self.seen.append((list(prompts), max_new_tokens))
        return [self.table.get(p, self.default) for p in prompts]


def mquake_like() -> EditCase:
    return EditCase("hey jude was performed by", "hey jude", "madonna", "the beatles",
                    rephrase=("who performed hey jude ?",), aliases=("madonna ciccone",),
                    locality=(Probe("locality", "the capital of japan is", "tokyo"),),
                    questions=(Probe("multihop", "q1 ?", "arabic", ("ar",), "new"),
                               Probe("multihop", "q2 ?", "arabic", ("ar",), "new"),
                               Probe("ripple", "capital of syria is", "damascus", (), "Compositionality_I",
                                     (Probe("ripple", "condition ?", "yes"),))),
                    case_id="m")


def test_measure_scores_fixed_generations(monkeypatch):
    model, tok = make_tiny_model("llama"), WordTokenizer()
    before = FixedAnswers({"hey jude was performed by": " the beatles. yes", "who performed hey jude ?": " madonna",
                           "the capital of japan is": " tokyo.", "q1 ?": " english.", "q2 ?": " english.",
                           "condition ?": " yes.", "capital of syria is": " damascus."})
    monkeypatch.setattr(measurement, "generate_answers", before)
    settings = EvalSpec(metrics=("reliability", "generalization", "locality"), protocols=("generation",), answer_tokens=7)
    pre = measure(model, tok, [mquake_like()], settings)[0]
    assert before.seen[0][1] == 7 and "condition ?" in before.seen[0][0]
    s = pre.scores()
    assert s[("reliability", "generation")] == 0.0 and s[("generalization", "generation")] == 1.0
    assert s[("locality", "generation")] == 1.0 and s[("locality_accuracy", "generation")] == 1.0
    assert s[("multihop", "generation")] == 0.0
    assert s[("ripple:Compositionality_I", "generation")] == 1.0 and s[("ripple_executed:Compositionality_I", "generation")] == 1.0
    assert all(p.protocol == "generation" for p in pre.probes)

    after = FixedAnswers({"hey jude was performed by": " Madonna Ciccone, of course. Then", "who performed hey jude ?": " the beatles",
                          "the capital of japan is": " kyoto.", "q1 ?": " english.", "q2 ?": " Arabic.",
                          "capital of syria is": " damascus, i think."})
    monkeypatch.setattr(measurement, "generate_answers", after)
    post = measure(model, tok, [mquake_like()], settings, reference=[pre])[0]
    assert "condition ?" not in after.seen[0][0]  # conditions are asked of the unedited model only
    s = post.scores()
    assert s[("reliability", "generation")] == 0.0 and s[("reliability_contains", "generation")] == 1.0  # alias, within a longer answer
    assert s[("generalization", "generation")] == 0.0
    assert s[("locality", "generation")] == 0.0 and s[("locality_accuracy", "generation")] == 0.0  # answer moved
    assert s[("multihop", "generation")] == 1.0  # q2 answered: the case counts
    assert s[("ripple:Compositionality_I", "generation")] == 0.0 and s[("ripple_contains:Compositionality_I", "generation")] == 1.0


def test_a_failed_condition_leaves_the_test_unexecuted(monkeypatch):
    model, tok = make_tiny_model("llama"), WordTokenizer()
    monkeypatch.setattr(measurement, "generate_answers", FixedAnswers({"condition ?": " no.", "capital of syria is": " damascus."}))
    settings = EvalSpec(metrics=("reliability",), protocols=("generation",))
    pre = measure(model, tok, [mquake_like()], settings)[0]
    ripple = next(p for p in pre.probes if p.metric == "ripple")
    assert ripple.value is None and ripple.extra["conditions_passed"] == [False]
    post = measure(model, tok, [mquake_like()], settings, reference=[CaseMeasurement.from_dict(pre.to_dict())])[0]
    assert post.scores()[("ripple_executed:Compositionality_I", "generation")] == 0.0
    assert ("ripple:Compositionality_I", "generation") not in post.scores()


def test_qa_context_frames_the_question(monkeypatch):
    model, tok = make_tiny_model("llama"), WordTokenizer()
    fixed = FixedAnswers({})
    monkeypatch.setattr(measurement, "generate_answers", fixed)
    measure(model, tok, [mquake_like()], EvalSpec(metrics=("reliability",), protocols=("generation",), context="qa"))
    assert "Question: hey jude was performed by\nAnswer:" in fixed.seen[0][0]


def test_protocols_pick_what_is_measured():
    model, tok = make_tiny_model("llama"), WordTokenizer()
    case = mquake_like()
    out = measure(model, tok, [case], EvalSpec(metrics=("reliability", "locality"), protocols=("probability",)))[0]
    assert {p.protocol for p in out.probes} == {"probability"}
    assert {p.metric for p in out.probes} == {"reliability", "locality"}
    ns = next(p for p in out.probes if p.metric == "locality")
    assert ns.extra["compared_with"] == "madonna"
    with pytest.raises(ValueError, match="unknown protocols"):
        measure(model, tok, [case], EvalSpec(protocols=("teacher-forced",)))


def test_real_answers_stop_early_and_batch_like_single():
    model, tok = make_tiny_model("llama"), WordTokenizer()
    prompts = ["a b c", "the capital of france is", "x"]
    batched = answers.generate_answers(model, tok, prompts, max_new_tokens=6, batch_size=3)
    single = [answers.generate_answers(model, tok, [p], max_new_tokens=6)[0] for p in prompts]
    assert batched == single and tok.padding_side == "right"
    assert all(len(t.split()) <= 6 for t in batched)
