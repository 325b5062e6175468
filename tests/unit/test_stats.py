"""Key covariance statistics: correct second moment, cached on disk, clear errors for bad corpora."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from keditlab.models import derive_profile
from keditlab.stats import CorpusError, layer_covariance, load_corpus
from tests.conftest import make_tiny_model


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from keditlab.models.embedded import ensure_embedded_cache

    return AutoTokenizer.from_pretrained(ensure_embedded_cache())


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.txt").write_text("\n\n".join(f"Text {i}.{j}: rivers, cities and {j * i} old bridges stand here." for j in range(60)))
    return str(folder)


def test_covariance_is_the_second_moment_and_is_cached(tmp_path, monkeypatch, tokenizer, corpus):
    monkeypatch.setenv("KEDITLAB_CACHE", str(tmp_path / "cache"))
    model = make_tiny_model("llama", vocab_size=49152)
    module_name = derive_profile(model).mlp_out_module(1)

    first = layer_covariance(model, tokenizer, module_name, 1, corpus=corpus, num_tokens=1500, max_length=32)
    assert not first.loaded_from_cache and first.num_tokens >= 1500
    assert first.matrix.shape == (64, 64)
    torch.testing.assert_close(first.matrix, first.matrix.T)
    assert torch.linalg.eigvalsh(first.matrix.double()).min() > -1e-6

    # the same numbers by hand: E[k kᵀ] over every real token
    text = load_corpus(corpus, model, tokenizer, 1500, 32)
    keys = []
    hook = model.get_submodule(module_name).register_forward_pre_hook(lambda _m, inp: keys.append(inp[0][0]))
    with torch.no_grad():
        for seq in text.sequences:
            model(input_ids=torch.tensor([seq]))
    hook.remove()
    k = torch.cat(keys).double()
    torch.testing.assert_close(first.matrix.double(), k.T @ k / k.shape[0], rtol=1e-4, atol=1e-6)

    again = layer_covariance(model, tokenizer, module_name, 1, corpus=corpus, num_tokens=1500, max_length=32)
    assert again.loaded_from_cache and again.path == first.path
    assert torch.equal(again.matrix, first.matrix)
    other_layer = layer_covariance(model, tokenizer, derive_profile(model).mlp_out_module(0), 0, corpus=corpus, num_tokens=1500, max_length=32)
    assert other_layer.path != first.path


def test_model_samples_corpus_is_reproducible(tokenizer):
    model = make_tiny_model("llama", vocab_size=49152)
    a = load_corpus("model-samples", model, tokenizer, 200, 16, seed=3)
    b = load_corpus("model-samples", model, tokenizer, 200, 16, seed=3)
    assert a.sequences == b.sequences and a.num_tokens >= 200
    assert a.description.startswith("model-samples")


def test_unknown_corpus_says_what_is_accepted(tokenizer):
    model = make_tiny_model("llama", vocab_size=49152)
    with pytest.raises(CorpusError, match="neither 'model-samples', an existing local file or folder"):
        load_corpus("/no/such/folder", model, tokenizer, 100, 16)


def test_empty_folder_is_a_clear_error(tmp_path, tokenizer):
    model = make_tiny_model("llama", vocab_size=49152)
    with pytest.raises(CorpusError, match="holds no .txt or .md files"):
        load_corpus(str(tmp_path), model, tokenizer, 100, 16)


def test_split_half_difference_is_recorded_and_small_for_a_homogeneous_corpus(tmp_path, monkeypatch, tokenizer, corpus):
    monkeypatch.setenv("KEDITLAB_CACHE", str(tmp_path / "cache"))
    model = make_tiny_model("llama", vocab_size=49152)
    module_name = derive_profile(model).mlp_out_module(1)
    stats = layer_covariance(model, tokenizer, module_name, 1, corpus=corpus, num_tokens=3000, max_length=32, batch_size=4)
    assert 0 < stats.split_half_difference < 0.5
    assert stats.describe()["split_half_difference"] == stats.split_half_difference
    cached = layer_covariance(model, tokenizer, module_name, 1, corpus=corpus, num_tokens=3000, max_length=32, batch_size=4)
    assert cached.loaded_from_cache and cached.split_half_difference == stats.split_half_difference


def test_auto_token_count_is_ten_times_the_key_width():
    from keditlab.stats.covariance import resolve_num_tokens

    assert resolve_num_tokens("auto", 1536) == 15360
    assert resolve_num_tokens(5000, 1536) == 5000
    with pytest.raises(ValueError, match="positive number of tokens or 'auto'"):
        resolve_num_tokens("many", 1536)


def test_provider_counts_its_time_as_one_off_setup(tmp_path, monkeypatch, tokenizer, corpus):
    from keditlab.methods import EditContext
    from keditlab.stats import CovarianceProvider

    monkeypatch.setenv("KEDITLAB_CACHE", str(tmp_path / "cache"))
    model = make_tiny_model("llama", vocab_size=49152)
    profile = derive_profile(model)
    provider = CovarianceProvider(model, tokenizer, profile, corpus=corpus, num_tokens="auto", max_length=32)
    assert provider.num_tokens == 10 * profile.mlp_size
    context = EditContext(covariance=provider)
    provider(1)
    first = context.one_off_seconds()
    assert first > 0 and provider.described[0]["seconds"] > 0
    provider(1)  # already in memory: no new set-up time
    assert context.one_off_seconds() == first


def test_model_sampling_progress_moves_every_decoding_step(tokenizer, monkeypatch):
    """The bar must show a true rate from the start: one update per generated token step, not per batch."""
    import keditlab.stats.corpus as corpus_module

    updates = []

    class Bar:
        def __init__(self, *a, **k):
            self.n = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            updates.append(n)

        def refresh(self):
            pass

    monkeypatch.setattr("tqdm.auto.tqdm", Bar)
    model = make_tiny_model("llama", vocab_size=49152)
    text = corpus_module.load_corpus("model-samples", model, tokenizer, 48, 16, seed=0)
    assert text.num_tokens >= 48
    assert len(updates) >= 16  # at least one update per decoding step of the 16-token pieces


def test_corpus_is_sampled_in_bfloat16_only_where_the_cpu_does_it_natively(monkeypatch):
    import keditlab.stats.corpus as corpus_module

    model = make_tiny_model("llama", vocab_size=49152)
    monkeypatch.setattr(corpus_module, "_native_bfloat16_cpu", lambda: False)
    assert corpus_module._sampler(model) == (model, "float32")
    monkeypatch.setattr(corpus_module, "_native_bfloat16_cpu", lambda: True)
    sampler, dtype = corpus_module._sampler(model)
    assert dtype == "bfloat16" and sampler is not model
    assert next(sampler.parameters()).dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32  # the model itself is untouched


def test_several_layers_in_one_pass_equal_one_pass_per_layer(tmp_path, monkeypatch, tokenizer, corpus):
    """MEMIT's layers are read together: one forward per batch, the same matrices and cache files as one layer at a time."""
    from keditlab.stats import CovarianceProvider, layer_covariances

    model = make_tiny_model("llama", vocab_size=49152, num_hidden_layers=3)
    profile = derive_profile(model)
    names = {layer: profile.mlp_out_module(layer) for layer in (0, 2)}
    monkeypatch.setenv("KEDITLAB_CACHE", str(tmp_path / "apart"))
    apart = {layer: layer_covariance(model, tokenizer, name, layer, corpus=corpus, num_tokens=1500, max_length=32)
             for layer, name in names.items()}

    monkeypatch.setenv("KEDITLAB_CACHE", str(tmp_path / "together"))
    passes = []
    handle = model.model.embed_tokens.register_forward_hook(lambda *_: passes.append(1))
    try:
        layer_covariance(model, tokenizer, names[2], 2, corpus=corpus, num_tokens=1500, max_length=32)
        passes_one_layer = len(passes)
        passes.clear()
        (tmp_path / "together").joinpath("stats").mkdir(parents=True, exist_ok=True)
        for cached in (tmp_path / "together" / "stats").rglob("layer2-*.pt"):
            cached.unlink()   # both layers to compute
        together = layer_covariances(model, tokenizer, names, corpus=corpus, num_tokens=1500, max_length=32)
    finally:
        handle.remove()
    assert len(passes) == passes_one_layer, "two layers cost the forward passes of one"
    for layer in names:
        assert not together[layer].loaded_from_cache
        torch.testing.assert_close(together[layer].matrix, apart[layer].matrix, rtol=1e-6, atol=1e-7)
        assert together[layer].num_tokens == apart[layer].num_tokens
        assert Path(together[layer].path).name == Path(apart[layer].path).name   # the same cache key per layer

    provider = CovarianceProvider(model, tokenizer, profile, corpus=corpus, num_tokens=1500, max_length=32)
    passes.clear()
    handle = model.model.embed_tokens.register_forward_hook(lambda *_: passes.append(1))
    try:
        matrices = provider.for_layers([0, 2])   # both on disk now: loaded, nothing run
    finally:
        handle.remove()
    assert passes == [] and all(stats.loaded_from_cache for stats in provider.stats.values())
    assert torch.equal(matrices[2], provider(2))


@pytest.mark.parametrize("damage", ["cut short", "empty", "not finite", "corpus cut short"])
def test_a_damaged_cache_file_is_computed_again_not_used(tmp_path, monkeypatch, tokenizer, corpus, damage, capsys):
    monkeypatch.setenv("KEDITLAB_CACHE", str(tmp_path / "cache"))
    model = make_tiny_model("llama", vocab_size=49152)
    module_name = derive_profile(model).mlp_out_module(1)
    first = layer_covariance(model, tokenizer, module_name, 1, corpus=corpus, num_tokens=1500, max_length=32)
    path = Path(first.path)
    if damage == "cut short":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "not finite":
        saved = torch.load(path, weights_only=True)
        saved["matrix"][0, 0] = float("nan")
        torch.save(saved, path)
    else:   # the tokenized corpus beside it, and the statistics gone: the corpus is read again
        (corpus_file,) = path.parent.glob("corpus-*.pt")
        corpus_file.write_bytes(corpus_file.read_bytes()[:100])
        path.unlink()
    again = layer_covariance(model, tokenizer, module_name, 1, corpus=corpus, num_tokens=1500, max_length=32)
    assert not again.loaded_from_cache and torch.equal(again.matrix, first.matrix)
    assert "damaged" in capsys.readouterr().err
    assert layer_covariance(model, tokenizer, module_name, 1, corpus=corpus, num_tokens=1500, max_length=32).loaded_from_cache
