"""Editing methods on the real embedded model: edits take, stay local, and undo exactly."""

from __future__ import annotations

import pytest
import torch

import keditlab
from keditlab.evaluate import greedy_generate
from keditlab.spec.types import EditCase

pytestmark = pytest.mark.integration

CASE = EditCase(
    prompt="The Statue of Liberty is located in the city of",
    subject="Statue of Liberty",
    target="London",
    ground_truth="New York",
    case_id="liberty",
)
UNRELATED = ["The capital of France is", "The Kremlin is located in the city of"]


@pytest.mark.parametrize("method", ["rome", "ft-m", "ft-l"])
def test_edit_is_visible_then_restored_bit_for_bit(embedded, method):
    model, tokenizer, profile = embedded
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    unrelated_before = greedy_generate(model, tokenizer, UNRELATED, max_new_tokens=3)

    handle = keditlab.apply_edit(method, model, tokenizer, profile, [CASE])
    try:
        edited = greedy_generate(model, tokenizer, [CASE.prompt], max_new_tokens=3)[0]
        if method in ("rome", "ft-m"):
            assert edited.strip().startswith("London"), edited
        assert greedy_generate(model, tokenizer, UNRELATED, max_new_tokens=3) == unrelated_before
    finally:
        handle.restore()
    for name, param in model.named_parameters():
        assert torch.equal(param.detach(), before[name]), name
    assert greedy_generate(model, tokenizer, [CASE.prompt], max_new_tokens=3)[0].strip().startswith("New York")


def test_rome_records_what_it_did(embedded):
    model, tokenizer, profile = embedded
    with keditlab.apply_edit("rome", model, tokenizer, profile, [CASE], {"layer": 4}) as handle:
        assert handle.changed_parameters == ["model.layers.4.mlp.down_proj.weight"]
        info = handle.details["cases"][0]
        assert info["target_nll"][-1] < info["target_nll"][0]
        assert info["steps"] == len(info["target_nll"]) <= 25
        assert handle.details["layer"] == 4
        # the update delivers the optimised change at every context's key, the bare prompt's first
        assert len(info["key_effect"]) == 6 and all(abs(x - 1) < 0.05 for x in info["key_effect"])
        assert info["target_prob_after"] > 0.5 and info["target_tokens_after"] == 1.0
    assert handle.restored


@pytest.mark.parametrize("update_keys", ["prompt", "mean"])
def test_rome_update_key_forms_are_where_they_say(embedded, update_keys):
    """'prompt' is exact at the bare prompt's key; 'mean' at the average key (so not at the bare one)."""
    model, tokenizer, profile = embedded
    with keditlab.apply_edit("rome", model, tokenizer, profile, [CASE], {"update_keys": update_keys, "v_steps": 3}) as handle:
        effect = handle.details["cases"][0]["key_effect"]
        if update_keys == "prompt":
            assert effect[0] == pytest.approx(1.0, abs=1e-3)
        else:
            assert sum(effect) / len(effect) == pytest.approx(1.0, abs=1e-3)


def test_rome_writes_real_counterfact_edits(embedded, shared_datasets):
    """ROME with its defaults on ten real CounterFact records it was not tuned on (records 100-109)."""
    from keditlab.data import counterfact_cases
    from keditlab.runner import run_spec
    from keditlab.spec.types import EvalSpec, MethodSpec, ModelSpec, Spec

    cases = counterfact_cases(shared_datasets / "counterfact" / "counterfact_500.json", limit=10, offset=100, neighbours=3)
    spec = Spec(name="cf-100", model=ModelSpec(), methods=(MethodSpec("rome"),), edits=tuple(cases),
                evaluate=EvalSpec(metrics=("reliability", "generalization", "locality"),
                                  protocols=("teacher_forced", "probability"), max_new_tokens=8))
    run = run_spec(spec, None, loaded=embedded, log=lambda _m: None)
    assert run.metric("rome", "reliability") >= 0.8, run.table()
    assert run.metric("rome", "locality") >= 0.8, run.table()
    assert run.metric("rome", "reliability", when="pre") <= 0.3
    # the table's count of edits that did not take agrees with the records
    not_said = sum(any(w["code"] == "target_not_said" for w in r["warnings"]) for r in run.cases)
    assert run.summary["methods"]["rome"]["warnings"]["target_not_said"] == not_said <= 2
