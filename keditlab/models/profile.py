"""Where things live inside a model: the ``ModelProfile``.

Editing methods need to know, for example, which linear layer is the MLP output
projection of layer 5 (``model.layers.5.mlp.down_proj`` in Llama,
``transformer.h.5.mlp.c_proj`` in GPT-2).  A profile answers that from the
model's config and module tree, never from its name, so a fine-tuned or renamed
checkpoint of a known family works, and an unknown family can be described in
a spec (``model.profile``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ModelProfile:
    """Sizes and module paths of a decoder-only transformer.

    Templates contain ``{layer}``, e.g. ``"model.layers.{layer}.mlp.down_proj"``.
    ``mlp_out_transposed`` is true when the projection stores its weight as
    (in, out), as GPT-2's ``Conv1D`` does, instead of ``nn.Linear``'s (out, in);
    :meth:`mlp_out_weight` and :meth:`add_to_mlp_out` read and write it as
    (out, in) either way, so methods never look at the flag.
    """

    architecture: str  # e.g. "llama", "gpt2": the config's model_type
    num_layers: int
    hidden_size: int
    mlp_size: int
    layers: str  # path of the ModuleList of blocks, e.g. "model.layers"
    mlp_out: str  # template of the MLP output projection
    final_norm: str | None  # None: no norm after the last block (post-norm models)
    lm_head: str
    embed: str
    mlp_out_transposed: bool = False

    def mlp_out_module(self, layer: int) -> str:
        """Module path of the MLP output projection at ``layer``."""
        return self.mlp_out.format(layer=layer)

    def layer_module(self, layer: int) -> str:
        return f"{self.layers}.{layer}"

    def mlp_out_weight(self, model: Any, layer: int) -> Any:
        """The weight of the MLP output projection at ``layer`` as ``(out, in)``, whatever its storage.

        A view of the parameter, not a copy: gradients flow through it, and
        writing into it (in ``torch.no_grad()``) edits the model.  Methods
        write their algebra as ``ΔW`` of shape ``(out, in)``, ``W k`` the value
        at key ``k``; GPT-2's ``Conv1D`` stores ``W`` as ``(in, out)``, which
        this hides::

            W = profile.mlp_out_weight(model, 5)      # (hidden, mlp) on Llama and GPT-2 alike
            values = keys @ W.T
        """
        weight = model.get_submodule(self.mlp_out_module(layer)).weight
        return weight.T if self.mlp_out_transposed else weight

    def add_to_mlp_out(self, model: Any, layer: int, update: Any) -> None:
        """``W ← W + ΔW`` in place at ``layer``'s MLP output projection, ``ΔW`` given as ``(out, in)``.

        The update is cast to the weight's device and dtype; the one writer of
        every closed-form method (ROME, MEMIT and successors, UltraEdit).
        """
        import torch

        weight = self.mlp_out_weight(model, layer)
        with torch.no_grad():
            weight.add_(update.to(weight.device, weight.dtype))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
