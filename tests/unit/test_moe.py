"""Mixture-of-experts models (keditlab/models/experts.py) on tiny random Qwen3-MoE and Mixtral models.

Two families whose experts are fused 3-D parameters (transformers 5): hidden 32,
2 layers, 4 experts of width 16, top-2 routing, the embedded tokenizer's
vocabulary.  For every method: the edit runs, only the parameters it declares
change, the target's probability rises, and ``restore()`` gives every tensor
back bit for bit; or the method refuses, naming why and what to use instead,
at validation (before any weights load) and when applied.  For the
locate-then-edit methods also: only the down projections of the experts the
subject's last token is routed to change, the router is untouched, and the
routing of that token at the edited layer is the same after the edit.
"""

from __future__ import annotations

import json

import pytest
import torch

from keditlab.evaluate.teacher_forced import teacher_forced
from keditlab.methods import EditContext, MethodConfigError, get_method, method_names
from keditlab.models import derive_profile
from keditlab.models.experts import ExpertSite, routed_experts
from keditlab.models.tokens import encode_prompt, subject_last_token
from keditlab.spec.types import EditCase
from keditlab.stats import CovarianceProvider

FAMILIES = ("qwen3_moe", "mixtral")
CASE = EditCase(prompt="The Eiffel Tower is located in the city of", subject="Eiffel Tower", target="Rome",
                ground_truth="Paris", case_id="eiffel")
#: A random tiny model's MLP output is ~1e-3, so the value change needs room to reach the target (the clamp is
#: relative to it); the fine-tuning baselines get a larger step.  Settings only, nothing MoE-specific.
ROOM = {"clamp_norm_factor": 1000.0, "v_weight_decay": 0.0}
SETTINGS = {"rome": ROOM, "r-rome": ROOM, "memit": ROOM, "emmet": ROOM, "alphaedit": ROOM,
            "ft-l": {"lr": 1e-2, "norm_constraint": 1e-1}, "ft-m": {"lr": 1e-2}, "locft-bf": {"lr": 1e-2},
            "lora": {"steps": 20}, "adalora": {"steps": 20}, "wise": {"steps": 30, "lr": 0.05}, "ike": {"demonstrations": 2}}
LOCATE_THEN_EDIT = ("rome", "r-rome", "memit", "emmet", "alphaedit")
#: The methods that refuse sparse MoE models, each saying why (``refuses_moe`` on its class).
REFUSED = tuple(sorted(name for name in method_names() if get_method(name).refuses_moe))


def tiny_moe(family: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    sizes = {"qwen3_moe": dict(num_experts=4, moe_intermediate_size=16, intermediate_size=48, head_dim=8),
             "mixtral": dict(num_local_experts=4, intermediate_size=16)}[family]
    config = AutoConfig.for_model(family, vocab_size=49152, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, max_position_embeddings=128, num_experts_per_tok=2, **sizes)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from keditlab.models.embedded import ensure_embedded_cache

    tok = AutoTokenizer.from_pretrained(ensure_embedded_cache())
    tok.pad_token = tok.pad_token or tok.eos_token
    return tok


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text("\n\n".join(f"Paragraph {i}: the city of Paris has museums, the river flows past bridges, and people walk "
                                f"in parks while trains arrive from towns number {i * 7} and {i * 13}." for i in range(60)),
                    encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def models(tokenizer, corpus_file, tmp_path_factory):
    """One model, profile and statistics provider per family, shared by the tests (every edit is restored)."""
    import os

    saved = os.environ.get("KEDITLAB_CACHE")
    os.environ["KEDITLAB_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    built = {}
    for family in FAMILIES:
        model = tiny_moe(family)
        profile = derive_profile(model)
        built[family] = (model, profile, CovarianceProvider(model, tokenizer, profile, corpus=corpus_file, num_tokens=1500))
    yield built
    if saved is None:
        os.environ.pop("KEDITLAB_CACHE", None)
    else:
        os.environ["KEDITLAB_CACHE"] = saved


def _nll(model, tokenizer, prompt: str) -> float:
    return teacher_forced(model, tokenizer, [(prompt, CASE.target)])[0].total_nll


@pytest.mark.parametrize("family", FAMILIES)
def test_profile_recognises_the_experts_by_structure(family):
    model = tiny_moe(family)
    profile = derive_profile(model)
    assert profile.is_moe and profile.num_experts == 4 and profile.experts_per_token == 2 and profile.mlp_size == 16
    assert profile.mlp_out_module(1) == "model.layers.1.mlp"
    assert profile.mlp_out_parameter(1) == "model.layers.1.mlp.experts.down_proj"
    assert profile.router.format(layer=0) == "model.layers.0.mlp.gate"
    assert profile.mlp_out_input_size == 32
    assert tuple(profile.mlp_out_weight(model, 0).shape) == (4, 32, 16)


def test_a_dense_profile_has_no_experts():
    from tests.conftest import make_tiny_model

    profile = derive_profile(make_tiny_model("llama"))
    assert not profile.is_moe and profile.expert_out is None and profile.mlp_out_input_size == profile.mlp_size
    assert profile.mlp_out_parameter(0) == "model.layers.0.mlp.down_proj.weight"


@pytest.mark.parametrize("family", FAMILIES)
def test_experts_output_is_the_concatenated_down_projection_times_the_gate_weighted_keys(family, tokenizer):
    """``Σ g_e W_e k_e`` = ``W̃ k̃``: the key–value reading the locate-then-edit methods solve in."""
    from keditlab.methods.keyvalue import read_at_subjects

    model = tiny_moe(family)
    profile = derive_profile(model)
    site = ExpertSite(profile, model, 0)
    position = subject_last_token(tokenizer, CASE.prompt, CASE.subject)
    keys, _ = read_at_subjects(model, tokenizer, [CASE.prompt], [position], site)
    assert keys.shape == (1, 4 * 16)
    seen = {}
    from keditlab.models.hooks import hooks

    with hooks(forward=[(site.key_module, lambda _m, _i, out: seen.setdefault("out", out))]), torch.no_grad():
        model(input_ids=torch.tensor([encode_prompt(tokenizer, CASE.prompt)]))
    assert torch.allclose(site.weight(model) @ keys[0], seen["out"][position], atol=1e-6)
    assert len(site.touched_by(keys).units) == 2   # top-2: two experts' blocks are non-zero


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", sorted(set(method_names()) - set(REFUSED)))
def test_method_edits_only_what_it_declares_and_restores_exactly(family, method, models, tokenizer):
    model, profile, covariance = models[family]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    ids = torch.tensor([encode_prompt(tokenizer, CASE.prompt)])
    position = subject_last_token(tokenizer, CASE.prompt, CASE.subject)
    routing = {layer: routed_experts(model, profile, layer, ids, position) for layer in range(profile.num_layers)}
    nll_before = _nll(model, tokenizer, CASE.prompt)
    settings = SETTINGS.get(method, {})
    if get_method(method).trainer_class is not None:   # a trained editor (SERAC): an archive trained for this model
        from tests.unit.test_architecture_matrix import fast

        settings = fast(method, model, tokenizer, profile)
    handle = get_method(method).apply(model, tokenizer, profile, [CASE], settings, EditContext(covariance=covariance))
    try:
        params = dict(model.named_parameters())
        changed = {name for name, p in params.items() if not torch.equal(p, before[name])}
        assert changed <= set(handle.changed_parameters)
        nll_after = _nll(model, tokenizer, handle.context(CASE.prompt) if handle.context else CASE.prompt)
        assert nll_after < nll_before, f"{method} on {family}: target NLL {nll_before:.4f} -> {nll_after:.4f}"
        if method in LOCATE_THEN_EDIT:
            edited = [layer for layer in range(profile.num_layers) if profile.mlp_out_parameter(layer) in changed]
            assert edited and changed == {profile.mlp_out_parameter(layer) for layer in edited}   # router, attention untouched
            first = edited[0]
            name = profile.mlp_out_parameter(first)
            moved = [e for e in range(profile.num_experts) if not torch.equal(params[name][e], before[name][e])]
            assert moved and set(moved) <= set(routing[first])   # only the experts the subject is routed to
            assert routed_experts(model, profile, first, ids, position) == routing[first]   # its routing unchanged
    finally:
        handle.restore()
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())


@pytest.mark.parametrize("method", REFUSED)
def test_refused_methods_say_why_when_applied(method, models, tokenizer):
    model, profile, covariance = models["mixtral"]
    with pytest.raises(MethodConfigError, match="mixture-of-experts.*Use "):
        get_method(method).apply(model, tokenizer, profile, [CASE], {}, EditContext(covariance=covariance))


def test_refused_methods_are_refused_at_validation_before_any_weights_load(tmp_path):
    from keditlab.models import peek_num_layers
    from keditlab.models.peek import peek_config
    from keditlab.spec import validate_dict

    folder = tmp_path / "moe-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "mixtral", "num_hidden_layers": 2, "num_local_experts": 8}))
    spec = {"keditlab": 1, "name": "moe", "model": str(folder), "method": ["rome", "kn", "ultraedit"],
            "edits": [{"prompt": CASE.prompt, "subject": CASE.subject, "target": CASE.target}]}
    errors = validate_dict(spec, num_layers_of=peek_num_layers, model_config_of=peek_config)
    refused = [e for e in errors if "8 experts" in e.message]
    assert len(refused) == 2 and all("rome" in e.fix and "alphaedit" in e.fix for e in refused), refused
    assert sorted(e.path for e in refused) == ["method[1]", "method[2]"], [e.path for e in refused]
    assert all("dense MLP" in e.message for e in refused)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 2}))
    assert not validate_dict(spec, num_layers_of=peek_num_layers, model_config_of=peek_config)
