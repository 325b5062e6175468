"""The MEMIT family's solvers, the batched value optimisation and AlphaEdit's memory (tiny models and plain algebra).

Fast checks of the mathematics each module claims in its docstring; whether
the methods write real edits is checked on the embedded model
(``tests/integration/test_memit_family_real.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from keditlab.methods import EditContext, EditHandle, get_method
from keditlab.methods.layers import memit_window as default_layers
from keditlab.methods.memit import MemitConfig
from keditlab.methods.emmet import EmmetConfig
from keditlab.methods.alphaedit import AlphaEditConfig
from keditlab.stats.covariance import CovarianceStats
from keditlab.stats.nullspace import null_space


def _problem(seed=0, mlp=24, hidden=8, n=5):
    g = torch.Generator().manual_seed(seed)
    k0 = torch.randn(400, mlp, generator=g, dtype=torch.float64) * torch.linspace(0.05, 2.0, mlp, dtype=torch.float64)
    cov = k0.T @ k0 / len(k0)
    keys = torch.randn(n, mlp, generator=g, dtype=torch.float64)
    gaps = torch.randn(n, hidden, generator=g, dtype=torch.float64)
    return cov, keys, gaps


def _handle():
    return EditHandle("test", torch.nn.Linear(1, 1), {})


def test_memit_solve_is_the_regularised_least_squares():
    cov, keys, gaps = _problem()
    update = get_method("memit").solve(0, keys, gaps, cov, MemitConfig(covariance_weight=3.0), EditContext(), _handle())
    # the normal equations of  min ‖ΔW Kᵀ − Rᵀ‖² + λ tr(ΔW C ΔWᵀ)
    assert torch.allclose(update @ (3.0 * cov + keys.T @ keys), gaps.T @ keys, atol=1e-9)
    # a small λ writes the gaps almost exactly, a huge one barely at all
    nearly = get_method("memit").solve(0, keys, gaps, cov, MemitConfig(covariance_weight=1e-6), EditContext(), _handle())
    assert torch.allclose(keys @ nearly.T, gaps, atol=1e-3)
    weak = get_method("memit").solve(0, keys, gaps, cov, MemitConfig(covariance_weight=1e6), EditContext(), _handle())
    assert (keys @ weak.T).norm() < 1e-3 * gaps.norm()


def test_emmet_solve_meets_the_equality_constraint_with_least_disturbance():
    cov, keys, gaps = _problem()
    update = get_method("emmet").solve(0, keys, gaps, cov, EmmetConfig(solve_ridge=0.0), EditContext(), _handle())
    assert torch.allclose(keys @ update.T, gaps, atol=1e-8)
    # any other solution (add a change that is zero at the keys) disturbs C more
    g = torch.Generator().manual_seed(1)
    other = torch.randn(update.shape, generator=g, dtype=torch.float64)
    other = other - other @ keys.T @ torch.linalg.solve(keys @ keys.T, keys)   # zero at the keys
    cost = lambda w: torch.trace(w @ cov @ w.T)  # noqa: E731
    assert cost(update) < cost(update + 0.1 * other)


def test_null_space_projector_and_alphaedit_memory(tmp_path):
    cov, keys, gaps = _problem()
    stats = CovarianceStats(0, cov.float(), 400, "test", str(tmp_path / "layer0.pt"), False)
    space = null_space(stats, 0.05)
    p = space.projector.double()
    assert torch.allclose(p @ p, p, atol=1e-5) and torch.allclose(p, p.T, atol=1e-6)
    assert 0 < space.dimensions < cov.shape[0]
    assert float(torch.trace(p @ cov) / torch.trace(cov)) <= 0.05 + 1e-6   # the preserved keys' energy inside it
    assert null_space(stats, 0.05).loaded_from_cache                      # cached beside the covariance
    for damage in (b"", b"PK\x03\x04 cut short"):                        # a damaged cache file: computed again
        Path(space.path).write_bytes(damage)
        healed = null_space(stats, 0.05)
        assert not healed.loaded_from_cache and torch.equal(healed.projector, space.projector)
    saved = torch.load(space.path, weights_only=True)
    saved["projector"][0, 0] = float("nan")
    torch.save(saved, space.path)
    assert torch.equal(null_space(stats, 0.05).projector, space.projector)
    assert null_space(stats, 0.05).loaded_from_cache
    with pytest.raises(ValueError, match="between 0 and 1"):
        null_space(stats, 1.5)

    class Provider:
        def null_space(self, layer, energy):
            return space.projector

    context = EditContext(covariance=Provider())
    first, second = _handle(), _handle()
    update = get_method("alphaedit").solve(0, keys, gaps, cov, AlphaEditConfig(), context, first)
    assert torch.allclose(update @ (torch.eye(len(p), dtype=p.dtype) - p), torch.zeros_like(update), atol=1e-6), "the update lives in the null space"
    get_method("alphaedit").solve(0, keys[:2], gaps[:2], cov, AlphaEditConfig(), context, second)
    memory = context.memory["alphaedit"]
    assert torch.allclose(memory[0], keys.T @ keys + keys[:2].T @ keys[:2])
    second.restore()
    first.restore()
    assert torch.allclose(memory[0], torch.zeros_like(memory[0]), atol=1e-9), "restoring the edits forgets their keys"


def test_default_layers_follow_the_depth():
    assert default_layers(30) == [1, 2, 3, 4, 5]
    assert default_layers(48) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert default_layers(2) == [0]
    assert all(0 <= layer < n for n in (1, 2, 6, 12, 24, 30, 48) for layer in default_layers(n))


def test_batched_values_equal_one_at_a_time(tokenizer_and_model):
    """Optimising two requests together gives what each gets alone: the rows never interact."""
    from keditlab.methods.keyvalue import ValueRequest, ValueSettings, optimise_values
    from keditlab.models.tokens import subject_last_token

    tokenizer, model, profile = tokenizer_and_model
    module = model.get_submodule(profile.mlp_out_module(0))
    settings = ValueSettings(steps=4, lr=0.5, weight_decay=0.05, kl_factor=0.0625, clamp_norm_factor=4.0, early_stop_loss=0.0)
    requests = []
    for prompt, subject, target in [("The Eiffel Tower is in", "Eiffel Tower", " Rome"), ("Danielle Darrieux speaks", "Danielle Darrieux", " English")]:
        texts = ["", "Hello there. "]
        texts = [t + prompt for t in texts]
        positions = [subject_last_token(tokenizer, t, subject, search_from=t.index(prompt)) for t in texts]
        requests.append(ValueRequest(subject, target, texts, positions))
    for p in model.parameters():
        p.requires_grad_(False)
    together, _ = optimise_values(model, tokenizer, module, profile.hidden_size, requests, settings)
    alone = torch.stack([optimise_values(model, tokenizer, module, profile.hidden_size, [r], settings)[0][0] for r in requests])
    assert together.abs().sum() > 0
    assert torch.allclose(together, alone, atol=1e-4), (together - alone).abs().max()


@pytest.fixture(scope="module")
def tokenizer_and_model():
    from transformers import AutoTokenizer

    from keditlab.models import derive_profile
    from keditlab.models.embedded import ensure_embedded_cache
    from tests.conftest import make_tiny_model

    tok = AutoTokenizer.from_pretrained(ensure_embedded_cache())
    tok.pad_token = tok.pad_token or tok.eos_token
    model = make_tiny_model("llama", vocab_size=49152, num_hidden_layers=3)
    return tok, model, derive_profile(model)


def test_out_of_range_settings_are_clear_errors_in_specs_and_in_python():
    from keditlab.methods import MethodConfigError
    from tests.unit.test_spec_errors import only_error

    error = only_error("""
        keditlab: 1
        name: t
        model: smollm2-135m
        method: [{name: alphaedit, null_space_energy: 1.5}]
        edits: [{prompt: The Eiffel Tower is in, subject: Eiffel Tower, target: Rome}]
    """)
    assert error.line == 5 and "null_space_energy must be > 0 and < 1, got 1.5" in error.message
    with pytest.raises(MethodConfigError, match=r"v_steps: 0 is out of range; it must be >= 1"):
        MemitConfig(v_steps=0)
    with pytest.raises(MethodConfigError, match="keys: 'median' is not one of contexts, mean"):
        MemitConfig(keys="median")


def _small_corpus_context(model, tokenizer, profile, folder):
    """An ``EditContext`` whose key statistics come from a small written corpus (1,000 tokens) in ``folder``."""
    from keditlab.stats import CovarianceProvider

    corpus = folder / "corpus.txt"
    corpus.write_text("\n\n".join(f"Paragraph {i}: trains arrive from towns number {i * 7}." for i in range(300)), encoding="utf-8")
    return EditContext(covariance=CovarianceProvider(model, tokenizer, profile, corpus=str(corpus), num_tokens=1000, max_length=32))


@pytest.mark.parametrize("settings", [{"keys": "mean"}, {"value_norm_anchor": True}, {"stop_when": "most_probable"}])
def test_settings_forms_run_and_restore(tokenizer_and_model, settings, tmp_path, monkeypatch):
    from keditlab.spec.types import EditCase

    monkeypatch.setenv("KEDITLAB_CACHE", str(tmp_path))
    tokenizer, model, profile = tokenizer_and_model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    context = _small_corpus_context(model, tokenizer, profile, tmp_path)
    cases = [EditCase("The Eiffel Tower is in", "Eiffel Tower", "Rome", case_id="a"),
             EditCase("Danielle Darrieux speaks", "Danielle Darrieux", "English", case_id="b")]
    with get_method("memit").apply(model, tokenizer, profile, cases, {"v_steps": 2, "context_templates": 1, "layers": [0, 1], **settings}, context) as handle:
        assert any(v > 0 for v in handle.delta_norms().values())
        assert [c["case_id"] for c in handle.details["cases"]] == ["a", "b"]
        assert all(len(c["target_reached"]) == 2 for c in handle.details["cases"])   # one per context
    assert all(torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())


@pytest.mark.parametrize("method,settings", [("memit", {"layers": [1, 2]}), ("rome", {"layer": 2})])
def test_editing_the_last_layer_is_a_clear_error(tokenizer_and_model, method, settings):
    from keditlab.methods import MethodConfigError

    tokenizer, model, profile = tokenizer_and_model
    with pytest.raises(MethodConfigError, match="layer 2 is the model's last layer.*Fix: choose layers below 2"):
        get_method(method).apply(model, tokenizer, profile, [], settings, EditContext(covariance=lambda layer: None))


@pytest.mark.parametrize("family,settings,spread", [("llama", {}, "even"), ("gemma3_text", {}, "by_output"),
                                                    ("gemma3_text", {"spread": "even"}, "even")])
def test_the_gap_is_shared_by_what_each_layer_adds_where_a_norm_follows_the_mlp(family, settings, spread, tmp_path, monkeypatch):
    """``spread: auto``: an even split on a Llama block; on a Gemma 3 block (post-feedforward norm) each layer's share follows its output's size."""
    from transformers import AutoTokenizer

    from keditlab.models import derive_profile
    from keditlab.models.embedded import ensure_embedded_cache
    from keditlab.spec.types import EditCase
    from tests.conftest import tiny_with_embedded_vocab

    monkeypatch.setenv("KEDITLAB_CACHE", str(tmp_path))
    tokenizer = AutoTokenizer.from_pretrained(ensure_embedded_cache())
    model = tiny_with_embedded_vocab(family)
    profile = derive_profile(model)
    context = _small_corpus_context(model, tokenizer, profile, tmp_path)
    case = EditCase("The Eiffel Tower is in", "Eiffel Tower", "Rome", case_id="a")
    with get_method("memit").apply(model, tokenizer, profile, [case], {"v_steps": 2, "context_templates": 1, "layers": [0, 1], **settings},
                                   context) as handle:
        shares = [entry["gap_share"] for entry in handle.details["per_layer"]]
        assert handle.details["spread"] == spread
        assert shares[-1] == 1.0                       # the last layer is asked for all that is left
        if spread == "even":
            assert shares[0] == 0.5
        else:
            assert 0 < shares[0] < 1 and shares[0] != 0.5
