"""Evaluation plumbing on a tiny random Llama with a toy word tokenizer (fast, no real model).

The numbers are meaningless here (the model is random); what is checked is
the machinery: batching does not change results, locality agreement against a
reference, protocols never mixed, only requested metrics reported, JSON round trip.
"""

from __future__ import annotations

import json

import pytest
import torch

from keditlab.evaluate import (
    PROTOCOLS,
    CaseMeasurement,
    greedy_generate,
    mean_scores,
    measure,
    probability_test,
    teacher_forced,
)
from keditlab.evaluate.teacher_forced import TFResult
from keditlab.spec.types import EditCase, EvalSpec, Probe
from tests.conftest import make_tiny_model


class WordTokenizer:
    """A toy tokenizer: each whitespace word is one token (hashed into ids 3..127); BOS=1, EOS=2, PAD=0."""

    pad_token_id, eos_token_id, bos_token_id = 0, 2, 1
    pad_token, eos_token = "<pad>", "</s>"

    def __init__(self) -> None:
        self.padding_side = "right"
        self.vocab: dict[str, int] = {}

    def _id(self, word: str) -> int:
        return self.vocab.setdefault(word, 3 + len(self.vocab) % 125)

    def _encode(self, text: str, add_special_tokens: bool) -> list[int]:
        ids = [self._id(w) for w in text.split()]
        return ([self.bos_token_id] if add_special_tokens else []) + ids

    def __call__(self, text, add_special_tokens=True, return_tensors=None, padding=False, **_):
        if isinstance(text, str):
            return {"input_ids": self._encode(text, add_special_tokens)}
        seqs = [self._encode(t, add_special_tokens) for t in text]
        width = max(map(len, seqs))
        ids, mask = [], []
        for s in seqs:
            pad = [self.pad_token_id] * (width - len(s))
            left = self.padding_side == "left"
            ids.append(pad + s if left else s + pad)
            mask.append([0] * len(pad) + [1] * len(s) if left else [1] * len(s) + [0] * len(pad))
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}

    def decode(self, ids, skip_special_tokens=False):
        words = {v: k for k, v in self.vocab.items()}
        return " ".join(words.get(int(i), f"<{int(i)}>") for i in ids if not (skip_special_tokens and int(i) < 3))


@pytest.fixture
def tiny():
    return make_tiny_model("llama"), WordTokenizer()


def cases() -> list[EditCase]:
    return [
        EditCase("the capital of france is", "france", "rome", "paris",
                 rephrase=("france has its capital in", "q: capital of france ? a:"),
                 locality=(Probe("locality", "the capital of germany is", "berlin"),),
                 portability=(Probe("portability", "the eiffel tower stands in", "rome"),), case_id="a"),
        EditCase("the sky is", "sky", "green", None, rephrase=("on a clear day the sky looks",),
                 locality=(Probe("locality", "grass is", "green and lush"),
                           Probe("locality", "snow is very", "white")), case_id="b"),
    ]


def test_batched_equals_unbatched(tiny):
    model, tok = tiny
    pairs = [("the capital of france is", "rome"), ("a b", "c d e f"), ("one two three four five", "six"),
             ("x", "y z")]
    one = [teacher_forced(model, tok, [p])[0] for p in pairs]
    many = teacher_forced(model, tok, pairs, batch_size=3)
    for a, b in zip(one, many):
        assert a.predicted == b.predicted and a.answer_ids == b.answer_ids and a.accuracy == b.accuracy
        assert a.nll == pytest.approx(b.nll, rel=1e-4, abs=1e-5)


def test_accuracy_is_fraction_of_argmax_hits(tiny):
    model, tok = tiny
    r = teacher_forced(model, tok, [("a b c", "d e f g")])[0]
    hits = sum(p == t for p, t in zip(r.predicted, r.answer_ids))
    assert len(r.predicted) == 4 and r.accuracy == hits / 4


def test_greedy_generation_batched_equals_single_and_restores_padding_side(tiny):
    model, tok = tiny
    prompts = ["a b c", "the capital of france is", "x"]
    batched = greedy_generate(model, tok, prompts, max_new_tokens=5, batch_size=3)
    single = [greedy_generate(model, tok, [p], max_new_tokens=5)[0] for p in prompts]
    assert batched == single
    assert tok.padding_side == "right"


def test_probability_test_compares_mean_nll():
    good = TFResult(1.0, [5], [5], nll=0.5)
    bad = TFResult(0.0, [5, 6], [7, 8], nll=2.0)
    assert probability_test(good, bad)[0] == 1.0
    value, extra = probability_test(bad, good)
    assert value == 0.0 and extra["nll_target"] == 2.0 and extra["p_ground_truth"] == pytest.approx(0.6065, 1e-3)


def test_measure_structure_and_locality_reference(tiny):
    model, tok = tiny
    settings = EvalSpec(max_new_tokens=4)
    pre = measure(model, tok, cases(), settings)
    assert [m.case_id for m in pre] == ["a", "b"]
    for m in pre:
        assert all(p.protocol in PROTOCOLS for p in m.probes)
        loc = [p for p in m.probes if p.metric == "locality" and p.protocol != "probability"]  # NS compares answers
        assert loc and all(p.value == 1.0 and "accuracy" in p.extra for p in loc)
        # one generation per edit prompt and rephrase (fluency is requested)
        assert len(m.generations) == 1 + len(cases()[pre.index(m)].rephrase)
        assert m.fluency is not None
    # probability probes exist only where a ground truth is given
    assert any(p.protocol == "probability" for p in pre[0].probes)
    assert not any(p.protocol == "probability" for p in pre[1].probes)
    assert ("reliability", "probability") in pre[0].scores()

    # unchanged model -> locality agreement 1.0
    post = measure(model, tok, cases(), settings, reference=pre)
    assert all(p.value == 1.0 for m in post for p in m.probes if p.metric == "locality" and p.protocol != "probability")
    # a reference with different predictions -> agreement is the fraction of matching positions
    fake = [CaseMeasurement.from_dict(json.loads(json.dumps(m.to_dict()))) for m in pre]
    for p in fake[1].probes:
        if p.metric == "locality" and p.prompt == "grass is" and p.protocol == "teacher_forced":
            p.predicted = [p.predicted[0], p.predicted[1] + 1, p.predicted[2] + 1]
    post = measure(model, tok, cases(), settings, reference=fake)
    grass = next(p for p in post[1].probes if p.prompt == "grass is")
    assert grass.value == pytest.approx(1 / 3)


def test_only_requested_metrics_are_reported(tiny):
    model, tok = tiny
    out = measure(model, tok, cases(), EvalSpec(metrics=("reliability",), max_new_tokens=3))
    for m in out:
        assert {metric for metric, _ in m.scores()} == {"reliability", "reliability_contains", "reliability_magnitude"} - (
            {"reliability_magnitude"} if m.case_id == "b" else set())
        assert m.fluency is None
        assert [g.prompt for g in m.generations] == [cases()[out.index(m)].prompt]  # edit prompt always generated


def test_scores_keep_protocols_apart_and_json_ready(tiny):
    model, tok = tiny
    out = measure(model, tok, cases(), EvalSpec(max_new_tokens=3))
    for m in out:
        for (metric, protocol), value in m.scores().items():
            vals = [p.value for p in m.probes if p.metric == metric and p.protocol == protocol]
            if vals:
                assert value == pytest.approx(sum(vals) / len(vals))
        json.dumps(m.to_dict())
    assert set(mean_scores(out)) >= set(out[0].scores())


def test_bad_inputs(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="unknown metrics"):
        measure(model, tok, cases(), EvalSpec(metrics=("reliabilty",)))
    with pytest.raises(ValueError, match="reference"):
        measure(model, tok, cases(), reference=[])


class RecordingBar:
    """Stands in for ``tqdm.auto.tqdm``: records its settings and every update."""

    made: list["RecordingBar"] = []

    def __init__(self, **settings):
        self.settings, self.updates = settings, []
        RecordingBar.made.append(self)

    def update(self, n=1):
        self.updates.append(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_progress_advances_per_batch_changes_nothing_and_is_silent_when_off(tiny, monkeypatch):
    import tqdm.auto

    model, tok = tiny
    RecordingBar.made = []
    monkeypatch.setattr(tqdm.auto, "tqdm", RecordingBar)
    settings = EvalSpec(max_new_tokens=3, batch_size=2)
    quiet = measure(model, tok, cases(), settings)
    assert RecordingBar.made == []  # progress is off by default: no bar at all
    shown = measure(model, tok, cases(), settings, progress=True)
    assert [m.to_dict() for m in shown] == [m.to_dict() for m in quiet]
    (bar,) = RecordingBar.made
    # every teacher-forced pair, question and generation counted, a batch (of at most 2) at a time
    assert sum(bar.updates) == bar.settings["total"] > 0 and max(bar.updates) <= 2 and len(bar.updates) > 3
    assert bar.settings["desc"] == "measuring 2 cases" and bar.settings["delay"] >= 1  # shown only when measuring is slow
