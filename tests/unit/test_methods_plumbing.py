"""Method plumbing on tiny random models of several families (fast; not proof that a method works).

What is checked: every method runs on every supported architecture (including
GPT-2's transposed ``Conv1D``), changes only the parameters it says it changes,
and ``restore()`` makes every parameter bit-identical again.  ROME's update is
also checked algebraically: after the edit the edited projection maps the key
``k*`` to the optimised value ``v*``.
"""

from __future__ import annotations

import pytest
import torch

from keditlab.methods import EditContext, MethodConfigError, get_method, method_names
from keditlab.models import derive_profile
from keditlab.spec.types import EditCase
from keditlab.stats import CovarianceProvider
from tests.conftest import make_tiny_model

CASE = EditCase(
    prompt="The Eiffel Tower is located in the city of",
    subject="Eiffel Tower",
    target="Rome",
    ground_truth="Paris",
    case_id="eiffel",
)


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
    paragraphs = [
        f"Paragraph {i}: the city of Paris has museums, the river flows past bridges, and people walk in parks "
        f"while trains arrive from towns number {i * 7} and {i * 13}."
        for i in range(200)
    ]
    path.write_text("\n\n".join(paragraphs), encoding="utf-8")
    return str(path)


SECOND = EditCase(
    prompt="The Colosseum stands in the city of",
    subject="Colosseum",
    target="Berlin",
    case_id="colosseum",
)


def _tiny(model_type: str, layers: int = 2):
    depth = {"n_layer": layers} if model_type in ("gpt2", "gptj") else {"num_hidden_layers": layers}
    return make_tiny_model(model_type, vocab_size=49152, **depth)


def _all_params(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_registry_names_and_did_you_mean():
    assert {"rome", "ft-l", "ft-m"} <= set(method_names())
    with pytest.raises(KeyError, match="Did you mean 'rome'"):
        get_method("rom")


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gpt_neox", "gptj"])
@pytest.mark.parametrize("method", ["rome", "r-rome", "ft-l", "ft-m", "memit", "emmet", "alphaedit"])
def test_edit_changes_only_its_weights_and_restores_exactly(model_type, method, tokenizer, corpus_file, tmp_path, monkeypatch):
    monkeypatch.setenv("KEDITLAB_CACHE", str(tmp_path))
    model = _tiny(model_type, layers=3)
    profile = derive_profile(model)
    before = _all_params(model)
    context = EditContext(covariance=CovarianceProvider(model, tokenizer, profile, corpus=corpus_file, num_tokens=2000, max_length=32))
    if method in ("rome", "r-rome"):
        settings = {"v_steps": 3, "context_templates": 2}
    elif method in ("memit", "emmet", "alphaedit"):
        settings = {"v_steps": 3, "context_templates": 2, "layers": [0, 1]}
    else:
        settings = {"steps": 3}
    cases = [CASE, SECOND] if get_method(method).capabilities.batch else [CASE]
    handle = get_method(method).apply(model, tokenizer, profile, cases, settings, context)

    after = dict(model.named_parameters())
    changed = {name for name in before if not torch.equal(before[name], after[name].detach())}
    assert changed == set(handle.changed_parameters)
    assert changed, "the edit wrote nothing"
    assert all(".mlp." in name for name in changed)
    assert all(v > 0 for v in handle.delta_norms().values())

    handle.restore()
    for name, param in model.named_parameters():
        assert torch.equal(param.detach(), before[name]), name
    assert all(p.requires_grad for p in model.parameters()), "requires_grad flags must be put back"


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_rome_maps_key_to_value(model_type, tokenizer, corpus_file, tmp_path, monkeypatch):
    """The rank-one update adds exactly the optimised δ at every context's key (up to float error)."""
    from keditlab.methods import rome

    monkeypatch.setenv("KEDITLAB_CACHE", str(tmp_path))
    model = _tiny(model_type, layers=3)  # an edited layer with a layer above it, so δ reaches the answer positions
    profile = derive_profile(model)
    provider = CovarianceProvider(model, tokenizer, profile, corpus=corpus_file, num_tokens=2000, max_length=32)
    layer = 1
    module = model.get_submodule(profile.mlp_out_module(layer))
    captured = {}
    real_optimise, real_keys = rome.optimise_value, rome.subject_keys

    def spy(*args, **kwargs):
        delta, info = real_optimise(*args, **kwargs)
        captured["delta"] = delta
        return delta, info

    def spy_keys(*args, **kwargs):
        keys, texts, positions = real_keys(*args, **kwargs)
        with torch.no_grad():
            captured["keys"], captured["values"] = keys, module(keys)
        return keys, texts, positions

    monkeypatch.setattr(rome, "optimise_value", spy)
    monkeypatch.setattr(rome, "subject_keys", spy_keys)
    handle = get_method("rome").apply(model, tokenizer, profile, [CASE], {"layer": layer, "v_steps": 5, "context_templates": 2}, EditContext(covariance=provider))
    assert captured["keys"].shape[0] == 3  # the bare prompt and two prefixes
    assert captured["delta"].norm() > 0
    with torch.no_grad():
        change = module(captured["keys"]) - captured["values"]
    torch.testing.assert_close(change, captured["delta"].expand_as(change), rtol=2e-2, atol=2e-3)
    assert provider.described and provider.described[0]["corpus"].startswith("local:")
    handle.restore()


def test_key_direction_forms(tmp_path):
    """contexts: uᵀkᵢ = 1 for every key; prompt: uᵀk₀ = 1; mean: uᵀk̄ = 1; an unknown form is named."""
    from keditlab.methods.keyvalue import key_direction

    torch.manual_seed(0)
    samples = torch.randn(500, 16, dtype=torch.float64)
    covariance = samples.T @ samples / 500
    keys = torch.randn(1, 16, dtype=torch.float64) + 0.3 * torch.randn(4, 16, dtype=torch.float64)
    u = key_direction(keys, covariance, "contexts", solve_ridge=0.0)
    torch.testing.assert_close(keys @ u, torch.ones(4, dtype=torch.float64))
    assert float(keys[0] @ key_direction(keys, covariance, "prompt")) == pytest.approx(1.0)
    assert float(keys.mean(0) @ key_direction(keys, covariance, "mean")) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="update_keys must be one of contexts, prompt, mean"):
        key_direction(keys, covariance, "average")


def test_layer_out_of_range_is_a_clear_error(tokenizer):
    model = _tiny("llama")
    profile = derive_profile(model)
    with pytest.raises(MethodConfigError, match=r"layer 7 is outside this model's layers 0\.\.1"):
        get_method("rome").apply(model, tokenizer, profile, [CASE], {"layer": 7}, EditContext(covariance=lambda layer: None))
    with pytest.raises(MethodConfigError, match="unknown setting"):
        get_method("ft-m").apply(model, tokenizer, profile, [CASE], {"step": 3})


def test_handle_as_context_manager_restores(tokenizer):
    model = _tiny("llama")
    profile = derive_profile(model)
    before = _all_params(model)
    with get_method("ft-m").apply(model, tokenizer, profile, [CASE], {"steps": 2}) as handle:
        assert not handle.restored
        assert any(not torch.equal(before[n], p.detach()) for n, p in model.named_parameters())
    assert handle.restored
    assert all(torch.equal(before[n], p.detach()) for n, p in model.named_parameters())


@pytest.mark.parametrize("method, lr_share, bound_share", [("ft-m", 0.0055, None), ("ft-l", 0.011, 0.011)])
def test_fine_tuning_steps_are_set_against_the_size_of_the_weights(method, lr_share, bound_share, tokenizer):
    """Empty lr (and FT-L's bound) are shares of the tuned matrix's RMS: scale the matrix, and they scale with it."""
    model = _tiny("llama")
    profile = derive_profile(model)
    name = profile.mlp_out_parameter(0)
    weight = dict(model.named_parameters())[name]
    with torch.no_grad():
        weight.mul_(10.0 / float(weight.pow(2).mean().sqrt()))   # RMS exactly 10
    config = {"steps": 3, "layers": [0]}
    with get_method(method).apply(model, tokenizer, profile, [CASE], config) as handle:
        assert handle.details["lr"] == [pytest.approx(10 * lr_share, rel=1e-5)]
        assert handle.details["norm_constraint"] == [None if bound_share is None else pytest.approx(10 * bound_share, rel=1e-5)]
        if bound_share is not None:
            moved = (weight.detach() - handle.originals[name]).abs().max()
            assert 0 < moved <= 10 * bound_share * (1 + 1e-5)
    with get_method(method).apply(model, tokenizer, profile, [CASE], {**config, "lr": 0.5, "norm_constraint": 0.25}) as handle:
        assert handle.details["lr"] == [0.5] and handle.details["norm_constraint"] == [0.25]


def test_layer_lists_are_checked_and_the_runner_names_the_method():
    from keditlab.runner.run import RunError, _config_for
    from keditlab.spec.types import MethodSpec

    with pytest.raises(MethodConfigError, match=r"layers: layer 30 is outside this model's layers 0\.\.29\. Fix: choose layers between 0 and 29"):
        get_method("ft-m").config_class.from_params({"layers": [3, 30]}).check_layers(30)
    with pytest.raises(RunError, match=r"method 'rome-deep': layer: layer 40 is outside"):
        _config_for(get_method("rome"), MethodSpec("rome", {"layer": 40}, "rome-deep"), 30)
    assert _config_for(get_method("rome"), MethodSpec("rome", {"layer": 28}), 30).layer == 28
    # the last layer cannot carry a change at the subject to the answer: refused before any work
    with pytest.raises(RunError, match=r"method 'rome': layer: layer 29 is the model's last layer.*Fix: choose layers below 29"):
        _config_for(get_method("rome"), MethodSpec("rome", {"layer": 29}), 30)
    with pytest.raises(RunError, match=r"method 'memit': layers: layer 29 is the model's last layer"):
        _config_for(get_method("memit"), MethodSpec("memit", {"layers": [27, 28, 29]}), 30)


def test_a_setting_outside_its_choices_is_named_before_any_work():
    """Settings with declared choices are checked when the config is made, for Python callers as for specs."""
    from keditlab.methods.rome import RomeConfig

    with pytest.raises(MethodConfigError, match=r"update_keys: 'average' is not one of contexts, prompt, mean\. Fix: .*'contexts'"):
        RomeConfig.from_params({"update_keys": "average"})
    with pytest.raises(MethodConfigError, match="update_keys"):
        RomeConfig(update_keys="average")
    assert RomeConfig(update_keys="prompt").update_keys == "prompt"
