"""ROME: Rank-One Model Editing (Meng et al., 2022, "Locating and Editing Factual
Associations in GPT", NeurIPS, arXiv:2202.05262)."""

from __future__ import annotations

from dataclasses import dataclass, field

from keditlab.methods.base import EditMethod, MethodConfig


@dataclass
class RomeConfig(MethodConfig):
    layer: int | None = field(
        default=None,
        metadata={"help": "Layer whose MLP output projection is edited. Empty: the measured default for the model.", "layer_index": True},
    )
    v_steps: int = field(default=25, metadata={"help": "Most optimisation steps for the value vector v*."})
    v_lr: float = field(default=0.5, metadata={"help": "Adam learning rate for the value vector."})
    v_weight_decay: float = field(default=1e-3, metadata={"help": "Weight of the ||delta||² penalty on the value change."})
    kl_factor: float = field(default=0.0625, metadata={"help": "Weight of the KL term that keeps '<subject> is a' predictions unchanged."})
    clamp_norm_factor: float = field(default=4.0, metadata={"help": "The value change is clamped to this multiple of the original value's norm."})
    early_stop_loss: float = field(default=0.05, metadata={"help": "Stop optimising once the target's negative log-likelihood is below this."})
    context_templates: int = field(default=10, metadata={"help": "Number of generated context prefixes the key and value are averaged over."})


class Rome(EditMethod):
    name = "rome"
    config_class = RomeConfig
    summary = "Rank-One Model Editing (Meng et al., 2022)"
