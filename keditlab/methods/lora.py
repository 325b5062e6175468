"""LoRA and AdaLoRA: low-rank fine-tuning through the ``peft`` library, merged into the weights.

LoRA (Hu et al., 2022, "LoRA: Low-Rank Adaptation of Large Language Models",
ICLR 2022, arXiv:2106.09685) trains, beside a frozen weight ``W``, a low-rank
change ``(alpha / rank) · B A`` with ``A`` of shape ``rank × in`` and ``B`` of
shape ``out × rank``; ``B`` starts at zero, so the model starts unchanged.
AdaLoRA (Zhang et al., 2023, "Adaptive Budget Allocation for Parameter-Efficient
Fine-Tuning", ICLR 2023, arXiv:2303.10512) writes the change as ``P Λ Q`` (an
SVD-like form) and, on a schedule, prunes the singular values that matter
least, so the rank budget goes where the loss needs it.  KnowEdit (Zhang et
al., 2024, arXiv:2401.01286) compares both as editing baselines.

How keditlab edits with them:

* The adapters come from ``peft`` (``get_peft_model``), never hand-written.
  They sit on ``target_modules`` of ``layers``; by default the MLP output
  projection of the layer the fine-tuning baselines use (layer 5 of 30 on the
  embedded model), the same place as FT-M, so the comparison is like for like.
* The loss is FT-M's: cross-entropy on the target tokens, prompt masked, each
  edit weighted alike; Adam; stop once the loss is below ``early_stop_loss``.
* LoRA's learning rate is, as FT-M's, a share of the root-mean-square of the
  adapted weight's entries (:func:`~keditlab.methods.common.share_of_rms`):
  Adam moves ``A`` and ``B`` by about the rate each step, and the change
  ``B A`` has to be small *against the weight*, whose entries are 13 times
  smaller on Gemma 3 270M than on the embedded SmolLM2.  With the absolute
  2e-3 chosen on SmolLM2, LoRA kept locality 0.56 on Gemma (CounterFact
  records 0-49), with the relative rate 0.77 (docs/models.md).  AdaLoRA's
  rate stays absolute (5e-3): its singular values start at zero and ``P``,
  ``Q`` at a fixed small scale, and the same relative rate wrote only 4 of
  16 edits on Gemma.
* AdaLoRA's schedule is set from ``steps`` (``total_step``, warm-up ``tinit``
  and final ``tfinal`` a fifth of the steps each) and ``update_and_allocate`` is
  called after every optimiser step, as ``peft`` requires.
* After training the adapter is merged into the weights and unloaded, so the
  model handed back is a plain ``transformers`` model with edited weights, and
  ``restore()`` writes the original weights back bit for bit.

The reference toolkit's LoRA trains ``q_proj`` and ``v_proj`` of every layer
and, on the embedded model, writes the target everywhere (locality 0.00): one
layer's MLP is where a fact can be changed with the least disturbance.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from keditlab.methods.base import Capabilities, EditContext, EditHandle, EditMethod, MethodConfig, MethodConfigError, MethodPlan
from keditlab.methods.common import share_of_rms, trainable_only
from keditlab.models.sampling import device_of
from keditlab.methods.layers import factual_recall_layer
from keditlab.methods.finetune import adam_until, masked_batch, masked_nll

#: peft's adapter name for keditlab's edits.
ADAPTER = "keditlab"


@dataclass
class LoRAConfig(MethodConfig):
    #: Empty ``lr``: this share of the adapted weight's root-mean-square (2e-3 on the embedded model's layer 5).
    LR_SHARE: ClassVar[float] = 0.011

    layers: list[int] | None = field(
        default=None,
        metadata={"help": "Layers whose target modules get an adapter. Empty: one layer at 17% of the depth (layer 5 of 30 on the embedded model), as FT-M.", "layer_index": True},
    )
    target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Linear modules of each chosen layer, named inside the layer (e.g. mlp.down_proj, self_attn.v_proj). Empty: the MLP output projection."},
    )
    rank: int = field(default=8, metadata={"help": "Rank of the low-rank change (AdaLoRA: the final average rank).", "minimum": 1})
    alpha: float = field(default=16.0, metadata={"help": "Scale of the change is alpha / rank.", "exclusive_minimum": 0})
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapter's input while training.", "minimum": 0, "exclusive_maximum": 1})
    steps: int = field(default=60, metadata={"help": "Most optimisation steps.", "minimum": 1})
    lr: float | None = field(default=None, metadata={"help": "Adam learning rate. Empty: 1.1% of the root-mean-square of each adapted weight's entries "
                                                    "(2e-3 on the embedded model; Gemma 3 270M's entries are 13 times smaller, and so is its rate).",
                                                    "exclusive_minimum": 0})
    early_stop_loss: float = field(default=0.2, metadata={"help": "Stop once the loss is below this.", "minimum": 0})

    def resolved_layers(self, num_layers: int) -> list[int]:
        """The adapted layers: ``layers``, or the factual-recall layer when empty (FT-M's)."""
        return list(self.layers) if self.layers is not None else [factual_recall_layer(num_layers)]


@dataclass
class AdaLoRAConfig(LoRAConfig):
    lr: float = field(default=5e-3, metadata={"help": "Adam learning rate (higher than LoRA's: AdaLoRA prunes part of what it learns). Absolute, unlike "
                                             "LoRA's: its singular values start at zero and its P and Q at a fixed small scale, so its change does not "
                                             "grow with the weight (2.75% of the weight's RMS wrote 4 of 16 CounterFact edits on Gemma 3 270M).",
                                             "exclusive_minimum": 0})
    init_rank: int = field(default=12, metadata={"help": "Rank each adapter starts with, before the budget is pruned to rank.", "minimum": 1})


class LoRA(EditMethod, name="lora", family="fine-tuning", paper="Hu et al., ICLR 2022, arXiv:2106.09685",
           config_class=LoRAConfig, capabilities=Capabilities(batch=True, sequential=True)):
    """Low-rank adapter trained on the target tokens (peft), merged into the weights"""

    @classmethod
    def plan(cls, profile, config: LoRAConfig, model=None) -> MethodPlan:
        """The target modules' weights (the adapter is merged into them); trained: ``rank × (in + out)`` per target."""
        layers = config.resolved_layers(profile.num_layers)
        if model is not None:
            targets = _target_modules(model, profile, layers, config.target_modules)
            shapes = {t: _in_out(model.get_submodule(t)) for t in targets}
        elif config.target_modules is None:
            shapes = {profile.mlp_out_module(layer): (profile.mlp_size, profile.hidden_size) for layer in layers}
        else:
            raise MethodConfigError("target_modules: their shapes need the model's module tree (keditlab plan passes it).")
        return MethodPlan(layers=tuple(layers), changed=tuple((f"{t}.weight", i * o) for t, (i, o) in shapes.items()),
                          trained=sum(cls._adapter_values(config, i, o) for i, o in shapes.values()), backward_from=min(layers))

    @staticmethod
    def _adapter_values(config: LoRAConfig, d_in: int, d_out: int) -> int:
        """Values of one adapter: ``A`` (rank × in) and ``B`` (out × rank)."""
        return config.rank * (d_in + d_out)

    def _apply(self, model, tokenizer, profile, cases, config: LoRAConfig, context: EditContext) -> EditHandle:
        import peft

        layers = config.resolved_layers(profile.num_layers)
        targets = _target_modules(model, profile, layers, config.target_modules)
        handle = EditHandle(self.name, model, self.snapshot(model, [f"{t}.weight" for t in targets]))
        batch = masked_batch(tokenizer, cases, device_of(model))
        target_rates = {t: config.lr if config.lr is not None else share_of_rms(config.LR_SHARE, model.get_submodule(t).weight) for t in targets}
        peft_config = self._peft_config(config, targets, profile)
        flags = {name: p.requires_grad for name, p in model.named_parameters()}   # peft freezes the model; put back after
        with warnings.catch_warnings():   # peft reads a transformers attribute that transformers 5 marks deprecated
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            wrapped = peft.get_peft_model(model, peft_config, adapter_name=ADAPTER)
        try:
            trained = [name for name, _ in model.named_parameters() if ADAPTER in name.split(".") and "lora_" in name]
            with trainable_only(model, trained):
                params = [p for name, p in model.named_parameters() if name in set(trained)]
                rates = [next(rate for t, rate in target_rates.items() if f"{t}.lora_" in name) for name in trained]
                losses = adam_until(params, lambda: masked_nll(model, batch, per_edit=True), config.steps, rates,
                                    config.early_stop_loss, lambda step: self._after_step(wrapped, step),
                                    progress=context, desc=f"{self.name}: steps")
            ranks = self._ranks(wrapped)
        finally:
            wrapped.merge_and_unload()   # the adapter is written into the weights and removed
            for attribute in ("peft_config", "_hf_peft_config_loaded"):
                if attribute in vars(model):
                    delattr(model, attribute)
            for name, param in model.named_parameters():
                param.requires_grad_(flags[name])
        handle.details = {"layers": layers, "modules": targets, "steps": len(losses), "loss_first": losses[0],
                          "loss_last": losses[-1], "ranks": ranks, "lr": list(target_rates.values())}
        return handle

    def _peft_config(self, config: LoRAConfig, targets: list[str], profile):
        import peft

        return peft.LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=targets,
                               fan_in_fan_out=profile.mlp_out_transposed, bias="none")

    def _after_step(self, wrapped, step: int) -> None:
        """Nothing for LoRA; AdaLoRA re-allocates its rank budget here."""

    def _ranks(self, wrapped) -> dict[str, int]:
        return {}


class AdaLoRA(LoRA, name="adalora", paper="Zhang et al., ICLR 2023, arXiv:2303.10512", config_class=AdaLoRAConfig):
    """Adaptive-rank adapter (AdaLoRA, peft) trained on the target tokens, merged into the weights"""

    @staticmethod
    def _adapter_values(config: AdaLoRAConfig, d_in: int, d_out: int) -> int:
        """``P`` (out × r), ``Λ`` (r) and ``Q`` (r × in) at the starting rank ``init_rank``."""
        return config.init_rank * (d_in + d_out + 1)

    def _peft_config(self, config: AdaLoRAConfig, targets: list[str], profile):
        import peft

        if config.init_rank < config.rank:
            raise MethodConfigError(
                f"init_rank: {config.init_rank} is below rank {config.rank}; AdaLoRA starts with init_rank and prunes down "
                f"to rank. Fix: set init_rank >= rank."
            )
        edge = max(1, config.steps // 5)
        if config.steps <= 2 * edge:
            raise MethodConfigError(
                f"steps: {config.steps} leaves no steps between AdaLoRA's warm-up and final phases ({edge} each). "
                f"Fix: set steps to at least {2 * edge + 1} (the default is 60)."
            )
        return peft.AdaLoraConfig(init_r=config.init_rank, target_r=config.rank, lora_alpha=config.alpha,
                                  lora_dropout=config.dropout, target_modules=targets, total_step=config.steps,
                                  tinit=edge, tfinal=edge, deltaT=1, fan_in_fan_out=profile.mlp_out_transposed,
                                  bias="none")

    def _after_step(self, wrapped, step: int) -> None:
        wrapped.base_model.update_and_allocate(step)

    def _ranks(self, wrapped) -> dict[str, int]:
        """The rank each adapter kept (singular values not pruned)."""
        out = {}
        for name, module in wrapped.named_modules():
            values = getattr(module, "lora_E", None)
            if values is not None and ADAPTER in values:
                out[name.split("base_model.model.", 1)[-1]] = int((values[ADAPTER] != 0).sum())
        return out


def _target_modules(model, profile, layers: list[int], names: list[str] | None) -> list[str]:
    """Full paths of the adapted modules; an unknown or non-linear name is an error that lists the layer's linear modules."""
    modules = dict(model.named_modules())
    block = profile.layer_module(layers[0])
    inside = names if names is not None else [_default_target(model, profile, block)]
    if not inside:
        raise MethodConfigError("target_modules: the list is empty. Fix: name at least one module, or leave it out for the MLP output projection.")
    linear = sorted(n[len(block) + 1:] for n, m in modules.items()
                    if n.startswith(block + ".") and _is_linear(m))
    paths = []
    for layer in layers:
        for name in inside:
            path = f"{profile.layer_module(layer)}.{name}"
            if path not in modules or not _is_linear(modules[path]):
                import difflib

                close = difflib.get_close_matches(name, linear, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise MethodConfigError(
                    f"target_modules: {name!r} is not a linear module of layer {layer}.{hint} "
                    f"Fix: choose among {', '.join(linear)}."
                )
            paths.append(path)
    return paths


def _default_target(model, profile, block: str) -> str:
    """The MLP output projection, named inside the layer; on a mixture-of-experts model, the attention's output projection.

    An MoE layer's experts are one fused 3-D parameter, not linear modules ``peft``'s LoRA and AdaLoRA can wrap,
    so the adapter goes on the last linear module of the block outside its MoE block that writes the hidden size
    (``self_attn.o_proj``): like the MLP's, its output is added to the residual stream.
    """
    if not profile.is_moe:
        return profile.mlp_out_module(int(block.rsplit(".", 1)[1]))[len(block) + 1:]
    moe_block = profile.mlp_out_module(int(block.rsplit(".", 1)[1]))
    writers = [name for name, module in model.get_submodule(block).named_modules(prefix=block)
               if _is_linear(module) and not name.startswith(moe_block + ".")
               and getattr(module, "out_features", None) == profile.hidden_size]
    if not writers:
        raise MethodConfigError(f"target_modules: this mixture-of-experts model's layers have no linear module writing the hidden size "
                                "outside the experts. Fix: name the modules to adapt in target_modules.")
    return writers[-1][len(block) + 1:]


def _in_out(module: torch.nn.Module) -> tuple[int, int]:
    """``(in, out)`` of a Linear or a GPT-2 Conv1D (whose weight is stored (in, out))."""
    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features
    return int(module.weight.shape[0]), int(module.weight.shape[1])


def _is_linear(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"
