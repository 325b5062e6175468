"""The shared preservation term (``keditlab/methods/preservation.py``) in FT-M and FT-L, on tiny random models.

FT-M with ``preserve > 0`` must move the tuned layer's output at the preserved
keys less than without, restore bit for bit (one call and a sequential
stream), and leave everything as it was with ``preserve: 0``; LocFT-BF must
use the same penalty (its own results are pinned by
``tests/unit/test_lifelong_closed_form.py``).
"""

from __future__ import annotations

import pytest
import torch

from keditlab.methods import EditContext, MethodConfigError, get_method
from keditlab.methods.adaptors import preserved_keys
from keditlab.models import derive_profile
from keditlab.spec import EditCase, MethodSpec
from tests.conftest import tiny_with_embedded_vocab

CASES = [
    EditCase(prompt="The Eiffel Tower is located in the city of", subject="Eiffel Tower", target="Rome", case_id="a"),
    EditCase(prompt="The Colosseum stands in the city of", subject="Colosseum", target="Berlin", case_id="b"),
    EditCase(prompt="Question: What sort of creature is a killdeer?\nAnswer:", subject="killdeer", target="I don't know.", case_id="c"),
]
UNRELATED = (("Question: Who wrote Hamlet?\nAnswer:", "William Shakespeare"),
             ("Question: What is the capital of France?\nAnswer:", "Paris"),
             ("Question: What colour is the sky on a clear day?\nAnswer:", "Blue"),
             ("Question: How many legs has a spider?\nAnswer:", "Eight"))
#: Strong enough steps that the edit moves the tuned matrix a lot in a few steps (no early stop).  FT-L's
#: L-infinity ball is opened: with a step 50 times its default bound, every entry would end on the ball's surface
#: whatever the loss, and the penalty could only choose the signs.
FAST = {"steps": 6, "lr": 1e-2, "early_stop_loss": 0.0}
SETTINGS = {"ft-m": FAST, "ft-l": {**FAST, "norm_constraint": 1.0}}


def _params(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _same(model, before) -> bool:
    return all(torch.equal(p.detach(), before[name]) for name, p in model.named_parameters())


def _relative_change(weight: torch.Tensor, anchor: torch.Tensor, keys: torch.Tensor) -> float:
    """‖ΔW p‖ / ‖W₀ p‖ over the preserved keys, from the keys themselves (not from the method's own penalty)."""
    keys = keys.float()
    return float(((keys @ (weight - anchor).float().T) ** 2).sum().sqrt() / ((keys @ anchor.float().T) ** 2).sum().sqrt())


@pytest.mark.parametrize("method", ["ft-m", "ft-l"])
def test_preserve_moves_the_output_at_the_preserved_keys_less_and_restores_bit_for_bit(method, tokenizer):
    model = tiny_with_embedded_vocab()
    profile = derive_profile(model)
    before = _params(model)
    layer = get_method(method).config_class().resolved_layers(profile.num_layers)[0]
    anchor = profile.mlp_out_weight(model, layer).detach().clone()
    module = model.get_submodule(profile.mlp_out_module(layer))
    from keditlab.methods.adaptors import read_inputs, unrelated_positions
    rows, selected = unrelated_positions(model, tokenizer, len(UNRELATED), 0, UNRELATED)
    keys = read_inputs(model, tokenizer, {layer: module}, rows, selected)[layer]   # the keys of the unrelated answers

    moved = {}
    for preserve in (0, len(UNRELATED)):
        context = EditContext(unrelated=UNRELATED)
        settings = {**SETTINGS[method], "preserve": preserve, "preserve_weight": 1000.0}
        with get_method(method).apply(model, tokenizer, profile, CASES, settings, context) as handle:
            moved[preserve] = _relative_change(profile.mlp_out_weight(model, layer).detach(), anchor, keys)
            assert handle.details["steps"] == FAST["steps"] and handle.details["loss_last"] < handle.details["loss_first"]
            if preserve:
                # the method's own report is the same measure, from the same keys
                assert handle.details["preserved_change"][layer] == pytest.approx(moved[preserve], rel=1e-3, abs=1e-4)
                assert set(context.memory[method]["anchors"]) == {layer}
                held_anchor, _ = context.memory[method]["anchors"][layer]
                assert torch.equal(held_anchor, anchor)
            else:
                assert "preserved_change" not in handle.details and context.memory == {}   # nothing read, nothing held
        assert _same(model, before)
    assert moved[len(UNRELATED)] < 0.5 * moved[0], moved


def test_preserve_zero_is_plain_fine_tuning(tokenizer):
    """``preserve: 0`` (whatever ``preserve_weight``) and ``preserve_weight: 0`` give the weights of the default
    settings exactly; the default is 0."""
    assert get_method("ft-m").config_class().preserve == 0 and get_method("ft-l").config_class().preserve == 0
    results = []
    for settings in ({}, {"preserve": 0, "preserve_weight": 5.0}, {"preserve": 2, "preserve_weight": 0.0}):
        model = tiny_with_embedded_vocab()
        profile = derive_profile(model)
        get_method("ft-m").apply(model, tokenizer, profile, CASES, {**FAST, **settings}, EditContext(unrelated=UNRELATED))
        results.append(_params(model))
    for other in results[1:]:
        assert all(torch.equal(other[name], results[0][name]) for name in results[0])


def test_a_sequential_stream_holds_its_first_calls_anchor_and_restores_exactly(tokenizer):
    model = tiny_with_embedded_vocab()
    profile = derive_profile(model)
    before = _params(model)
    start = {layer: profile.mlp_out_weight(model, layer).detach().clone() for layer in (0, 2)}
    context = EditContext(unrelated=UNRELATED)
    settings = {**FAST, "preserve": 3, "layers": [0, 2]}
    method = get_method("ft-m")
    first = method.apply(model, tokenizer, profile, CASES[:2], settings, context)
    anchors = context.memory["ft-m"]["anchors"]
    held = {layer: (anchor.clone(), moment.clone()) for layer, (anchor, moment) in anchors.items()}
    after_first = _params(model)
    second = method.apply(model, tokenizer, profile, CASES[2:], settings, context)
    # the second call is held against the stream's start, not against the first call's weights
    for layer in (0, 2):
        assert torch.equal(anchors[layer][0], held[layer][0]) and torch.equal(anchors[layer][1], held[layer][1])
        assert torch.equal(anchors[layer][0], start[layer])
    assert set(second.details["preserved_change"]) == {0, 2}
    second.restore()
    assert _same(model, after_first)
    first.restore()
    assert _same(model, before)


def test_the_stream_resumes_with_its_anchors(tokenizer, tmp_path, monkeypatch):
    """FT-M with ``preserve`` keeps memory between calls, like LocFT-BF: a sequential run stopped while measuring
    its third call resumes after its second with that call's memory and ends as the uninterrupted run."""
    from tests.unit.test_run_modes import test_lifelong_methods_resume_with_their_memory as resumes_with_its_memory

    resumes_with_its_memory(tokenizer, tmp_path, monkeypatch, MethodSpec("ft-m", params={"preserve": 8, "steps": 3}))


def test_anchors_read_for_another_count_are_read_again(tokenizer):
    """Two method entries of one run share the method's memory: the second, holding another number of texts,
    reads its own keys instead of the first one's."""
    model = tiny_with_embedded_vocab()
    profile = derive_profile(model)
    context = EditContext(unrelated=UNRELATED)
    with get_method("ft-m").apply(model, tokenizer, profile, CASES[:1], {"steps": 1, "layers": [0], "preserve": 1}, context):
        pass
    one = context.memory["ft-m"]["anchors"][0][1].clone()
    module = model.get_submodule(profile.mlp_out_module(0))
    assert torch.equal(one, preserved_keys(model, tokenizer, {0: module}, 1, 0, UNRELATED)[0])
    with get_method("ft-m").apply(model, tokenizer, profile, CASES[:1], {"steps": 1, "layers": [0], "preserve": 4}, context):
        pass
    four = context.memory["ft-m"]["anchors"][0][1]
    assert torch.equal(four, preserved_keys(model, tokenizer, {0: module}, 4, 0, UNRELATED)[0]) and not torch.equal(four, one)


def test_locft_bf_and_the_fine_tuning_baselines_share_one_penalty():
    from keditlab.methods import finetune, locft_bf, preservation

    assert locft_bf.preservation_penalty is preservation.preservation_penalty
    assert locft_bf.Preservation is finetune.Preservation is preservation.Preservation
    assert locft_bf.held_anchors is finetune.held_anchors is preservation.held_anchors
    assert locft_bf.PRESERVE_WEIGHT == finetune.PRESERVE_WEIGHT == 100.0


def test_plan_counts_the_anchor_and_moe_is_refused(tokenizer):
    model = tiny_with_embedded_vocab()
    profile = derive_profile(model)
    config = get_method("ft-m").config_class
    size = profile.hidden_size * profile.mlp_size
    assert get_method("ft-m").plan(profile, config()).held == 0
    assert get_method("ft-m").plan(profile, config(preserve=8)).held == size
    from tests.unit.test_moe import tiny_moe

    moe = tiny_moe("qwen3_moe")
    with pytest.raises(MethodConfigError, match=r"ft-m: preserve reads the keys of one down projection.*Fix: leave preserve at 0"):
        get_method("ft-m").apply(moe, tokenizer, derive_profile(moe), CASES[:1], {"preserve": 2})
