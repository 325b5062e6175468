"""IKE, LoRA, AdaLoRA and KN plumbing on tiny random models (fast; whether they edit is checked on the real model
in tests/integration/test_survey_methods_real.py).

What is checked: each method leaves the model's module tree, requires_grad flags and weights as they were once
restored (IKE never touches a weight; its context is gone once restored), the peft adapters are merged and unloaded,
the evaluator reads IKE's context before every prompt and records it, and each bad setting is one clear error.
"""

from __future__ import annotations

import json

import pytest
import torch

from keditlab.evaluate import measure
from keditlab.methods import EditContext, MethodConfigError, get_method
from keditlab.models import derive_profile
from keditlab.spec.types import EditCase, EvalSpec, Probe
from tests.conftest import tiny_with_embedded_vocab as _tiny

CASE = EditCase(prompt="The Eiffel Tower is located in the city of", subject="Eiffel Tower", target="Rome",
                ground_truth="Paris", rephrase=("Where is the Eiffel Tower? In",),
                locality=(Probe("locality", "The capital of Japan is", "Tokyo"),), case_id="eiffel")
OTHER = EditCase(prompt="The Colosseum stands in the city of", subject="Colosseum", target="Berlin", case_id="colosseum")
FAST = {"lora": {"steps": 3}, "adalora": {"steps": 6}, "kn": {"steps": 2, "max_doublings": 1}, "ike": {"demonstrations": 2}}



def _state(model):
    tree = [(name, type(module).__name__) for name, module in model.named_modules()]
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    return tree, flags, {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
@pytest.mark.parametrize("method", ["lora", "adalora", "kn", "ike"])
def test_edit_then_restore_gives_back_the_model_bit_for_bit(method, model_type, tokenizer):
    model = _tiny(model_type)
    profile = derive_profile(model)
    tree, flags, weights = _state(model)
    handle = get_method(method).apply(model, tokenizer, profile, [CASE], FAST[method], EditContext())
    tree_after, flags_after, _ = _state(model)
    assert tree_after == tree, "no adapter module may stay in the model"
    assert flags_after == flags
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, weights[n])]
    if method == "ike":
        assert changed == [] and handle.originals == {}
        assert "New Fact: The Eiffel Tower is located in the city of Rome" in handle.context(CASE.prompt)
    else:
        assert changed and set(changed) <= set(handle.originals), "the edit changes weights, all of them snapshotted"
    handle.restore()
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())
    if method == "ike":
        assert handle.context(CASE.prompt) == ""


def test_adalora_prunes_towards_its_rank(tokenizer):
    model = _tiny()
    handle = get_method("adalora").apply(model, tokenizer, derive_profile(model), [CASE],
                                         {"steps": 10, "init_rank": 6, "rank": 2}, EditContext())
    assert handle.details["ranks"], "AdaLoRA reports the rank each adapter kept"
    assert all(rank <= 6 for rank in handle.details["ranks"].values())
    handle.restore()


def test_ike_context_is_read_before_every_probe_and_recorded(tokenizer):
    model = _tiny()
    before = measure(model, tokenizer, [CASE], EvalSpec(metrics=("reliability", "generalization", "locality")))
    with get_method("ike").apply(model, tokenizer, derive_profile(model), [CASE], {"demonstrations": 1}, EditContext()) as handle:
        after = measure(model, tokenizer, [CASE], EvalSpec(metrics=("reliability", "generalization", "locality")),
                        reference=before, context=handle.context)[0]
    assert before[0].contexts == {}
    assert set(after.contexts) == {CASE.prompt, *CASE.rephrase, "The capital of Japan is"}
    assert all(c.endswith("Prompt: ") and "New Fact:" in c for c in after.contexts.values())
    assert [p.prompt for p in after.probes] == [p.prompt for p in before[0].probes], "results keep the bare prompts"


def test_ike_retrieves_the_nearest_stored_fact_and_forgets_what_is_restored(tokenizer):
    model = _tiny()
    profile, context = derive_profile(model), EditContext()
    ike = get_method("ike")
    first = ike.apply(model, tokenizer, profile, [CASE], {"demonstrations": 0}, context)
    second = ike.apply(model, tokenizer, profile, [OTHER], {"demonstrations": 0}, context)
    assert second.details["facts_stored"] == 2
    assert second.context(OTHER.prompt).count("New Fact:") == 1, "facts: 1 places the one nearest fact"
    assert "Berlin" in second.context(OTHER.prompt)
    second.restore()
    assert "Berlin" not in first.context(OTHER.prompt) and "Rome" in first.context(OTHER.prompt)
    first.restore()


def test_ike_never_shows_a_demonstration_about_the_edited_subject(tokenizer, tmp_path):
    pool = tmp_path / "pool.json"
    records = [{"prompt": f"{s} is located in", "subject": s, "target_new": "Oslo", "rephrase_prompt": f"Where is {s}?",
                "locality": {"n": {"prompt": "The capital of Japan is", "ground_truth": "Tokyo"}}}
               for s in ("Eiffel Tower", "Big Ben", "Louvre")]
    pool.write_text(json.dumps(records))
    model = _tiny()
    handle = get_method("ike").apply(model, tokenizer, derive_profile(model), [CASE],
                                     {"demonstrations": 3, "pool": str(pool)}, EditContext())
    assert sorted(handle.details["demonstrations"]["eiffel"]) == ["1", "2"]


@pytest.mark.parametrize("method, params, words", [
    ("lora", {"rank": 0}, ["rank", ">= 1"]),
    ("adalora", {"rank": 0}, ["rank", ">= 1"]),
    ("lora", {"alpha": 0}, ["alpha", "> 0"]),
    ("lora", {"target_modules": ["mlp.down_prj"]}, ["'mlp.down_prj' is not a linear module", "Did you mean 'mlp.down_proj'?"]),
    ("adalora", {"init_rank": 2, "rank": 4}, ["init_rank", "Fix"]),
    ("adalora", {"steps": 2}, ["steps", "Fix"]),
    ("ike", {"pool": "/nowhere/pool.json"}, ["pool", "could not be read", "Fix"]),
    ("ike", {"embedding": "/nowhere/sentence-model"}, ["embedding", "not available offline", "Fix"]),
    ("ike", {"roles": ["copy", "forget"]}, ["roles", "forget", "Fix"]),
    ("kn", {"threshold": 0}, ["threshold", "> 0"]),
])
def test_bad_settings_are_one_clear_error(method, params, words, tokenizer):
    model = _tiny()
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(MethodConfigError) as err:
        get_method(method).apply(model, tokenizer, derive_profile(model), [CASE], params, EditContext())
    for word in words:
        assert word in str(err.value)
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters()), "a refused edit changes nothing"
    assert not any("lora" in name for name, _ in model.named_modules())


def test_the_comparison_spec_runs_every_registered_method(shared_datasets):
    """specs/compare_methods.yaml is "every method on the same ten edits": a new method must be added to it."""
    from pathlib import Path

    from keditlab.methods import method_names
    from keditlab.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[2] / "specs" / "compare_methods.yaml")
    assert sorted(m.name for m in spec.methods) == method_names()
    assert len(spec.edits) == 10 and all(c.rephrase and c.locality and c.portability for c in spec.edits)


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gemma3_text"])
def test_kn_attributions_on_the_cached_prefix_equal_those_of_whole_prompts(model_type, tokenizer):
    """KN runs a prompt's prefix once and the scaled last token on its key-value cache; the integrated gradients
    must be those of the paper's computation, where every scaled copy runs the whole prompt."""
    from keditlab.methods.kn import _attributions

    model = _tiny(model_type)
    profile = derive_profile(model)
    prompts, answer, steps = [CASE.prompt, CASE.rephrase[0]], 7, 4
    got = _attributions(model, tokenizer, profile, prompts, answer, [0, 2], steps)
    assert all(p.grad is None for p in model.parameters()), "no weight gradient is left behind"
    model.requires_grad_(False)
    for layer in (0, 2):
        module = model.get_submodule(profile.mlp_out_module(layer))
        for row, prompt in enumerate(prompts):
            ids = torch.tensor([tokenizer(prompt)["input_ids"]] * steps)
            seen = {}
            handle = module.register_forward_pre_hook(lambda _m, args: seen.setdefault("a", args[0][0, -1].detach()))
            with torch.no_grad():
                model(input_ids=ids[:1])
            handle.remove()
            scaled = (torch.arange(1, steps + 1)[:, None] / steps * seen["a"][None]).requires_grad_(True)

            def replace(_m, args):
                x = args[0].clone()
                x[:, -1] = scaled
                return (x,)

            handle = module.register_forward_pre_hook(replace)
            model(input_ids=ids).logits[:, -1].log_softmax(-1)[:, answer].sum().backward()
            handle.remove()
            want = seen["a"] * scaled.grad.mean(0)
            assert torch.allclose(got[layer][row], want, rtol=1e-4, atol=1e-6 * float(want.abs().max()))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_setting_is_refused_by_the_config(value):
    with pytest.raises(MethodConfigError, match="is not a finite number"):
        get_method("memit").config_class.from_params({"covariance_ridge": value})
