"""T-Patcher on the real embedded model and real ZsRE records, one edit at a time.

Ten edits of a file it was not tuned on (records 100-109 of the portability
file; the defaults were chosen on records 0-49, docs/methods-log.md) are
applied one after another with one shared ``EditContext`` (what ``run.mode:
sequential`` with ``batch_size: 1`` does).  After the last, every one of the ten
must still be said (teacher-forced reliability over all of them), unrelated
questions must keep their answers, no weight may have changed, and restoring
the edits last-first must give back the model bit for bit: module tree,
weights and logits.
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

TF = EvalSpec(metrics=("reliability", "generalization", "locality"), protocols=("teacher_forced",), batch_size=64)


def _tree(model):
    return [(name, type(m).__name__, len(m._forward_hooks), len(m._forward_pre_hooks)) for name, m in model.named_modules()]


def test_ten_zsre_edits_one_at_a_time_are_kept_local_and_restored_exactly(embedded, shared_datasets):
    model, tokenizer, profile = embedded
    records = zsre_cases(str(shared_datasets / "zsre" / "zsre_mend_eval_portability_gpt4.json"), limit=10, offset=100)
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    tree = _tree(model)
    probe = torch.tensor([tokenizer(records[0].prompt + " " + records[0].target)["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=probe).logits.clone()
    pre = measure(model, tokenizer, records, TF, text=False)
    assert mean_scores(pre)[("reliability", "teacher_forced")] < 0.5   # the targets were not said before

    context, handles = EditContext(progress=False), []
    try:
        for case in records:
            handles.append(get_method("t-patcher").apply(model, tokenizer, profile, [case], None, context))
        assert all(h.changed_parameters == [] for h in handles)
        assert handles[-1].details["module"] == f"model.layers.{profile.num_layers - 1}.mlp"   # the last feed-forward block
        assert handles[-1].details["neurons"] >= 10
        post = mean_scores(measure(model, tokenizer, records, TF, reference=pre, text=False))
        assert post[("reliability", "teacher_forced")] >= 0.9, post
        assert post[("locality", "teacher_forced")] >= 0.8, post
        for name, param in model.named_parameters():
            assert torch.equal(param.detach(), weights[name]), name
    finally:
        for handle in reversed(handles):
            handle.restore()
    assert _tree(model) == tree
    for name, param in model.named_parameters():
        assert torch.equal(param.detach(), weights[name]), name
    with torch.no_grad():
        assert torch.equal(model(input_ids=probe).logits, logits)
