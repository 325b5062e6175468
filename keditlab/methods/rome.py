"""ROME: Rank-One Model Editing.

Meng, Bau, Andonian and Belinkov, "Locating and Editing Factual Associations in
GPT", NeurIPS 2022 (arXiv:2202.05262).

The idea, in three steps (the machinery is in :mod:`keditlab.methods.keyvalue`,
shared with ROME's successors):

1. **Where.**  Causal tracing shows that a subject's facts are recalled by the
   MLPs of early-to-middle layers, at the subject's *last token*.  ROME treats
   the output projection ``W`` of one such MLP as a key–value memory: the key
   ``k`` is the input to ``W`` (the MLP's hidden activation), the value is
   ``W k``, written into the residual stream.
2. **What.**  The keys ``kᵢ`` are the MLP activations at the subject's last
   token in the bare prompt and after several short context prefixes.  The
   value change ``δ`` is found by gradient descent on a vector added to the
   MLP output at that position in every context: it maximises the probability
   of the new target, while a KL term keeps the model's idea of what the
   subject *is* (``"<subject> is a"``) unchanged, and a weight-decay term keeps
   ``δ`` small.  Only ``δ`` takes gradients; the model is frozen.
3. **How.**  The smallest change to ``W`` (in the metric given by the key
   covariance ``C = E[k kᵀ]``, see :mod:`keditlab.stats.covariance`) whose
   effect is ``δ`` at the keys is rank one, ``ΔW = δ uᵀ``.  The paper solves it
   at the average key; keditlab by default solves it at every context's key
   (``update_keys: contexts``), so the edit is exactly what was optimised in
   each of them, the bare prompt included.  The other two forms are settings,
   for comparison (``docs/methods.md`` has the measurements).

After the update, the edit is checked where it matters: the target's
probability given the bare prompt is recorded per edit in ``details``, beside
the optimisation's NLL at each step.

On a mixture-of-experts model the projection is the layer's experts read as
one memory (:mod:`keditlab.models.experts`): the keys are the gate-weighted
activations of the experts the subject's last token is routed to, and only
those experts' down projections are written (MoEEdit, arXiv:2602.10965).

Several cases given at once are applied one after another, each on the model
the previous one produced (as in the paper); MEMIT is the method for batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from keditlab.evaluate.teacher_forced import teacher_forced
from keditlab.methods.base import Capabilities, EditContext, EditHandle, EditMethod, MethodConfig, MethodConfigError, MethodPlan
from keditlab.methods.common import context_prefixes, trainable_only
from keditlab.methods.keyvalue import UPDATE_KEYS, ValueSettings, add_rank_one, key_direction, optimise_value, subject_keys
from keditlab.methods.layers import check_value_layer, factual_recall_layer


@dataclass
class RomeConfig(MethodConfig):
    layer: int | None = field(
        default=None,
        metadata={"help": "Layer whose MLP output projection is edited. Empty: 17% of the depth (layer 5 of 30 on the embedded model). "
                          "`auto`: the layer where causal tracing finds the largest average MLP effect at the subject's last token "
                          "(computed once per model and cached; docs/tracing.md).", "layer_index": True, "auto_layer": True},
    )
    v_steps: int = field(default=25, metadata={"minimum": 1, "help": "Most optimisation steps for the value change δ."})
    v_lr: float = field(default=1.0, metadata={"exclusive_minimum": 0, "help": "Adam learning rate for the value change δ."})
    v_weight_decay: float = field(default=0.05, metadata={"minimum": 0, "help": "Weight of the (‖δ‖ / ‖v‖)² penalty that keeps the value change small (larger: weaker edits that generalise less)."})
    kl_factor: float = field(default=0.0625, metadata={"minimum": 0, "help": "Weight of the KL term that keeps '<subject> is a' predictions unchanged."})
    clamp_norm_factor: float = field(default=4.0, metadata={"exclusive_minimum": 0, "help": "The value change δ is clamped to this multiple of the original value's norm."})
    early_stop_loss: float = field(default=0.05, metadata={"minimum": 0, "help": "Stop optimising once the target's mean negative log-likelihood over the contexts is below this."})
    context_templates: int = field(default=5, metadata={"minimum": 0, "help": "Number of generated context prefixes the keys and the value are taken over (plus the bare prompt)."})
    update_keys: str = field(
        default="contexts",
        metadata={"help": "Where the rank-one update is solved: 'contexts' (exactly δ at every context's key, the bare prompt's included), "
                          "'prompt' (ROME's original code: along C⁻¹k̄, exact at the bare prompt's key) or 'mean' (δ at the average key k̄, as in the paper and r-ROME).",
                  "choices": list(UPDATE_KEYS)},
    )
    covariance_ridge: float = field(default=1e-4, metadata={"minimum": 0, "help": "Added to the diagonal of C (relative to its mean diagonal) so that C⁻¹ is well conditioned."})
    solve_ridge: float = field(default=1e-3, metadata={"minimum": 0, "help": "With update_keys 'contexts': ridge (relative to the mean diagonal) on the contexts' key Gram matrix KᵀC⁻¹K."})

    def check_layers(self, num_layers: int) -> None:
        super().check_layers(num_layers)
        check_value_layer("layer", self.resolved_layer(num_layers), num_layers)

    def resolved_layer(self, num_layers: int) -> int:
        """The edited layer: ``layer``, or the factual-recall layer when empty."""
        return factual_recall_layer(num_layers) if self.layer is None else self.layer

    def value_settings(self) -> ValueSettings:
        return ValueSettings(self.v_steps, self.v_lr, self.v_weight_decay, self.kl_factor, self.clamp_norm_factor, self.early_stop_loss)


class Rome(EditMethod, name="rome", family="locate-then-edit", paper="Meng et al., NeurIPS 2022, arXiv:2202.05262",
           config_class=RomeConfig, capabilities=Capabilities(batch=False, sequential=True, needs_statistics=True)):
    """Rank-One Model Editing (Meng et al., 2022)

    One fact per rank-one update: several edits in one call are applied one
    after another, which is sequential editing, not a batch (MEMIT is for batches).
    """

    @classmethod
    def auto_layer_settings(cls, traced_layer: int, num_layers: int) -> dict[str, int]:
        """``layer: auto``: the traced layer itself."""
        return {"layer": traced_layer}

    @classmethod
    def plan(cls, profile, config: RomeConfig, model=None) -> MethodPlan:
        """One MLP output matrix; δ (hidden) optimised through the layers from the edited one up; one covariance, solved in float64."""
        layer = config.resolved_layer(profile.num_layers)
        return MethodPlan.mlp_out(profile, [layer], trained=profile.hidden_size, backward_from=layer,
                                  rows_per_edit=config.context_templates + 2, statistics=(layer,), solved_at_once=1)

    def _apply(self, model, tokenizer, profile, cases, config: RomeConfig, context: EditContext) -> EditHandle:
        layer = config.resolved_layer(profile.num_layers)
        if context.covariance is None:
            raise MethodConfigError("rome needs key statistics: pass EditContext(covariance=...)")
        site = profile.key_site(model, layer)   # the MLP output projection, or an MoE layer's experts (models/experts.py)
        handle = EditHandle(self.name, model, self.snapshot(model, [site.parameter]))
        covariance = context.covariance(layer)
        with context.setup():  # sampled once per model, then reused: one-off, not per edit
            prefixes = context_prefixes(model, tokenizer, config.context_templates, seed=context.seed)
        handle.details = {"layer": layer, "module": profile.mlp_out_module(layer), "context_prefixes": prefixes, "cases": []}
        out_dim = profile.hidden_size
        for case in cases:
            with trainable_only(model):
                keys, texts, positions = subject_keys(model, tokenizer, site, case.prompt, case.subject, prefixes)
                delta, info = optimise_value(model, tokenizer, site.value_module, out_dim, case.subject, case.target, texts, positions,
                                             config.value_settings(), progress=context)
            part = site.touched_by(keys)   # an MoE layer: only the experts the subject is routed to
            keys = part.select(keys)
            direction = key_direction(keys, part.gather(covariance), config.update_keys, config.covariance_ridge, config.solve_ridge)
            update = add_rank_one(model, part, delta, direction)
            handle.details["cases"].append({**_diagnostics(model, tokenizer, case, info, keys, direction, update), **part.describe()})
        return handle


def _diagnostics(model, tokenizer, case, info: dict[str, Any], keys: torch.Tensor, direction: torch.Tensor, update: torch.Tensor) -> dict[str, Any]:
    """What a user needs to judge one edit: the loss, where the update acts, and whether the prompt now gives the target."""
    after = teacher_forced(model, tokenizer, [(case.prompt, case.target)])[0]
    return {
        "case_id": case.case_id,
        **info,
        # uᵀkᵢ: the share of δ the update delivers at each context's key (bare prompt first); 1.0 is exact
        "key_effect": [round(float(x), 3) for x in keys.to(direction) @ direction],
        "target_prob_after": round(float(torch.tensor(-after.total_nll).exp()), 4),
        "target_tokens_after": after.accuracy,
        "update_norm": float(update.norm()),
    }
