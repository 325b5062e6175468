"""Build a ``ModelProfile`` from a model's config and module tree.

Nothing here looks at the model's *name*: a fine-tuned, renamed or merged
checkpoint of a known family is recognised by its structure.

* **blocks**: the ``ModuleList`` whose length is the config's layer count;
* **MLP output**: the ``Linear`` (or GPT-2 ``Conv1D``) inside a block that maps
  the MLP width back to the hidden size; ``Conv1D`` stores its weight as
  (in, out), hence ``mlp_out_transposed``;
* **sparse mixture of experts** (:mod:`keditlab.models.experts`): a block
  whose MLP is a router plus fused experts; then ``mlp_out`` is the MoE block,
  ``expert_out`` the experts' fused down projection and ``mlp_size`` one
  expert's width;
* **final norm**: the normalisation module next to the blocks, registered
  after them (the order ``__init__`` creates modules in follows the forward);
  None when the model has no norm outside its blocks (post-norm models such as
  OPT-350m normalise inside each block);
* **LM head / embeddings**: ``get_output_embeddings()`` / ``get_input_embeddings()``.

Module paths are recovered by identity through ``named_modules()``.  Anything
that cannot be found can be supplied by the user in the spec's
``model.profile``; that ``override`` is validated against the real module tree.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from keditlab.models.errors import ProfileError, UnknownArchitectureError
from keditlab.models.profile import ModelProfile

if TYPE_CHECKING:
    import torch.nn as nn

PATH_KEYS = ("layers", "mlp_out", "final_norm", "lm_head", "embed")
"""Profile fields that are module paths; a user-given profile must name them."""

_HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model")
_MLP_KEYS = ("intermediate_size", "n_inner", "ffn_dim", "d_ff")
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
_MLP_NAME_HINTS = ("mlp", "ffn", "feed_forward", "feedforward", "ff")


def _config_int(config: Any, keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _projection_dims(module: nn.Module) -> tuple[int, int, bool] | None:
    """``(in_dim, out_dim, transposed)`` of a Linear or Conv1D, else None."""
    import torch.nn as nn

    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features, False
    weight = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and weight is not None and weight.dim() == 2:
        return int(weight.shape[0]), int(weight.shape[1]), True  # Conv1D: weight is (in, out)
    return None


def _is_norm(module: nn.Module) -> bool:
    import torch.nn as nn

    norm_types: tuple[type, ...] = (nn.LayerNorm, nn.GroupNorm)
    if hasattr(nn, "RMSNorm"):
        norm_types += (nn.RMSNorm,)
    return isinstance(module, norm_types) or "norm" in type(module).__name__.lower()


def _find_blocks(model: nn.Module, num_layers: int) -> tuple[str, nn.Module] | None:
    """The shallowest ModuleList of ``num_layers`` same-typed blocks."""
    import torch.nn as nn

    found = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) != num_layers or not name:
            continue
        kinds = {type(block) for block in module}
        if len(kinds) != 1 or _projection_dims(module[0]) is not None:
            continue
        size = sum(p.numel() for p in module.parameters())
        found.append((name.count("."), -size, name, module))
    if not found:
        return None
    found.sort(key=lambda item: item[:3])
    return found[0][2], found[0][3]


def _find_mlp_out(block: nn.Module, hidden: int, mlp_size: int | None) -> tuple[str, int, bool] | None:
    """Relative path, MLP width and transposition of the block's MLP output projection.

    With the MLP width known from the config, the projection is the one mapping
    that width to ``hidden``; without it, any widening-back projection
    (in > hidden -> hidden).  Ties go to modules under an MLP-looking child.
    """
    candidates = []
    for name, module in block.named_modules():
        dims = _projection_dims(module)
        if dims is None:
            continue
        d_in, d_out, transposed = dims
        if d_out != hidden:
            continue
        if (mlp_size is not None and d_in == mlp_size) or (mlp_size is None and d_in > hidden):
            candidates.append((name, d_in, transposed))
    if len(candidates) > 1:
        hinted = [c for c in candidates if any(h in part for part in c[0].lower().split(".") for h in _MLP_NAME_HINTS)]
        candidates = hinted
    return candidates[0] if len(candidates) == 1 else None


def _find_final_norm(model: nn.Module, layers_path: str, layers: nn.Module) -> str | None:
    """The norm registered after the blocks in their parent; else the only norm outside them."""
    parent_path = layers_path.rsplit(".", 1)[0] if "." in layers_path else ""
    parent = model.get_submodule(parent_path) if parent_path else model
    prefix = f"{parent_path}." if parent_path else ""
    seen_layers = False
    for child_name, child in parent.named_children():
        if child is layers:
            seen_layers = True
        elif seen_layers and _is_norm(child):
            return prefix + child_name
    block_ids = {id(m) for m in layers.modules()}
    outside = [n for n, m in model.named_modules() if n and id(m) not in block_ids and _is_norm(m)]
    return outside[0] if len(outside) == 1 else None


def _module_name(model: nn.Module, target: Any) -> str | None:
    if target is None:
        return None
    for name, module in model.named_modules():
        if module is target:
            return name or None
    return None


def _resolve(model: nn.Module, path: str) -> nn.Module | None:
    try:
        return model.get_submodule(path)
    except (AttributeError, TypeError):
        return None


def _top_level_names(model: nn.Module) -> str:
    lines = []
    for name, child in model.named_children():
        inner = ", ".join(n for n, _ in child.named_children())
        lines.append(f"  {name}: {type(child).__name__}" + (f" ({inner})" if inner else ""))
    return "\n".join(lines) or "  (no submodules)"


def _unknown(model: nn.Module, architecture: str, missing: list[str]) -> UnknownArchitectureError:
    return UnknownArchitectureError(
        f"keditlab could not work out the structure of this {architecture!r} model "
        f"(could not find: {', '.join(missing)}).\n"
        "Describe it in the spec under `model.profile` with these keys:\n"
        "  layers: path of the ModuleList of blocks, e.g. model.layers\n"
        "  mlp_out: MLP output projection with {layer}, e.g. model.layers.{layer}.mlp.down_proj\n"
        "  final_norm: the norm after the last block, e.g. model.norm\n"
        "  lm_head: the output projection to the vocabulary, e.g. lm_head\n"
        "  embed: the token embedding, e.g. model.embed_tokens\n"
        "  mlp_out_transposed: optional, true when the weight is stored (in, out) like GPT-2's Conv1D\n"
        f"The model's top-level modules are:\n{_top_level_names(model)}"
    )


def _check_override(model: nn.Module, override: dict[str, Any]) -> None:
    known = {f.name for f in dataclasses.fields(ModelProfile)}
    unknown = sorted(set(override) - known)
    if unknown:
        raise ProfileError(f"unknown key(s) {unknown} in model.profile; known keys: {sorted(known)}")
    for key in PATH_KEYS:
        if key in override and not isinstance(override[key], str):
            raise ProfileError(f"model.profile.{key} must be a module path string, got {override[key]!r}")
    if "mlp_out" in override and "{layer}" not in override["mlp_out"]:
        raise ProfileError(
            f"model.profile.mlp_out must contain '{{layer}}', e.g. 'model.layers.{{layer}}.mlp.down_proj'; "
            f"got {override['mlp_out']!r}"
        )


def _check_given_paths(model: nn.Module, override: dict[str, Any]) -> None:
    """Fail early, naming the key, when a user-given path does not resolve."""
    for key in PATH_KEYS:
        if key not in override:
            continue
        path = override[key].format(layer=0) if key == "mlp_out" else override[key]
        module = _resolve(model, path)
        if module is None:
            raise ProfileError(
                f"model.profile.{key} = {override[key]!r}: {path!r} is not a module of this model; "
                f"top-level modules:\n{_top_level_names(model)}"
            )
        if key == "layers" and not hasattr(module, "__len__"):
            raise ProfileError(
                f"model.profile.layers = {override[key]!r} is a {type(module).__name__}, "
                "not a list of blocks (a ModuleList or Sequential)"
            )


def _validate(model: nn.Module, fields: dict[str, Any], given: set[str]) -> None:
    """Check that every module path resolves; name the ``model.profile`` key if not."""

    def where(key: str) -> str:
        return f"model.profile.{key}" if key in given else f"the derived {key}"

    for key in ("final_norm", "lm_head", "embed", "layers"):
        if key == "final_norm" and fields[key] is None:
            continue
        if _resolve(model, fields[key]) is None:
            raise ProfileError(
                f"{where(key)} = {fields[key]!r} is not a module of this model; "
                f"top-level modules:\n{_top_level_names(model)}"
            )
    layers = _resolve(model, fields["layers"])
    try:
        count = len(layers)  # type: ignore[arg-type]
    except TypeError:
        raise ProfileError(f"{where('layers')} = {fields['layers']!r} is not a list of blocks") from None
    if count != fields["num_layers"]:
        raise ProfileError(
            f"{where('layers')} = {fields['layers']!r} holds {count} blocks but the model has "
            f"{fields['num_layers']} layers"
        )
    for layer in range(fields["num_layers"]):
        path = fields["mlp_out"].format(layer=layer)
        if fields.get("expert_out"):
            if _resolve(model, path) is None or _resolve(model, fields["expert_out"].format(layer=layer).rpartition(".")[0]) is None:
                raise ProfileError(f"{where('mlp_out')} = {fields['mlp_out']!r}: layer {layer} has no mixture-of-experts block there; "
                                   "keditlab edits models whose every layer is sparse, or whose every layer is dense")
            continue
        module = _resolve(model, path)
        if module is None or getattr(module, "weight", None) is None:
            raise ProfileError(f"{where('mlp_out')} = {fields['mlp_out']!r}: {path!r} is not a module with a weight")


def _moe_fields(model: nn.Module, fields: dict[str, Any], hidden: int, config: Any) -> bool:
    """Fill the MoE fields when every block holds a sparse mixture of experts (router + fused experts); else False."""
    from keditlab.models.experts import find_experts
    from keditlab.models.peek import config_num_experts

    if not config_num_experts(config):
        return False
    blocks = _resolve(model, fields["layers"])
    found = [find_experts(block, hidden, config) for block in blocks]
    if any(f is None or f != found[0] for f in found):
        return False
    first = found[0]
    prefix = f"{fields['layers']}.{{layer}}"
    fields.update(mlp_out=f"{prefix}.{first.block}", expert_out=f"{prefix}.{first.experts}.{first.down}",
                  router=f"{prefix}.{first.router}", num_experts=first.num_experts, experts_per_token=first.top_k,
                  mlp_size=first.expert_size, mlp_out_transposed=False)
    return True


def derive_profile(model: nn.Module, override: dict[str, Any] | None = None) -> ModelProfile:
    """The ``ModelProfile`` of ``model``, derived structurally, with ``override`` on top.

    ``override`` (the spec's ``model.profile``) may give any ``ModelProfile``
    field; given paths are checked against the model.  Raises
    ``UnknownArchitectureError`` when something is neither found nor given.
    """
    override = dict(override or {})
    _check_override(model, override)
    _check_given_paths(model, override)
    config = getattr(model, "config", None)
    architecture = override.get("architecture") or getattr(config, "model_type", None) or type(model).__name__

    fields: dict[str, Any] = {"architecture": str(architecture)}
    embed_module = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    head_module = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None

    hidden = override.get("hidden_size") or _config_int(config, _HIDDEN_KEYS)
    if hidden is None and embed_module is not None and getattr(embed_module, "weight", None) is not None:
        hidden = int(embed_module.weight.shape[-1])
    fields["hidden_size"] = hidden
    num_layers = override.get("num_layers") or _config_int(config, _LAYER_KEYS)

    # Blocks.
    if "layers" in override:
        fields["layers"] = override["layers"]
        layers_module = _resolve(model, override["layers"])
        if num_layers is None and layers_module is not None and hasattr(layers_module, "__len__"):
            num_layers = len(layers_module)
    elif num_layers is not None:
        blocks = _find_blocks(model, num_layers)
        if blocks is not None:
            fields["layers"], layers_module = blocks
    fields["num_layers"] = num_layers

    # MLP output projection and width.
    mlp_size = override.get("mlp_size") or _config_int(config, _MLP_KEYS)
    if mlp_size is None and hidden is not None and hasattr(config, "n_inner"):
        mlp_size = 4 * hidden  # GPT-2 / GPT-J convention: n_inner None means 4 x hidden
    if "mlp_out" in override:
        fields["mlp_out"] = override["mlp_out"]
        probe = _resolve(model, override["mlp_out"].format(layer=0))
        dims = _projection_dims(probe) if probe is not None else None
        if dims is not None:
            mlp_size = mlp_size or dims[0]
            fields["mlp_out_transposed"] = dims[2]
    elif "layers" in fields and hidden is not None and num_layers and _moe_fields(model, fields, hidden, config):
        mlp_size = fields.pop("mlp_size")
    elif "layers" in fields and hidden is not None and num_layers:
        block = _resolve(model, f"{fields['layers']}.0")
        found = _find_mlp_out(block, hidden, mlp_size) if block is not None else None
        if found is None and block is not None and mlp_size is not None:
            found = _find_mlp_out(block, hidden, None)  # the config's MLP width may be misleading
        if found is not None:
            rel, mlp_size, transposed = found
            fields["mlp_out"] = f"{fields['layers']}.{{layer}}.{rel}"
            fields["mlp_out_transposed"] = transposed
    fields["mlp_size"] = mlp_size
    if "mlp_out_transposed" in override:
        fields["mlp_out_transposed"] = bool(override["mlp_out_transposed"])

    # Final norm, head, embeddings.
    if "final_norm" in override:
        fields["final_norm"] = override["final_norm"]
    elif "layers" in fields and _resolve(model, fields["layers"]) is not None:
        layers_module = _resolve(model, fields["layers"])
        norm = _find_final_norm(model, fields["layers"], layers_module)
        if norm is not None:
            fields["final_norm"] = norm
        elif not _norms_outside(model, layers_module):
            fields["final_norm"] = None   # post-norm: every norm is inside the blocks
    fields["lm_head"] = override.get("lm_head") or _module_name(model, head_module)
    fields["embed"] = override.get("embed") or _module_name(model, embed_module)

    needed = ["num_layers", "hidden_size", "mlp_size", *PATH_KEYS]
    missing = [key for key in needed if fields.get(key) is None and not (key == "final_norm" and key in fields)]
    if missing:
        raise _unknown(model, str(architecture), missing)
    _validate(model, fields, set(override))
    fields.setdefault("mlp_out_transposed", False)
    profile = ModelProfile(**fields)
    _note_token_layout(model, profile)
    return profile


def _norms_outside(model: nn.Module, layers: nn.Module) -> bool:
    """Whether any normalisation module sits outside the blocks."""
    block_ids = {id(m) for m in layers.modules()}
    return any(n and id(m) not in block_ids and _is_norm(m) for n, m in model.named_modules())


def _note_token_layout(model: nn.Module, profile: ModelProfile) -> None:
    """Tell the hook helper which block each MLP output projection sits in.

    Some families (OPT) flatten a batch's tokens before the MLP; hooks on the
    projection then still see ``(batch, tokens, features)`` (:func:`keditlab.models.hooks.note_blocks`).
    """
    from keditlab.models.hooks import note_blocks

    pairs = []
    for layer in range(profile.num_layers):
        module, block = _resolve(model, profile.mlp_out_module(layer)), _resolve(model, profile.layer_module(layer))
        if module is not None and block is not None:
            pairs.append((module, block))
    note_blocks(pairs)
