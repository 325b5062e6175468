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
    #: Sparse mixture-of-experts models (:mod:`keditlab.models.experts`): the template of the fused
    #: down-projection parameter of a layer's experts, ``(num_experts, hidden, mlp_size)``, e.g.
    #: ``"model.layers.{layer}.mlp.experts.down_proj"``; ``None`` for a dense model.  Then ``mlp_out`` is
    #: the MoE block (its output is what the experts write), ``mlp_size`` one expert's width, and
    #: ``router`` the template of the router.
    expert_out: str | None = None
    router: str | None = None
    num_experts: int = 0
    experts_per_token: int = 0

    def mlp_out_module(self, layer: int) -> str:
        """Module path of the MLP output projection at ``layer``."""
        return self.mlp_out.format(layer=layer)

    @property
    def is_moe(self) -> bool:
        """Whether the MLPs are sparse mixtures of experts (:mod:`keditlab.models.experts`)."""
        return self.expert_out is not None

    @property
    def mlp_out_input_size(self) -> int:
        """Width of what ``mlp_out`` reads: the MLP width (dense), the hidden size (an MoE block reads the residual stream)."""
        return self.hidden_size if self.is_moe else self.mlp_size

    def mlp_out_parameter(self, layer: int) -> str:
        """Name of the parameter holding ``layer``'s MLP output weight(s): the projection's weight, or every expert's fused down projection."""
        return self.expert_out.format(layer=layer) if self.is_moe else f"{self.mlp_out_module(layer)}.weight"

    def key_site(self, model: Any, layer: int) -> Any:
        """Where locate-then-edit methods read keys and write at ``layer`` (:class:`~keditlab.models.experts.ExpertSite`)."""
        from keditlab.models.experts import ExpertSite

        return ExpertSite(self, model, layer)

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
        if self.is_moe:   # (num_experts, out, in): every expert's down projection
            return model.get_parameter(self.mlp_out_parameter(layer))
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
