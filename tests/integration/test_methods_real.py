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
        assert info["target_nll_last"] < info["target_nll_first"]
        assert info["steps"] <= 25
        assert handle.details["layer"] == 4
    assert handle.restored
