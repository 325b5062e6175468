"""The architecture matrix's families: tiny random configs of each, and what is special about each.

Every method is run on a tiny randomly initialised model of each family here
(``tests/unit/test_architecture_matrix.py``), and ``docs/models.md`` shows the
result (:mod:`keditlab.devtools.models_doc`).  A family is named by its
config's ``model_type``; its tiny config keeps what makes the family itself
(GPT-2's ``Conv1D``, OPT-350m's narrower embeddings and post-norm blocks,
Phi-3's fused gate and up projection, Gemma's extra norms) and shrinks the
rest: hidden size 32, two layers, four heads.  Nothing in keditlab reads this
table: a model is recognised by its structure (:mod:`keditlab.models.derive`).
"""

from __future__ import annotations

from typing import Any

#: The Llama-like core most families share: hidden 32, MLP 64, 2 layers, 4 query and 2 key-value heads.
_CORE: dict[str, Any] = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=128)
#: Special tokens inside any vocabulary (some families' defaults lie beyond a tiny one).
_TOKENS: dict[str, Any] = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)

#: ``model_type`` -> (what is special about it, tiny config settings).  Dense families: one MLP per block.
DENSE_FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "gpt2": ("Conv1D weights, stored (in, out)",
             dict(n_embd=32, n_layer=2, n_head=4, n_positions=128, bos_token_id=0, eos_token_id=0)),
    "gptj": ("parallel attention and MLP, partial rotary",
             dict(n_embd=32, n_layer=2, n_head=4, n_positions=128, rotary_dim=4, bos_token_id=0, eos_token_id=0)),
    "gpt_neox": ("parallel residual, fused QKV",
                 dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      max_position_embeddings=128)),
    "opt": ("tokens flattened before the MLP; as OPT-350m: embeddings narrower than the blocks (project_in/out), "
            "post-norm blocks, no final norm",
            dict(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128,
                 word_embed_proj_dim=16, do_layer_norm_before=False, **_TOKENS)),
    "bloom": ("ALiBi positions, fused QKV", dict(hidden_size=32, n_layer=2, n_head=4, **_TOKENS)),
    "falcon": ("parallel attention, multi-query", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, **_TOKENS)),
    "llama": ("gated MLP, grouped-query attention", dict(_CORE)),
    "mistral": ("sliding-window attention", dict(_CORE)),
    "qwen2": ("QKV biases", dict(_CORE)),
    "qwen3": ("query and key norms", dict(_CORE, head_dim=8)),
    "gemma2": ("norms before and after the MLP, logit soft-capping", dict(_CORE, head_dim=8, **_TOKENS)),
    "gemma3_text": ("norms before and after the MLP, local and global attention", dict(_CORE, head_dim=8, **_TOKENS)),
    "phi3": ("fused gate and up projection", dict(_CORE, **_TOKENS)),
    "olmo2": ("norms after attention and MLP, query and key norms", dict(_CORE, **_TOKENS)),
}

#: Mixture-of-experts families: each block routes its MLP through several experts.
MOE_FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "qwen3_moe": ("mixture of experts",
                  dict(_CORE, head_dim=8, moe_intermediate_size=16, num_experts=4, num_experts_per_tok=2, **_TOKENS)),
    "mixtral": ("mixture of experts", dict(_CORE, num_local_experts=4, num_experts_per_tok=2, **_TOKENS)),
}

FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {**DENSE_FAMILIES, **MOE_FAMILIES}


def tiny_config_dict(family: str, **overrides: Any) -> dict[str, Any]:
    """The tiny config's settings of ``family`` (vocabulary 128 unless ``overrides`` says otherwise), as plain data."""
    return {"model_type": family, "vocab_size": 128, **FAMILIES[family][1], **overrides}


def tiny_model(family: str, seed: int = 0, **overrides: Any) -> Any:
    """A tiny randomly initialised causal LM of ``family`` (seeded), in eval mode."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = tiny_config_dict(family, **overrides)
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()
