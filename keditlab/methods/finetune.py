"""Fine-tuning baselines: FT-L (constrained, Zhu et al., 2020) and FT-M (masked target loss)."""

from __future__ import annotations

from dataclasses import dataclass, field

from keditlab.methods.base import EditMethod, MethodConfig


@dataclass
class FineTuneConfig(MethodConfig):
    layers: list[int] | None = field(
        default=None,
        metadata={"help": "Layers whose MLP output projection is fine-tuned. Empty: the measured default for the model.", "layer_index": True},
    )
    steps: int = field(default=25, metadata={"help": "Most optimisation steps."})
    lr: float = field(default=5e-4, metadata={"help": "Adam learning rate."})
    norm_constraint: float | None = field(default=None, metadata={"help": "Each weight stays within ± this of its original value (L-infinity). Empty: no constraint."})
    early_stop_loss: float = field(default=0.05, metadata={"help": "Stop once the loss is below this."})


class FineTuneL(EditMethod):
    name = "ft-l"
    config_class = FineTuneConfig
    summary = "Constrained fine-tuning of one layer (Zhu et al., 2020; the ROME baseline)"


class FineTuneM(EditMethod):
    name = "ft-m"
    config_class = FineTuneConfig
    summary = "Fine-tuning on the target tokens only, prompt masked (FT-M)"
