"""UltraEdit and LocFT-BF on the real embedded model and real ZsRE records.

Each method must write its edits (the paper's absolute UltraEdit step leaves
this model unchanged, so that is checked too), keep unrelated facts, undo bit
for bit, and a stream of 20 edits in two sequential batches must keep the
first batch.  Small on purpose (the tier's budget); the acceptance figures on
1,000 records are in ``docs/methods.md``.
"""

from __future__ import annotations

import pytest
import torch

from keditlab.data.records import zsre_cases
from keditlab.evaluate import measure
from keditlab.evaluate.measurement import mean_scores
from keditlab.methods import EditContext, get_method
from keditlab.spec.types import EvalSpec

pytestmark = pytest.mark.integration

TF = EvalSpec(metrics=("reliability", "generalization", "locality"), protocols=("teacher_forced",), batch_size=64)  # the generation protocol has its own tests
REL, LOC = ("reliability", "teacher_forced"), ("locality", "teacher_forced")

#: LocFT-BF on ten edits a call: mini-batches of 2 so that an epoch takes five steps (the default 10 would take one).
#: The paper's UltraEdit: one step of its absolute size, no passes, nothing held.
PAPER = {"lr": 1e-6, "passes": 1, "preserve": 0, "keep_earlier": 0}

QUICK = {"ultraedit": {}, "locft-bf": {"epochs": 20, "mini_batch_size": 2}}


@pytest.fixture(scope="module")
def records(shared_datasets):
    return zsre_cases(str(shared_datasets / "zsre" / "zsre_mend_train-1k.json"), limit=20)


def _weights(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_paper_step_leaves_the_small_model_unchanged_and_the_derived_step_does_not(embedded, records):
    model, tokenizer, profile = embedded
    cases = records[:10]
    pre = measure(model, tokenizer, cases, TF, text=False)
    with get_method("ultraedit").apply(model, tokenizer, profile, cases, PAPER):
        assert mean_scores(measure(model, tokenizer, cases, TF, reference=pre, text=False))[REL] == pytest.approx(mean_scores(pre)[REL], abs=0.02)
    with get_method("ultraedit").apply(model, tokenizer, profile, cases):
        assert mean_scores(measure(model, tokenizer, cases, TF, reference=pre, text=False))[REL] > mean_scores(pre)[REL] + 0.2


@pytest.mark.parametrize("method", ["ultraedit", "locft-bf"])
def test_a_stream_of_twenty_edits_is_written_kept_local_and_undone(embedded, records, method):
    model, tokenizer, profile = embedded
    before = _weights(model)
    pre = measure(model, tokenizer, records, TF, text=False)
    context = EditContext()
    handles = [get_method(method).apply(model, tokenizer, profile, records[i:i + 10], QUICK[method], context) for i in (0, 10)]
    try:
        post = measure(model, tokenizer, records, TF, reference=pre, text=False)
        everything, earlier = mean_scores(post), mean_scores(post[:10])
        assert mean_scores(pre)[REL] < 0.35                  # the new answers were not said before
        assert everything[REL] >= 0.6, everything
        assert earlier[REL] >= 0.6, earlier                  # the first batch survives the second
        assert everything[LOC] >= 0.7, everything
    finally:
        for handle in reversed(handles):
            handle.restore()
    for name, param in model.named_parameters():
        assert torch.equal(param.detach(), before[name]), name
    if method == "ultraedit":
        assert context.memory["ultraedit"]["moments"] == {}   # the running statistics are taken back too


def test_ultraedit_writes_single_edits(embedded, records):
    # one edit has one to three target tokens: without the prior in the running statistics nothing was written
    model, tokenizer, profile = embedded
    cases = records[:4]
    pre = measure(model, tokenizer, cases, TF, text=False)
    posts = []
    for case, before_case in zip(cases, pre):
        with get_method("ultraedit").apply(model, tokenizer, profile, [case]):
            posts.append(measure(model, tokenizer, [case], TF, reference=[before_case], text=False)[0])
    scores = mean_scores(posts)
    assert scores[REL] >= max(0.75, mean_scores(pre)[REL] + 0.4), scores
    assert scores[LOC] >= 0.6, scores


def test_ultraedit_holds_the_unrelated_questions_it_is_given(embedded, records, shared_datasets):
    # stats.unrelated reaches a method as EditContext.unrelated: real NQ questions and answers of another file
    import json

    from keditlab.methods.adaptors import preserved_keys

    model, tokenizer, profile = embedded
    other = json.loads((shared_datasets / "zsre" / "zsre_mend_eval_portability_gpt4.json").read_text(encoding="utf-8"))
    pairs = tuple((r["loc"], r["loc_ans"]) for r in other[-32:])
    cases = records[:10]
    pre = measure(model, tokenizer, cases, TF, text=False)
    context = EditContext(unrelated=pairs)
    with get_method("ultraedit").apply(model, tokenizer, profile, cases, {"preserve": 32}, context) as handle:
        post = mean_scores(measure(model, tokenizer, cases, TF, reference=pre, text=False))
        layers = handle.details["layers"]
    held = context.memory["ultraedit"]["preserved"]
    modules = {layer: model.get_submodule(profile.mlp_out_module(layer)) for layer in layers[:1]}
    expected = preserved_keys(model, tokenizer, modules, 32, 0, pairs)[layers[0]]
    torch.testing.assert_close(held[layers[0]], expected)   # the pairs' keys were held, not model samples
    assert post[REL] > mean_scores(pre)[REL] + 0.4, post
    assert post[LOC] >= 0.8, post


def test_locft_bf_on_late_layers_holds_the_earlier_batch_and_the_unrelated_questions(embedded, records, shared_datasets):
    # specs/lifelong.yaml's settings on a stream of two batches of ten, with its held NQ questions.  Measured on the
    # same eleven layers without the two penalties: reliability 0.88 (first ten 0.77), locality 0.21; so the bars
    # below fail when either penalty does nothing (that A/B comparison is not run here: it doubled the test's time)
    import json

    model, tokenizer, profile = embedded
    before = _weights(model)
    other = json.loads((shared_datasets / "zsre" / "zsre_mend_eval_portability_gpt4.json").read_text(encoding="utf-8"))
    pairs = tuple((r["loc"], r["loc_ans"]) for r in other[581:837])   # the spec's 256
    held = {"span": "late", "mini_batch_size": 2, "preserve": 256, "preserve_weight": 1000.0, "keep_earlier": 1000.0}
    pre = measure(model, tokenizer, records, TF, text=False)
    context = EditContext(unrelated=pairs)
    handles = [get_method("locft-bf").apply(model, tokenizer, profile, records[i:i + 10], held, context) for i in (0, 10)]
    try:
        post = measure(model, tokenizer, records, TF, reference=pre, text=False)
        everything, earlier = mean_scores(post), mean_scores(post[:10])
        assert len(handles[0].details["parameters"]) == 11    # layers 18-28 of 30
    finally:
        for handle in reversed(handles):
            handle.restore()
    for name, param in model.named_parameters():
        assert torch.equal(param.detach(), before[name]), name
    # measured: reliability 1.00 (first ten 1.00), locality 0.76
    assert everything[REL] >= 0.9 and earlier[REL] >= 0.9, (everything, earlier)
    assert everything[LOC] >= 0.7, everything
