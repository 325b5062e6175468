"""Half precision on tiny random models: the dtype plumbing (keditlab/models/precision.py).

Edits of a bfloat16 model write only their declared parameters, keep every
parameter in bfloat16, leave a model that runs, and restore bit for bit,
whether the edit computes in bfloat16 (a GPU, a CPU with bfloat16 arithmetic)
or on a float32 upcast (a CPU without it); optimisers keep float32 master
copies; float16 on a CPU is refused at load; statistics belong to the
checkpoint, not to the dtype it was loaded in.
"""

from __future__ import annotations

import copy

import pytest
import torch

from keditlab.methods import EditContext, get_method
from keditlab.models import derive_profile
from keditlab.models import precision
from keditlab.spec.types import EditCase
from keditlab.stats import CovarianceProvider
from tests.conftest import make_tiny_model

CASES = [
    EditCase(prompt="The Eiffel Tower is located in the city of", subject="Eiffel Tower", target="Rome",
             ground_truth="Paris", case_id="eiffel"),
    EditCase(prompt="The Colosseum stands in the city of", subject="Colosseum", target="Berlin", case_id="colosseum"),
]
SETTINGS = {
    "rome": {"v_steps": 3, "context_templates": 2},
    "memit": {"v_steps": 3, "context_templates": 2, "layers": [0, 1]},
    "ft-m": {"steps": 3},
    "grace": {},
}


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text("\n\n".join(f"Paragraph {i}: the city of Paris has museums, the river flows past bridges, and "
                                 f"trains arrive from towns number {i * 7} and {i * 13}." for i in range(200)), encoding="utf-8")
    return str(path)


def _tiny(model_type: str, dtype=torch.bfloat16):
    depth = {"n_layer": 3} if model_type == "gpt2" else {"num_hidden_layers": 3}
    return make_tiny_model(model_type, vocab_size=49152, **depth).to(dtype)


@pytest.mark.parametrize("float32_compute", [False, True], ids=["bf16-compute", "float32-upcast"])
@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
@pytest.mark.parametrize("method", ["rome", "memit", "ft-m", "grace"])
def test_bfloat16_edit_changes_only_its_weights_and_restores_exactly(method, model_type, float32_compute, tokenizer,
                                                                     corpus_file, tmp_path, monkeypatch):
    import keditlab.methods.base as base

    monkeypatch.setenv("KEDITLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(base, "needs_float32_compute", lambda _model: float32_compute)
    model = _tiny(model_type)
    profile = derive_profile(model)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    buffers = {name: b.dtype for name, b in model.named_buffers()}
    context = EditContext(covariance=CovarianceProvider(model, tokenizer, profile, corpus=corpus_file, num_tokens=2000, max_length=32))
    cases = CASES if get_method(method).capabilities.batch else CASES[:1]
    handle = get_method(method).apply(model, tokenizer, profile, cases, SETTINGS[method], context)

    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    after_buffers = {name: b.dtype for name, b in model.named_buffers()}
    assert {name: after_buffers[name] for name in buffers} == buffers   # rotary frequencies untouched (GRACE adds its own)
    changed = {name for name, p in model.named_parameters() if not torch.equal(before[name], p.detach())}
    assert changed == set(handle.changed_parameters)
    if get_method(method).capabilities.changes_weights:
        assert changed and all(".mlp." in name for name in changed)
        assert {t.dtype for t in handle.originals.values()} == {torch.bfloat16}
    ids = torch.tensor([tokenizer(CASES[0].prompt)["input_ids"]])
    with torch.no_grad():
        assert model(input_ids=ids).logits.dtype == torch.bfloat16   # the edited model (and any hook) runs in its dtype

    handle.restore()
    for name, param in model.named_parameters():
        assert torch.equal(param.detach(), before[name]), name


def test_float32_compute_upcasts_parameters_only_and_puts_them_back_bit_for_bit():
    model = _tiny("llama")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    identities = {name: id(p) for name, p in model.named_parameters()}
    buffers = {name: b.dtype for name, b in model.named_buffers()}
    with precision.float32_compute(model) as cast:
        assert {p.dtype for p in model.parameters()} == {torch.float32}
        assert set(cast) == set(before)
    assert {name: id(p) for name, p in model.named_parameters()} == identities
    assert {name: b.dtype for name, b in model.named_buffers()} == buffers
    for name, param in model.named_parameters():
        assert param.dtype == torch.bfloat16 and torch.equal(param.detach(), before[name]), name
    with precision.float32_compute(model, enabled=False) as cast:
        assert not cast and next(model.parameters()).dtype == torch.bfloat16


def test_master_weights_keep_steps_below_bfloat16_resolution():
    """Adam steps of 1e-3 on weights of 1.0 (bfloat16 spacing there: 2⁻⁷): lost without float32 masters, kept with them."""
    from keditlab.methods.finetune import adam_until

    plain = torch.ones(8, dtype=torch.bfloat16, requires_grad=True)
    optimiser = torch.optim.Adam([plain], lr=1e-3)
    for _ in range(5):
        optimiser.zero_grad()
        plain.float().sum().backward()
        optimiser.step()
    assert torch.equal(plain.detach(), torch.ones(8, dtype=torch.bfloat16))   # every step rounded away

    mastered = torch.ones(8, dtype=torch.bfloat16, requires_grad=True)
    adam_until([mastered], lambda: mastered.float().sum(), steps=5, lr=1e-3, early_stop_loss=-1e9)
    assert mastered.dtype == torch.bfloat16
    assert float(mastered.detach()[0]) == pytest.approx(0.995, abs=2e-3)   # 1 − 5 · 1e-3, rounded to bfloat16


def test_master_weights_take_in_what_after_step_writes():
    """FT-L's clamp writes into the model's tensor; the master follows it, so the next step starts from the clamp."""
    weights = precision.MasterWeights([torch.ones(4, dtype=torch.bfloat16)])
    with torch.no_grad():
        weights.masters[0].sub_(1e-3)                      # a step below the resolution: the model's tensor still says 1
        weights.push()
        weights.params[0][0] = 0.5                         # written from outside
    weights.absorb()
    assert float(weights.masters[0][0].detach()) == 0.5
    assert float(weights.masters[0][1].detach()) == pytest.approx(1 - 1e-3)   # untouched elements keep their float32 value


def test_float16_on_the_cpu_is_refused_at_load_with_the_fix():
    from keditlab.models import load_model
    from keditlab.models.loader import ModelLoadError

    with pytest.raises(ModelLoadError, match="bfloat16"):
        load_model("smollm2-135m", device="cpu", dtype="float16")
    assert precision.precision_problem(torch.float16, "cuda") is None
    assert precision.precision_problem(torch.bfloat16, "cpu") is None


def test_bfloat16_on_a_cpu_without_its_arithmetic_is_warned(monkeypatch):
    monkeypatch.setattr(precision, "native_bfloat16_cpu", lambda: False)
    assert precision.needs_float32_compute(_tiny("llama"))
    [warning] = precision.precision_warnings(_tiny("llama"))
    assert "float32" in warning and "Fix:" in warning
    assert precision.precision_warnings(_tiny("llama", torch.float32)) == []
    monkeypatch.setattr(precision, "native_bfloat16_cpu", lambda: True)
    assert not precision.needs_float32_compute(_tiny("llama"))
    assert precision.precision_warnings(_tiny("llama")) == []


def test_statistics_belong_to_the_checkpoint_not_its_dtype(tokenizer, corpus_file, tmp_path, monkeypatch):
    """A bfloat16 load of a checkpoint finds the float32 load's statistics."""
    from keditlab.stats import covariance as cov

    monkeypatch.setenv("KEDITLAB_CACHE", str(tmp_path))
    full = make_tiny_model("llama", vocab_size=49152, num_hidden_layers=3)
    half = copy.deepcopy(full).to(torch.bfloat16)
    half.config.dtype = torch.bfloat16   # what from_pretrained(dtype=bfloat16) records
    assert cov.model_fingerprint(full) == cov.model_fingerprint(half)

    module = derive_profile(full).mlp_out_module(1)
    first = cov.layer_covariance(full, tokenizer, module, 1, corpus=corpus_file, num_tokens=1500, max_length=32)
    again = cov.layer_covariance(half, tokenizer, module, 1, corpus=corpus_file, num_tokens=1500, max_length=32)
    assert not first.loaded_from_cache and again.loaded_from_cache and torch.equal(first.matrix, again.matrix)


def test_the_fingerprint_reads_every_weight_once_per_model():
    """Two checkpoints that share their embeddings but not a later weight have different keys (statistics never mix);
    an edit after the first fingerprint keeps the model's key (its statistics are still the checkpoint's)."""
    from keditlab.stats import covariance as cov

    base = make_tiny_model("llama", vocab_size=49152, num_hidden_layers=3)
    tuned = copy.deepcopy(base)
    base_key = cov.model_fingerprint(base)
    with torch.no_grad():
        tuned.model.layers[2].mlp.down_proj.weight.mul_(1.01)  # a fine-tune that left the embeddings alone
    assert torch.equal(tuned.get_input_embeddings().weight, base.get_input_embeddings().weight)
    assert cov.model_fingerprint(tuned) != base_key
    with torch.no_grad():
        base.model.layers[1].mlp.down_proj.weight.add_(0.5)     # an edit after the statistics were keyed
    assert cov.model_fingerprint(base) == base_key
    del base.keditlab_fingerprint
    assert cov.model_fingerprint(base) != base_key            # a fresh look sees the edited weights
