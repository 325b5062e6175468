"""IKE, LoRA, AdaLoRA and KN on the real embedded model and the ten real reference edits.

Each edit is applied alone and undone (``run.mode: single``).  IKE, LoRA and
AdaLoRA must write at least 8 of the 10 edits (the greedy generation starts
with the new target) with teacher-forced reliability >= 0.8, LoRA and AdaLoRA
must keep locality >= 0.8, and KN must move the model towards the new answer
(its figures are weaker, as in the literature; docs/methods.md).  Restoring
gives back the weights bit for bit; for IKE, whose weights never change, the
outputs are compared.  The 50-record CounterFact figures are in docs/methods.md.
"""

from __future__ import annotations

import pytest
import torch

from keditlab.data.records import easyedit_cases
from keditlab.evaluate import measure
from keditlab.evaluate.measurement import mean_scores
from keditlab.methods import EditContext, get_method
from keditlab.spec.types import EvalSpec

pytestmark = pytest.mark.integration

TF = EvalSpec(metrics=("reliability", "locality"), protocols=("teacher_forced",), batch_size=64,
             max_new_tokens=8)  # the generation protocol has its own tests; 8 tokens hold every target here (at most 4)


@pytest.fixture(scope="module")
def reference(shared_datasets):
    return easyedit_cases(str(shared_datasets / "reference" / "baseline_10_edits.json"))


@pytest.fixture(scope="module")
def before(embedded, reference):
    model, tokenizer, _ = embedded
    return measure(model, tokenizer, reference, TF)


def _edit_each(embedded, cases, before, method):
    model, tokenizer, profile = embedded
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    probe = torch.tensor([tokenizer(cases[0].prompt)["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=probe).logits.clone()
    posts, handles = [], []
    for case, pre in zip(cases, before):
        handle = get_method(method).apply(model, tokenizer, profile, [case], None, EditContext())
        try:
            posts.append(measure(model, tokenizer, [case], TF, reference=[pre], context=handle.context)[0])
        finally:
            handle.restore()
        handles.append(handle)
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters()), "restore is bit for bit"
    with torch.no_grad():
        assert torch.equal(model(input_ids=probe).logits, logits)
    return posts, handles


@pytest.mark.parametrize("method", ["ike", "lora", "adalora"])
def test_writes_the_reference_edits(embedded, reference, before, method):
    posts, handles = _edit_each(embedded, reference, before, method)
    scores = mean_scores(posts)
    said = sum(post.says(case.target) for post, case in zip(posts, reference))
    assert scores[("reliability", "teacher_forced")] >= 0.8, scores
    assert said >= 8, [post.generations[0].text for post in posts]
    if method == "ike":
        assert all(h.changed_parameters == [] for h in handles)
        assert all("New Fact:" in c for post in posts for c in post.contexts.values())
    else:
        assert scores[("locality", "teacher_forced")] >= 0.8, scores


def test_kn_moves_the_model_towards_the_new_answers(embedded, reference, before):
    """KN is weak (0.23 teacher-forced, 2 of 10 said, docs/methods.md), but it must write something."""
    posts, handles = _edit_each(embedded, reference, before, "kn")
    assert all(h.details["cases"][0]["neurons"] for h in handles), "every edit found neurons to move"
    assert sum(h.details["cases"][0]["writes_first_token"] for h in handles) >= 1
    pre = mean_scores(before)[("reliability", "teacher_forced")]
    assert mean_scores(posts)[("reliability", "teacher_forced")] > pre + 0.05
