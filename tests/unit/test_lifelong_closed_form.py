"""UltraEdit and LocFT-BF on tiny random models: the algebra, the running statistics, restore, bad settings.

Plumbing only; whether the methods write real edits is checked on the
embedded model (``tests/integration/test_lifelong_closed_form_real.py``).
"""

from __future__ import annotations

import pytest
import torch

from keditlab.methods import EditContext, MethodConfigError, get_method
from keditlab.methods.finetune import masked_batch, masked_nll
from keditlab.methods.locft_bf import LocFTConfig
from keditlab.methods.layers import late_layers as default_layers
from keditlab.methods.ultraedit import RunningMoments, UltraEditConfig, preserving_solve, ridge_solve
from keditlab.models import derive_profile
from keditlab.spec.types import EditCase
from tests.conftest import make_tiny_model

CASES = [
    EditCase(prompt="The Eiffel Tower is located in the city of", subject="Eiffel Tower", target="Rome", case_id="a"),
    EditCase(prompt="The Colosseum stands in the city of", subject="Colosseum", target="Berlin", case_id="b"),
    EditCase(prompt="What is the product made by UniFirst?", subject="UniFirst", target="unmanned aircraft", case_id="c"),
]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from keditlab.models.embedded import ensure_embedded_cache

    tok = AutoTokenizer.from_pretrained(ensure_embedded_cache())
    tok.pad_token = tok.pad_token or tok.eos_token
    return tok


def _tiny(model_type="llama", layers=3):
    depth = {"n_layer": layers} if model_type == "gpt2" else {"num_hidden_layers": layers}
    return make_tiny_model(model_type, vocab_size=49152, **depth)


def _params(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _same(model, before):
    return all(torch.equal(p.detach(), before[name]) for name, p in model.named_parameters())


def test_ridge_solve_is_the_ridge_least_squares_in_either_space():
    g = torch.Generator().manual_seed(0)
    for tokens, width in ((5, 12), (20, 6)):   # fewer tokens than features, and more
        keys = torch.randn(tokens, width, generator=g, dtype=torch.float64)
        shifts = torch.randn(tokens, 4, generator=g, dtype=torch.float64)
        update = ridge_solve(keys, shifts, 0.3)
        lam = 0.3 * float((keys * keys).sum(1).mean())
        expected = torch.linalg.solve(keys.T @ keys + lam * torch.eye(width, dtype=keys.dtype), keys.T @ shifts).T
        torch.testing.assert_close(update, expected)
    # a tiny ridge writes the shifts at the keys (fewer keys than features: exact interpolation)
    keys = torch.randn(5, 12, generator=g, dtype=torch.float64)
    shifts = torch.randn(5, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(keys @ ridge_solve(keys, shifts, 1e-9).T, shifts, atol=1e-6, rtol=1e-6)


def test_running_moments_normalise_with_every_row_seen_and_give_a_share_back():
    g = torch.Generator().manual_seed(1)
    first, second = torch.randn(7, 3, generator=g) * 5 + 2, torch.randn(4, 3, generator=g)
    moments = RunningMoments(3, "cpu")
    moments.add(first)
    moments.add(second)
    both = torch.cat([first, second]).double()
    torch.testing.assert_close(moments.normalise(both), (both - both.mean(0)) / both.std(0))
    moments.add(second, sign=-1)
    assert moments.count == 7
    torch.testing.assert_close(moments.normalise(first), (first.double() - first.double().mean(0)) / first.double().std(0))


def test_a_single_row_keeps_its_direction_only_with_the_prior():
    # one edit's one target token: plain standardisation makes it 0 (nothing would be written), the prior keeps it
    row = torch.tensor([[3.0, -1.0, 0.5, 2.0]])
    moments = RunningMoments(4, "cpu")
    moments.add(row)
    assert torch.count_nonzero(moments.normalise(row)) == 0
    shrunk = moments.normalise(row, prior_rows=16)
    assert torch.nn.functional.cosine_similarity(shrunk, row.double()).item() > 0.999
    assert shrunk.norm().item() == pytest.approx(2.0 * 16 / 17, rel=1e-6)   # √d · n₀/(n₀+1), d = 4
    # two rows: plain standardisation gives ±1/√2 everywhere (the direction is lost); the prior keeps each row's sign pattern
    two = torch.tensor([[3.0, -1.0, 0.5, 2.0], [1.0, 2.0, 0.5, -2.0]])
    moments = RunningMoments(4, "cpu")
    moments.add(two)
    assert torch.allclose(moments.normalise(two).abs()[:, :2], torch.full((2, 2), 2 ** -0.5, dtype=torch.float64))
    assert torch.equal(torch.sign(moments.normalise(two, prior_rows=16)), torch.sign(two.double()))


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
@pytest.mark.parametrize("method,settings", [("ultraedit", {}), ("locft-bf", {"epochs": 3, "mini_batch_size": 2, "lr": 1e-2})])
def test_edit_changes_only_its_weights_and_restores_exactly(model_type, method, settings, tokenizer):
    model = _tiny(model_type)
    profile = derive_profile(model)
    before = _params(model)
    handle = get_method(method).apply(model, tokenizer, profile, CASES, settings)
    after = dict(model.named_parameters())
    changed = {name for name in before if not torch.equal(before[name], after[name].detach())}
    assert changed and changed == set(handle.changed_parameters)
    assert changed <= {f"{profile.mlp_out_module(layer)}.weight" for layer in range(profile.num_layers)}   # MLP output projections only
    assert all(v > 0 for v in handle.delta_norms().values())
    handle.restore()
    assert _same(model, before)
    assert all(p.requires_grad for p in model.parameters()) and all(p.grad is None for p in model.parameters())


def test_ultraedit_statistics_run_across_batches_and_restore_bit_for_bit(tokenizer):
    model = _tiny()
    profile = derive_profile(model)
    before = _params(model)
    context = EditContext()
    method = get_method("ultraedit")
    first = method.apply(model, tokenizer, profile, CASES[:2], {}, context)
    memory = context.memory["ultraedit"]
    layers = first.details["layers"]
    assert layers == default_layers(3) == [2]   # 60% of the depth; with 3 layers no layer is left below the last
    after_first = {layer: memory["moments"][layer].copy() for layer in layers}
    earlier_first = {layer: memory["earlier"][layer].clone() for layer in layers}   # the first batch's keys, held from now on
    weights_first = _params(model)
    second = method.apply(model, tokenizer, profile, CASES[2:], {}, context)
    # the second batch is normalised with the statistics of both batches' tokens
    assert second.details["statistics_tokens"] == first.details["tokens"] + second.details["tokens"]
    assert all(entry["written_share"] > 0.5 for entry in second.details["per_layer"])

    second.restore()
    assert _same(model, weights_first)
    for layer in layers:
        now, then = memory["moments"][layer], after_first[layer]
        assert now.keys.count == then.keys.count
        assert torch.equal(now.keys.total, then.keys.total) and torch.equal(now.keys.squares, then.keys.squares)
        assert torch.equal(now.grads.total, then.grads.total) and torch.equal(now.grads.squares, then.grads.squares)
        assert torch.equal(memory["earlier"][layer], earlier_first[layer])
    first.restore()
    assert _same(model, before)
    assert memory["moments"] == {} and memory["live"] == [] and memory["earlier"] == {}


def test_preserving_solve_writes_the_shifts_and_keeps_held_keys_still():
    torch.manual_seed(0)
    keys, shifts, held_keys = torch.randn(6, 12), torch.randn(6, 4), torch.randn(3, 12)
    free = preserving_solve(keys, shifts, 1e-4, torch.zeros(12, 12))
    held = preserving_solve(keys, shifts, 1e-4, 1e3 * held_keys.T @ held_keys)
    assert torch.allclose(keys.double() @ free.T, shifts.double(), atol=2e-2)      # 6 keys, 12 features: written
    assert torch.allclose(keys.double() @ held.T, shifts.double(), atol=5e-2)      # 6 + 3 constraints still fit in 12
    assert (held_keys.double() @ held.T).abs().max() < 0.05 < 0.5 < (held_keys.double() @ free.T).abs().max()


def test_preserving_solve_pulls_the_streams_drift_back_at_the_preserved_keys():
    torch.manual_seed(1)
    keys = torch.randn(3, 12, dtype=torch.float64)
    preserved = torch.randn(5, 12, dtype=torch.float64)
    held = 1e4 * preserved.T @ preserved
    drift = torch.randn(4, 12, dtype=torch.float64)          # the stream's change D so far, (out, in)
    shifts = torch.zeros(3, 4, dtype=torch.float64)
    still = preserving_solve(keys, shifts, 1e-6, held)
    assert still.abs().max() < 1e-9                           # nothing asked, nothing written
    pulled = preserving_solve(keys, shifts, 1e-6, held, held @ drift.T)
    torch.testing.assert_close(pulled @ preserved.T, -drift @ preserved.T, atol=1e-3, rtol=1e-3)


def test_locft_preservation_penalty_is_the_relative_output_change_squared():
    from keditlab.methods.locft_bf import preservation_penalty
    torch.manual_seed(2)
    anchor = torch.randn(4, 6)
    keys = torch.randn(10, 6)
    second_moment = keys.T @ keys / len(keys)
    assert float(preservation_penalty(anchor, anchor, second_moment)) == 0.0
    assert float(preservation_penalty(2 * anchor, anchor, second_moment)) == pytest.approx(1.0, rel=1e-5)
    moved = anchor + 0.1 * torch.randn(4, 6)
    expected = ((keys @ (moved - anchor).T) ** 2).sum() / ((keys @ anchor.T) ** 2).sum()
    assert float(preservation_penalty(moved, anchor, second_moment)) == pytest.approx(float(expected), rel=1e-4)
    # its gradient is autograd's for the plain formula (the one product it keeps for it is the value's)
    weight = moved.clone().requires_grad_(True)
    preservation_penalty(weight, anchor, second_moment).backward()
    plain = moved.clone().requires_grad_(True)
    (((plain - anchor) @ second_moment * (plain - anchor)).sum() / (anchor @ second_moment * anchor).sum()).backward()
    torch.testing.assert_close(weight.grad, plain.grad, rtol=1e-5, atol=1e-7)


def test_ultraedit_restored_out_of_order_takes_its_own_share_back(tokenizer):
    model = _tiny()
    profile = derive_profile(model)
    context = EditContext()
    first = get_method("ultraedit").apply(model, tokenizer, profile, CASES[:2], {}, context)
    first_only = next(iter(context.memory["ultraedit"]["earlier"].values())).clone()
    second = get_method("ultraedit").apply(model, tokenizer, profile, CASES[2:], {}, context)
    both = next(iter(context.memory["ultraedit"]["earlier"].values())).clone()
    first.restore()   # not the latest: its tokens are subtracted, the second batch's stay
    moments = next(iter(context.memory["ultraedit"]["moments"].values()))
    assert moments.keys.count == second.details["tokens"]
    layer = second.details["layers"][0]
    held = context.memory["ultraedit"]["earlier"][layer]     # the keys later batches hold: now the second batch's only
    assert torch.allclose(held, both - first_only, atol=1e-3 * float(both.abs().max()))
    second.restore()
    assert context.memory["ultraedit"]["moments"] == {} and context.memory["ultraedit"]["live"] == []


def test_ultraedit_paper_step_is_absolute_and_tiny_on_a_small_model(tokenizer):
    """lr sets the paper's η directly; value_scale derives it from the layer's output norm."""
    model = _tiny()
    profile = derive_profile(model)
    with get_method("ultraedit").apply(model, tokenizer, profile, CASES, {"lr": 1e-6}) as handle:
        assert all(entry["step"] == 1e-6 for entry in handle.details["per_layer"])
    with get_method("ultraedit").apply(model, tokenizer, profile, CASES, {"value_scale": 0.5}) as handle:
        for entry in handle.details["per_layer"]:
            assert entry["shift_norm"] == pytest.approx(0.5 * entry["output_norm"], rel=0.5)


def test_locft_bf_trains_on_the_target_and_eos_breadth_first(tokenizer):
    ids, mask, labels = masked_batch(tokenizer, CASES, "cpu", eos=True)
    for row, case in enumerate(CASES):
        answer = [t for t in labels[row].tolist() if t != -100]
        assert answer[-1] == tokenizer.eos_token_id and len(answer) == len(tokenizer(" " + case.target, add_special_tokens=False)["input_ids"]) + 1
    model = _tiny()
    # per_edit: the mean of each edit's mean token NLL, from the full logits
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels[:, 1:], ignore_index=-100, reduction="none")
        counts = (labels[:, 1:] != -100).sum(1)
        expected = (token.sum(1) / counts).mean()
        torch.testing.assert_close(masked_nll(model, (ids, mask, labels), per_edit=True), expected, rtol=1e-4, atol=1e-4)
    profile = derive_profile(model)
    handle = get_method("locft-bf").apply(model, tokenizer, profile, CASES, {"epochs": 4, "mini_batch_size": 2, "lr": 1e-2, "preserve": 0})
    assert handle.details["layers"] == [2] and handle.details["epochs"] == 4
    assert handle.details["steps"] == 8   # two mini-batches per epoch, every edit visited once per epoch
    assert handle.details["loss_last"] < handle.details["loss_first"]
    handle.restore()


def test_locft_keep_earlier_holds_the_earlier_calls_keys_and_restores_them(tokenizer):
    from keditlab.models.tokens import encode_answer

    model = _tiny()
    profile = derive_profile(model)
    before = _params(model)
    context = EditContext()
    settings = {"epochs": 3, "mini_batch_size": 1, "lr": 1e-2, "keep_earlier": 100.0}
    method = get_method("locft-bf")
    first = method.apply(model, tokenizer, profile, CASES[:2], settings, context)
    earlier = context.memory["locft-bf"]["earlier"]
    # one key per predicted token: each target's tokens and the EOS after it
    assert earlier[2][1] == sum(len(encode_answer(tokenizer, c.target)) + 1 for c in CASES[:2])
    held_first = earlier[2]
    second = method.apply(model, tokenizer, profile, CASES[2:], settings, context)
    assert earlier[2][1] == held_first[1] + len(encode_answer(tokenizer, CASES[2].target)) + 1
    second.restore()
    assert earlier[2] is held_first
    first.restore()
    assert earlier == {} and _same(model, before)


def test_locft_tunes_several_layers_together_each_with_its_own_step_and_memory(tokenizer):
    model = _tiny()
    profile = derive_profile(model)
    before = _params(model)
    context = EditContext(unrelated=(("nq question: who wrote hamlet", "William Shakespeare"),))
    settings = {"layers": [2, 1], "epochs": 3, "mini_batch_size": 1, "preserve": 1, "keep_earlier": 10.0}
    first = get_method("locft-bf").apply(model, tokenizer, profile, CASES[:2], settings, context)
    tuned = {f"{profile.mlp_out_module(layer)}.weight" for layer in (1, 2)}
    assert first.details["layers"] == [1, 2] and set(first.details["parameters"]) == tuned
    changed = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert changed == tuned                                   # both matrices move, nothing else
    for layer in (1, 2):                                      # each at 1% of its own weight's RMS
        rms = float(before[f"{profile.mlp_out_module(layer)}.weight"].float().pow(2).mean().sqrt())
        assert first.details["lr"][layer] == pytest.approx(0.01 * rms)
    memory = context.memory["locft-bf"]
    assert set(memory["anchors"]) == {1, 2} and set(memory["earlier"]) == {1, 2}
    assert set(first.details["preserved_change"]) == {1, 2} and all(v > 0 for v in first.details["preserved_change"].values())
    second = get_method("locft-bf").apply(model, tokenizer, profile, CASES[2:], settings, context)
    second.restore()
    first.restore()
    assert memory["earlier"] == {} and _same(model, before)


@pytest.mark.parametrize("config_class,params,message", [
    (UltraEditConfig, {"ridge": 0}, r"ridge: 0 is out of range; it must be > 0"),
    (UltraEditConfig, {"value_scale": -1.0}, r"value_scale: -1\.0 is out of range; it must be > 0"),
    (UltraEditConfig, {"lr": 0.0}, r"lr: 0\.0 is out of range; it must be > 0"),
    (UltraEditConfig, {"forward_batch_size": 0}, r"forward_batch_size: 0 is out of range; it must be >= 1"),
    (LocFTConfig, {"mini_batch_size": 0}, r"mini_batch_size: 0 is out of range; it must be >= 1"),
    (LocFTConfig, {"epochs": 0}, r"epochs: 0 is out of range; it must be >= 1"),
    (LocFTConfig, {"keep_earlier": -1.0}, r"keep_earlier: -1\.0 is out of range; it must be >= 0"),
    (LocFTConfig, {"lr": -1e-3}, r"lr: -0\.001 is out of range; it must be > 0"),
    (LocFTConfig, {"early_stop_loss": -1.0}, r"early_stop_loss: -1\.0 is out of range; it must be >= 0"),
])
def test_bad_settings_are_one_clear_error(config_class, params, message):
    with pytest.raises(MethodConfigError, match=message):
        config_class.from_params(params)


def test_layers_outside_the_model_or_empty_are_named(tokenizer):
    model = _tiny(layers=2)
    profile = derive_profile(model)
    with pytest.raises(MethodConfigError, match=r"layers: layer 5 is outside this model's layers 0\.\.1"):
        get_method("ultraedit").apply(model, tokenizer, profile, CASES, {"layers": [0, 5]})
    with pytest.raises(MethodConfigError, match=r"layers: the list is empty"):
        get_method("ultraedit").apply(model, tokenizer, profile, CASES, {"layers": []})
    with pytest.raises(MethodConfigError, match=r"layers: layer 2 is outside this model's layers 0\.\.1"):
        get_method("locft-bf").apply(model, tokenizer, profile, CASES, {"layers": [2]})
    with pytest.raises(MethodConfigError, match=r"layers: the list is empty"):
        get_method("locft-bf").apply(model, tokenizer, profile, CASES, {"layers": []})


def test_preserved_keys_from_question_answer_pairs_are_read_where_the_answers_are_predicted(tokenizer):
    from keditlab.methods.adaptors import preserved_keys
    from keditlab.models.tokens import encode_prompt_answer

    model = _tiny()
    profile = derive_profile(model)
    module = model.get_submodule(profile.mlp_out_module(1))
    pairs = [("nq question: who wrote the hobbit", "J. R. R. Tolkien"), ("who sings hey jude", "The Beatles")]
    held = preserved_keys(model, tokenizer, {1: module}, count=8, seed=0, pairs=pairs)[1]
    seen = []
    hook = module.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].detach().double()))
    rows = []
    try:
        for prompt, answer in pairs:   # each pair alone: the prompt's last token, then every answer token but the last
            prompt_ids, answer_ids = encode_prompt_answer(tokenizer, prompt, answer)
            with torch.no_grad():
                model(input_ids=torch.tensor([prompt_ids + answer_ids[:-1]]))
            rows.append(seen[-1][0, len(prompt_ids) - 1: len(prompt_ids) - 1 + len(answer_ids)])
    finally:
        hook.remove()
    keys = torch.cat(rows)
    torch.testing.assert_close(held.double(), keys.T @ keys / len(keys), rtol=1e-5, atol=1e-6)
    # at most `count` pairs are read
    one = preserved_keys(model, tokenizer, {1: module}, count=1, seed=0, pairs=pairs)[1]
    torch.testing.assert_close(one.double(), rows[0].T @ rows[0] / len(rows[0]), rtol=1e-5, atol=1e-6)
