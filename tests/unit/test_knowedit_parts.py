"""KnowEdit's six parts: the shared files read as their parts, ConvSent's and Sanitation's cases, their errors.

Reads the real KnowEdit files in ``../shared/datasets/knowedit`` (skipped
cleanly where they are absent); the scoring of ConvSent's sentiment
questions runs on a tiny random model.
"""

from __future__ import annotations

import json

import pytest
import torch

from keditlab.data.knowedit import CONVSENT_QUESTIONS, file_part, knowedit_cases
from keditlab.evaluate import measure
from keditlab.evaluate.probability import references_test
from keditlab.evaluate.sentiment import compound, leaning
from keditlab.evaluate.teacher_forced import teacher_forced
from keditlab.spec import validate_file
from keditlab.spec.types import EvalSpec
from keditlab.vocabulary import QA_FRAME
from tests.conftest import tiny_with_embedded_vocab

PARTS = [("zsre/ZsRE-test-all.json", "zsre"), ("wiki_recent/recent_train.json", "recent"),
         ("wiki_counterfact/train_cf.json", "counterfact"), ("wikibio/wikibio-test-all.json", "wikibio"),
         ("convsent/blender_test.json", "convsent"), ("sanitation/trivia_qa_test.json", "sanitation"),
         ("sanitation/trivia_qa_train.json", "sanitation")]


@pytest.fixture
def knowedit(shared_datasets):
    folder = shared_datasets / "knowedit"
    if not (folder / "convsent" / "blender_test.json").exists():
        pytest.skip(f"the KnowEdit files are not at {folder}")
    return folder


@pytest.mark.parametrize("file,part", PARTS)
def test_each_shared_file_is_recognised_as_its_part_and_read_whole(knowedit, file, part):
    data = json.loads((knowedit / file).read_text(encoding="utf-8"))
    assert file_part(data) == part
    cases = knowedit_cases(knowedit / file, part=part)
    expected = len(data) if isinstance(data, list) else len(data["success" if "success" in data else "K_F"])
    assert len(cases) == expected


def test_sanitation_questions_become_refusal_edits_and_every_other_question_is_checked_once(knowedit):
    data = json.loads((knowedit / "sanitation" / "trivia_qa_test.json").read_text(encoding="utf-8"))
    cases = knowedit_cases(knowedit / "sanitation" / "trivia_qa_test.json")
    first = data["success"][0]
    assert cases[0].prompt == QA_FRAME.format(prompt=first["question"]) == f"Question: {first['question']}\nAnswer:"
    assert {c.target for c in cases} == {"I don't know."}
    assert cases[0].ground_truth == first["ground_truth"] and cases[0].subject in cases[0].prompt
    kept = [(p.prompt, p.answer) for c in cases for p in c.locality]
    assert sorted(kept) == sorted((QA_FRAME.format(prompt=r["question"]), r["ground_truth"]) for r in data["locality"])
    window = knowedit_cases(knowedit / "sanitation" / "trivia_qa_test.json", limit=3, offset=2)
    assert [c.locality for c in window] == [c.locality for c in cases[2:5]]   # the same share in any window


def test_convsent_records_become_sentiment_edits_with_their_references(knowedit):
    data = json.loads((knowedit / "convsent" / "blender_test.json").read_text(encoding="utf-8"))
    cases = knowedit_cases(knowedit / "convsent" / "blender_test.json", limit=4)
    for index, case in enumerate(cases):
        record = data[index]
        sentiment = "positive" if index % 2 == 0 else "negative"
        wanted, other = (record["pos"], record["neg"]) if sentiment == "positive" else (record["neg"], record["pos"])
        assert case.subject == record["ent"] and case.prompt == CONVSENT_QUESTIONS[0].format(record["ent"])
        assert case.target == " ".join(wanted[0].split())
        assert [q.prompt for q in case.questions] == [t.format(record["ent"]) for t in CONVSENT_QUESTIONS]
        for question in case.questions:
            assert question.kind == "sentiment" and question.group == sentiment
            assert question.answers() == tuple(dict.fromkeys(" ".join(t.split()) for t in wanted if t.strip()))
            assert question.contrast == tuple(" ".join(t.split()) for t in other if t.strip())
        assert case.locality[0].prompt == CONVSENT_QUESTIONS[0].format(data[index + 1]["ent"])


def _spec(tmp_path, edits: str):
    path = tmp_path / "spec.yaml"
    path.write_text(f"keditlab: 1\nmethod: ft-m\nedits:\n{edits}", encoding="utf-8")
    return path


def test_a_part_the_file_does_not_hold_is_an_error_on_the_part_line(knowedit, tmp_path):
    path = _spec(tmp_path, f"  dataset: knowedit\n  path: {knowedit / 'sanitation' / 'trivia_qa_test.json'}\n  part: convsent\n")
    [error] = validate_file(path)
    assert (error.path, error.line) == ("edits.part", 6)
    assert "holds KnowEdit's sanitation records, not convsent" in error.message and "part: sanitation" in error.fix


def test_a_part_belongs_to_knowedit_only(knowedit, tmp_path):
    path = _spec(tmp_path, f"  dataset: zsre\n  path: {knowedit / 'zsre' / 'ZsRE-test-all.json'}\n  part: zsre\n")
    errors = validate_file(path)
    assert any(e.path == "edits.part" and "dataset is zsre" in e.message and "dataset: knowedit" in e.fix for e in errors)


def test_vader_leans_the_way_a_reader_would():
    assert compound("I love it, it is a wonderful city.") > 0.5 > -0.5 > compound("I hate it, it is awful.")
    assert leaning("I love it.", "positive")[0] == 1.0 and leaning("I love it.", "negative")[0] == 0.0
    assert leaning("It is a city.", "positive") == (0.0, 0.0)        # neutral leans neither way
    with pytest.raises(ValueError, match="unknown sentiment"):
        leaning("I love it.", "happy")


def test_sentiment_questions_are_scored_under_generation_and_probability(tokenizer, knowedit):
    torch.manual_seed(0)
    tiny_model = tiny_with_embedded_vocab("llama")
    case = knowedit_cases(knowedit / "convsent" / "blender_test.json", limit=1)[0]
    settings = EvalSpec(metrics=("reliability",), protocols=("generation", "probability"), answer_tokens=8)
    [measured] = measure(tiny_model, tokenizer, [case], settings)
    gen = [p for p in measured.probes if p.metric == "sentiment" and p.protocol == "generation"]
    prob = [p for p in measured.probes if p.metric == "sentiment" and p.protocol == "probability"]
    assert len(gen) == len(prob) == 3
    for probe in gen:   # the classifier's verdict on the answer the model gave
        assert (probe.value, probe.extra["score"]) == leaning(probe.extra["answer"], "positive")
    question = case.questions[0]
    readings = teacher_forced(tiny_model, tokenizer, [(question.prompt, a) for a in (*question.answers(), *question.contrast)])
    by_hand = sum(r.nll for r in readings[:len(question.answers())]) / len(question.answers()) \
        < sum(r.nll for r in readings[len(question.answers()):]) / len(question.contrast)
    assert prob[0].value == float(by_hand)
    assert prob[0].extra["nll_wanted"] == pytest.approx(references_test(readings[:len(question.answers())],
                                                                       readings[len(question.answers()):])[1]["nll_wanted"])
    scores = measured.scores()
    assert {("sentiment", "generation"), ("sentiment:positive", "generation"), ("sentiment_score", "generation"),
            ("sentiment", "probability"), ("sentiment_magnitude", "probability")} <= set(scores)
