"""T-Patcher on tiny random models (fast; the real-model check, beside GRACE and WISE, is tests/integration/test_lifelong_adaptors_real.py).

What is checked: an edit adds neurons beside the feed-forward block and never
touches a weight; the target's probability rises; each neuron fires at its
edit's position and stays silent on the unrelated text it was trained against
(the memory loss does its job); a stream adds one neuron per mistaken target
token (one per one-token edit), restoring last-first gives back the model bit
for bit, out of order is a clear error; an edit the model already makes adds
no neuron; several edits in one call share one handle; the feed-forward block
is found from the profile on every kind of family; saved edits load again bit for bit.
"""

from __future__ import annotations

import pytest
import torch

from keditlab.methods import EditContext, get_method
from keditlab.methods.adaptors import AdaptorOrderError, answer_positions, ffn_module, read_inputs
from keditlab.methods.tpatcher import NeuronPatches, TPatcher, TPatcherConfig
from keditlab.models import derive_profile
from keditlab.models.tokens import encode_answer, encode_prompt_answer
from keditlab.spec.types import EditCase
from tests.conftest import make_tiny_model

FIRST = EditCase(prompt="The Eiffel Tower is located in the city of", subject="Eiffel Tower", target="Rome", case_id="eiffel")
SECOND = EditCase(prompt="The Colosseum stands in the city of", subject="Colosseum", target="Berlin", case_id="colosseum")
THIRD = EditCase(prompt="Mount Fuji is a mountain in the country of", subject="Mount Fuji", target="Brazil", case_id="fuji")
#: Quick settings: few sampled texts (the steps keep their defaults: on a tiny model they take well under a second).
FAST = {"unrelated": 4}


def _tiny(model_type: str = "llama"):
    """A tiny random model with the embedded tokenizer's vocabulary, weights drawn wide enough to move in a few steps."""
    model = make_tiny_model(model_type, vocab_size=49152, **({"n_layer": 3} if model_type == "gpt2" else {"num_hidden_layers": 3}),
                            initializer_range=0.2)
    return model, derive_profile(model)


def _logprob(model, tokenizer, case: EditCase) -> float:
    """log P(target | prompt), teacher-forced over all the target's tokens."""
    prompt, answer = encode_prompt_answer(tokenizer, case.prompt, case.target)
    with torch.no_grad():
        logprobs = model(input_ids=torch.tensor([prompt + answer])).logits[0].float().log_softmax(-1)
    return float(sum(logprobs[len(prompt) - 1 + i, token] for i, token in enumerate(answer)))


def _says(model, tokenizer, case: EditCase) -> bool:
    """Whether every target token is the most probable one, teacher-forced (the reliability check)."""
    prompt, answer = encode_prompt_answer(tokenizer, case.prompt, case.target)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + answer[:-1]])).logits[0, len(prompt) - 1:]
    return logits.argmax(-1).tolist() == answer


def _state(model):
    """Module tree with hook counts, parameters, buffers and state_dict keys: what restore() must give back."""
    tree = [(n, type(m).__name__, len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.named_modules()]
    return (tree, {n: p.detach().clone() for n, p in model.named_parameters()},
            {n: b.detach().clone() for n, b in model.named_buffers()}, list(model.state_dict()))


def _same(model, state) -> bool:
    tree, params, buffers, keys = _state(model)
    return (tree == state[0] and keys == state[3] and params.keys() == state[1].keys() and buffers.keys() == state[2].keys()
            and all(torch.equal(params[n], state[1][n]) for n in params) and all(torch.equal(buffers[n], state[2][n]) for n in buffers))


def test_the_default_layer_is_the_last_and_the_host_the_feed_forward_block():
    model, profile = _tiny()
    assert TPatcherConfig().resolved_layer(profile.num_layers) == profile.num_layers - 1
    assert TPatcher.host_module(profile, 2) == "model.layers.2.mlp"
    gpt2 = derive_profile(make_tiny_model("gpt2"))
    assert ffn_module(gpt2, 1) == "transformer.h.1.mlp"                      # the parent of mlp.c_proj
    opt = derive_profile(make_tiny_model("opt"))
    assert ffn_module(opt, 1) == opt.mlp_out_module(1)                       # fc1/fc2 sit in the decoder layer: the projection
    moe = derive_profile(make_tiny_model("mixtral"))
    assert ffn_module(moe, 1) == moe.mlp_out_module(1)                       # the MoE block itself
    plan = TPatcher.plan(profile, TPatcherConfig())
    assert plan.layers == (2,) and not plan.changes_weights and plan.copied == 0
    assert plan.changed == (("neuron per mistaken target token beside model.layers.2.mlp (key, bias, value)", 32 + 1 + 32),)


def test_an_edit_adds_a_neuron_that_fires_on_the_edit_and_not_on_unrelated_text(tokenizer):
    model, profile = _tiny()
    assert len(encode_answer(tokenizer, FIRST.target)) == 1
    state, before = _state(model), _logprob(model, tokenizer, FIRST)
    handle = get_method("t-patcher").apply(model, tokenizer, profile, [FIRST], FAST, EditContext(progress=False))
    host = model.get_submodule(handle.details["module"])
    patches = getattr(host, "t-patcher")
    assert isinstance(patches, NeuronPatches) and len(patches) == 1 and patches.labels == [" Rome"]
    assert handle.changed_parameters == [] and handle.details["module"] == "model.layers.2.mlp"
    assert all(torch.equal(p.detach(), state[1][n]) for n, p in model.named_parameters()), "a weight was changed"
    assert _logprob(model, tokenizer, FIRST) > before + 1.0 and _says(model, tokenizer, FIRST)
    model.train()                                       # train()/eval() reach the adaptor as any module: nothing changes
    model.eval()
    assert _says(model, tokenizer, FIRST)
    # the neuron's activation at the position that predicts the target, against every query of the unrelated memory
    edit = read_inputs(model, tokenizer, {2: host}, *answer_positions(tokenizer, [(FIRST.prompt, FIRST.target)]))[2].float()
    at_edit = edit @ patches.keys.T + patches.biases
    on_unrelated = patches.unrelated @ patches.keys.T + patches.biases
    assert len(patches.unrelated) > 100                 # 4 sampled texts and the 96 shipped prompts, every token
    assert float(at_edit.min()) > 0 >= float(on_unrelated.max()), (at_edit, on_unrelated.max())
    # the memory loss did that: the key as it started (the edit's query over its squared norm) fired on most of them
    start = patches.unrelated @ (edit[0] / edit[0].dot(edit[0]))
    assert float((start > 0).float().mean()) > 0.5
    case = handle.details["cases"][0]
    assert case["neurons"] == 1 and case["positions"] == [0]
    handle.restore()
    assert _same(model, state)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_a_stream_adds_one_neuron_per_edit_and_restores_last_first_bit_for_bit(model_type, tokenizer):
    model, profile = _tiny(model_type)
    state = _state(model)
    with torch.no_grad():
        probe = torch.tensor([encode_prompt_answer(tokenizer, SECOND.prompt, SECOND.target)[0]])
        logits = model(input_ids=probe).logits.clone()
    context = EditContext(progress=False)
    handles = [get_method("t-patcher").apply(model, tokenizer, profile, [case], FAST, context) for case in (FIRST, SECOND, THIRD)]
    patches = getattr(model.get_submodule(handles[0].details["module"]), "t-patcher")
    assert [h.details["neurons"] for h in handles] == [1, 2, 3]               # found again and extended: one neuron each
    assert len(patches.undo_stack) == 3 and patches.labels == [" Rome", " Berlin", " Brazil"]
    assert len(patches.edit_queries) == 3                                      # each edit's position joins the memory
    assert all(_says(model, tokenizer, case) for case in (FIRST, SECOND, THIRD))   # the earlier edits are kept

    with pytest.raises(AdaptorOrderError, match="restore edits last-first"):
        handles[0].restore()
    handles[2].restore()
    assert len(patches) == 2 and len(patches.edit_queries) == 2              # exactly the last edit's share taken back
    handles[1].restore()
    handles[0].restore()
    assert not hasattr(model.get_submodule(handles[0].details["module"]), "t-patcher")
    assert _same(model, state)
    with torch.no_grad():
        assert torch.equal(model(input_ids=probe).logits, logits)
    assert all(p.requires_grad for p in model.parameters()), "requires_grad flags must be put back"


def test_an_edit_the_model_already_makes_adds_no_neuron_and_a_call_of_several_edits_one_handle(tokenizer):
    model, profile = _tiny()
    state = _state(model)
    context = EditContext(progress=False)
    first = get_method("t-patcher").apply(model, tokenizer, profile, [FIRST], FAST, context)
    again = get_method("t-patcher").apply(model, tokenizer, profile, [FIRST], FAST, context)   # already said: no mistake
    assert again.details["cases"][0] == {"case_id": "eiffel", "neurons": 0, "positions": []}
    both = get_method("t-patcher").apply(model, tokenizer, profile, [SECOND, THIRD], FAST, context)
    assert both.details["neurons"] == 3 and [c["neurons"] for c in both.details["cases"]] == [1, 1]
    for handle in (both, again, first):
        handle.restore()
    assert _same(model, state)


def test_saved_edits_load_again_bit_for_bit(tokenizer, tmp_path):
    from keditlab.methods.saved import load_edits, save_edits

    model, profile = _tiny()
    state = _state(model)

    def now():
        patches = [m for m in model.modules() if isinstance(m, NeuronPatches)]
        with torch.no_grad():
            return [p.state_digest() for p in patches], model(input_ids=torch.tensor([[1, 50, 300, 7, 900]])).logits.clone()

    context = EditContext(progress=False)
    first = get_method("t-patcher").apply(model, tokenizer, profile, [FIRST], FAST, context)
    save_edits([first], tmp_path / "first", method="t-patcher", settings=FAST, cases=[FIRST.case_id])
    second = get_method("t-patcher").apply(model, tokenizer, profile, [SECOND], FAST, context)
    save_edits([second], tmp_path / "second", method="t-patcher", settings=FAST, cases=[SECOND.case_id])
    edited = now()
    second.restore()
    first.restore()
    assert _same(model, state)

    loaded = [load_edits(model, tmp_path / "first"), load_edits(model, tmp_path / "second")]
    digests, logits = now()
    assert digests == edited[0] and torch.equal(logits, edited[1])
    patches = next(m for m in model.modules() if isinstance(m, NeuronPatches))
    assert len(patches) == 2 and patches.value_scale > 0 and len(patches.edit_queries) == 2
    for handle in reversed(loaded):
        handle.restore()
    assert _same(model, state)
