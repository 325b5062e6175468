"""derive_profile on tiny random models of every supported family."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from transformers import LlamaConfig, PretrainedConfig

from keditlab.models import ModelProfile, ProfileError, UnknownArchitectureError, derive_profile
from tests.conftest import make_tiny_model

EXPECTED = {
    "llama": ("model.layers", "model.layers.{layer}.mlp.down_proj", "model.norm", "model.embed_tokens", 64, False),
    "qwen2": ("model.layers", "model.layers.{layer}.mlp.down_proj", "model.norm", "model.embed_tokens", 64, False),
    "mistral": ("model.layers", "model.layers.{layer}.mlp.down_proj", "model.norm", "model.embed_tokens", 64, False),
    "gpt2": ("transformer.h", "transformer.h.{layer}.mlp.c_proj", "transformer.ln_f", "transformer.wte", 128, True),
    "gptj": ("transformer.h", "transformer.h.{layer}.mlp.fc_out", "transformer.ln_f", "transformer.wte", 128, False),
    "gpt_neox": (
        "gpt_neox.layers",
        "gpt_neox.layers.{layer}.mlp.dense_4h_to_h",
        "gpt_neox.final_layer_norm",
        "gpt_neox.embed_in",
        64,
        False,
    ),
}


@pytest.mark.parametrize("model_type", sorted(EXPECTED))
def test_profile_of_known_families(model_type: str) -> None:
    model = make_tiny_model(model_type, n_layer=3) if model_type in ("gpt2", "gptj") else make_tiny_model(
        model_type, num_hidden_layers=3
    )
    layers, mlp_out, final_norm, embed, mlp_size, transposed = EXPECTED[model_type]
    profile = derive_profile(model)
    assert profile == ModelProfile(
        architecture=model_type,
        num_layers=3,
        hidden_size=32,
        mlp_size=mlp_size,
        layers=layers,
        mlp_out=mlp_out,
        final_norm=final_norm,
        lm_head="lm_head",
        embed=embed,
        mlp_out_transposed=transposed,
    )
    # Paths resolve to the modules they claim to be.
    assert len(model.get_submodule(profile.layers)) == 3
    assert model.get_submodule(profile.layer_module(2)) is model.get_submodule(profile.layers)[2]
    assert model.get_submodule(profile.lm_head) is model.get_output_embeddings()
    assert model.get_submodule(profile.embed) is model.get_input_embeddings()
    assert isinstance(model.get_submodule(profile.final_norm), nn.LayerNorm) or "Norm" in type(
        model.get_submodule(profile.final_norm)
    ).__name__
    # Weight shapes agree with the sizes and the transposition flag.
    for layer in range(3):
        weight = model.get_submodule(profile.mlp_out_module(layer)).weight
        expected = (mlp_size, 32) if transposed else (32, mlp_size)
        assert tuple(weight.shape) == expected


def test_profile_does_not_depend_on_the_name() -> None:
    model = make_tiny_model("llama")
    model.config._name_or_path = "gpt2"  # a misleading name changes nothing
    assert derive_profile(model).mlp_out == "model.layers.{layer}.mlp.down_proj"


class _OddConfig(PretrainedConfig):
    model_type = "odd"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size = 16
        self.depth = 2  # not a key keditlab knows


class _OddModel(nn.Module):
    """A made-up architecture: blocks in a Sequential, no layer count in its config."""

    def __init__(self) -> None:
        super().__init__()
        self.config = _OddConfig()
        self.tok = nn.Embedding(50, 16)
        self.stack = nn.Sequential(*[nn.Sequential(nn.Linear(16, 48), nn.GELU(), nn.Linear(48, 16)) for _ in range(2)])
        self.post = nn.LayerNorm(16)
        self.out = nn.Linear(16, 50, bias=False)

    def get_input_embeddings(self) -> nn.Module:
        return self.tok

    def get_output_embeddings(self) -> nn.Module:
        return self.out


def test_unknown_architecture_says_what_to_write() -> None:
    with pytest.raises(UnknownArchitectureError) as info:
        derive_profile(_OddModel())
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "model.profile" in message
    for key in ("layers", "mlp_out", "{layer}", "final_norm", "lm_head", "embed", "mlp_out_transposed"):
        assert key in message
    assert "stack" in message and "post" in message  # the top-level modules are listed


def test_override_describes_an_unknown_architecture() -> None:
    model = _OddModel()
    profile = derive_profile(
        model,
        {"layers": "stack", "mlp_out": "stack.{layer}.2", "final_norm": "post", "lm_head": "out", "embed": "tok"},
    )
    assert profile.num_layers == 2 and profile.hidden_size == 16 and profile.mlp_size == 48
    assert profile.architecture == "odd" and profile.mlp_out_transposed is False
    assert model.get_submodule(profile.mlp_out_module(1)) is model.stack[1][2]


def test_override_replaces_a_derived_field() -> None:
    model = make_tiny_model("llama")
    profile = derive_profile(model, {"final_norm": "model.layers.1.post_attention_layernorm"})
    assert profile.final_norm == "model.layers.1.post_attention_layernorm"
    assert profile.mlp_out == "model.layers.{layer}.mlp.down_proj"


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"final_norm": "model.no_such_norm"}, "model.profile.final_norm"),
        ({"mlp_out": "model.layers.{layer}.mlp.nope"}, "model.profile.mlp_out"),
        ({"mlp_out": "model.layers.0.mlp.down_proj"}, "{layer}"),
        ({"layers": "model.embed_tokens"}, "model.profile.layers"),
        ({"lm_head": "head"}, "model.profile.lm_head"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_wrong_override_names_the_key(override: dict, needle: str) -> None:
    with pytest.raises(ProfileError) as info:
        derive_profile(make_tiny_model("llama"), override)
    assert needle in str(info.value)


def test_importing_models_and_peek_leaves_torch_out() -> None:
    code = (
        "import sys\n"
        "import keditlab.models\n"
        "from keditlab.models.peek import peek_num_layers\n"
        "peek_num_layers('no-such-org/no-such-model')\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'transformers' not in sys.modules, 'transformers was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_peek_num_layers_reads_a_local_config(tmp_path) -> None:
    from keditlab.models import peek_num_layers

    LlamaConfig(num_hidden_layers=7).save_pretrained(tmp_path)
    assert peek_num_layers(str(tmp_path)) == 7
    assert peek_num_layers(str(tmp_path / "missing")) is None


def test_dtype_and_device_resolution() -> None:
    from keditlab.models.loader import resolve_device, resolve_dtype

    assert resolve_dtype(None) is torch.float32
    assert resolve_dtype("auto") is torch.float32
    assert resolve_dtype("bf16") is torch.bfloat16
    assert resolve_dtype(torch.float16) is torch.float16
    with pytest.raises(ValueError):
        resolve_dtype("float13")
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
