"""ROME: Rank-One Model Editing.

Meng, Bau, Andonian and Belinkov, "Locating and Editing Factual Associations in
GPT", NeurIPS 2022 (arXiv:2202.05262).

The idea, in three steps:

1. **Where.**  Causal tracing shows that a subject's facts are recalled by the
   MLPs of early-to-middle layers, at the subject's *last token*.  ROME treats
   the output projection ``W`` of one such MLP as a key–value memory: the key
   ``k`` is the input to ``W`` (the MLP's hidden activation), the value is
   ``W k``, written into the residual stream.
2. **What.**  The key ``k*`` is the MLP activation at the subject's last token,
   averaged over several short context prefixes.  The value ``v*`` is found by
   gradient descent on a vector ``δ`` added to the MLP output at that position:
   it maximises the probability of the new target after the prompt (again over
   the prefixes), while a KL term keeps the model's idea of what the subject
   *is* (``"<subject> is a"``) unchanged, and a weight-decay term keeps ``δ``
   small.  Only ``δ`` takes gradients; the model is frozen.
3. **How.**  The smallest change to ``W`` (in the metric given by the key
   covariance ``C = E[k kᵀ]``, see :mod:`keditlab.stats.covariance`) that maps
   ``k*`` to ``v*`` is rank one:
   ``W ← W + (v* − W k*) (C⁻¹ k*)ᵀ / (k*ᵀ C⁻¹ k*)``.

Several cases given at once are applied one after another, each on the model
the previous one produced (as in the paper); MEMIT is the method for batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from keditlab.methods.base import EditContext, EditHandle, EditMethod, MethodConfig, MethodConfigError
from keditlab.methods.common import context_prefixes, default_layer, device_of, trainable_only
from keditlab.models.sampling import right_padded
from keditlab.models.tokens import encode_answer, encode_prompt, subject_last_token

@dataclass
class RomeConfig(MethodConfig):
    layer: int | None = field(
        default=None,
        metadata={"help": "Layer whose MLP output projection is edited. Empty: 17% of the depth (layer 5 of 30 on the embedded model).", "layer_index": True},
    )
    v_steps: int = field(default=25, metadata={"help": "Most optimisation steps for the value vector v*."})
    v_lr: float = field(default=1.0, metadata={"help": "Adam learning rate for the value vector."})
    v_weight_decay: float = field(default=0.5, metadata={"help": "Weight of the (||δ|| / ||v||)² penalty that keeps the value change small."})
    kl_factor: float = field(default=0.0625, metadata={"help": "Weight of the KL term that keeps '<subject> is a' predictions unchanged."})
    clamp_norm_factor: float = field(default=4.0, metadata={"help": "The value change δ is clamped to this multiple of the original value's norm."})
    early_stop_loss: float = field(default=0.05, metadata={"help": "Stop optimising once the target's mean negative log-likelihood is below this."})
    context_templates: int = field(default=5, metadata={"help": "Number of generated context prefixes the key and value are averaged over (plus the bare prompt)."})
    covariance_ridge: float = field(default=1e-4, metadata={"help": "Added to the diagonal of C (relative to its mean diagonal) so that C⁻¹ is well conditioned."})


class Rome(EditMethod):
    name = "rome"
    config_class = RomeConfig
    summary = "Rank-One Model Editing (Meng et al., 2022)"

    def _apply(self, model, tokenizer, profile, cases, config: RomeConfig, context: EditContext) -> EditHandle:
        layer = default_layer(profile.num_layers) if config.layer is None else config.layer
        if context.covariance is None:
            raise MethodConfigError("rome needs key statistics: pass EditContext(covariance=...)")
        module_name = profile.mlp_out_module(layer)
        module = model.get_submodule(module_name)
        handle = EditHandle(self.name, model, self.snapshot(model, [f"{module_name}.weight"]))
        covariance = context.covariance(layer)
        prefixes = context_prefixes(model, tokenizer, config.context_templates, seed=context.seed)
        handle.details = {"layer": layer, "module": module_name, "context_prefixes": prefixes, "cases": []}
        with trainable_only(model):
            for case in cases:
                handle.details["cases"].append(
                    _edit_one(model, tokenizer, module, profile.mlp_out_transposed, case, config, covariance, prefixes)
                )
        return handle


def _edit_one(model, tokenizer, module, transposed: bool, case, config: RomeConfig, covariance: torch.Tensor, prefixes: list[str]) -> dict[str, Any]:
    """Insert one fact with a rank-one update of ``module.weight``; return diagnostics."""
    texts = [prefix + case.prompt for prefix in prefixes]
    positions = [subject_last_token(tokenizer, text, case.subject, search_from=len(prefix)) for prefix, text in zip(prefixes, texts)]
    key = _keys_at(model, tokenizer, module, texts, positions).mean(0)
    out_dim = module.weight.shape[1] if transposed else module.weight.shape[0]
    value, info = _optimise_value(model, tokenizer, module, out_dim, case, config, texts, positions)

    with torch.no_grad():
        weight = module.weight
        cov = covariance.to(device=weight.device, dtype=torch.float64)
        cov = cov + config.covariance_ridge * cov.diagonal().mean() * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
        key64 = key.to(torch.float64)
        direction = torch.linalg.solve(cov, key64)  # C⁻¹ k*
        current = module(key.to(weight.dtype).unsqueeze(0))[0].to(torch.float64)  # W k* (+ bias)
        residual = (value.to(torch.float64) - current) / direction.dot(key64)
        update = torch.outer(direction, residual) if transposed else torch.outer(residual, direction)
        weight.add_(update.to(weight.dtype))
    info.update(update_norm=float(update.norm()), weight_norm=float(weight.norm()))
    return info


def _keys_at(model, tokenizer, module, texts: list[str], positions: list[int]) -> torch.Tensor:
    """Inputs to ``module`` at the given token position of each text, shape (len(texts), mlp_size)."""
    device = device_of(model)
    ids, mask = right_padded([encode_prompt(tokenizer, t) for t in texts], tokenizer.pad_token_id, device)
    captured: list[torch.Tensor] = []

    def grab(_module, inputs):
        captured.append(inputs[0][torch.arange(len(texts), device=device), torch.tensor(positions, device=device)].detach())

    hook = module.register_forward_pre_hook(grab)
    try:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
    finally:
        hook.remove()
    return captured[0].float()


def _optimise_value(model, tokenizer, module, out_dim: int, case, config: RomeConfig, texts: list[str], positions: list[int]) -> tuple[torch.Tensor, dict[str, Any]]:
    """Find v* = v + δ: the MLP output at the subject that makes the model say the target."""
    device = device_of(model)
    target = encode_answer(tokenizer, case.target)
    rows: list[list[int]] = []
    answer_starts: list[int] = []
    for text in texts:  # prompt (with prefix) + target minus its last token: teacher forcing
        prompt_ids = encode_prompt(tokenizer, text)
        rows.append(prompt_ids + target[:-1])
        answer_starts.append(len(prompt_ids))
    kl_text = f"{case.subject} is a"
    rows.append(encode_prompt(tokenizer, kl_text))
    sub_positions = positions + [subject_last_token(tokenizer, kl_text, case.subject)]
    kl_row, kl_last = len(rows) - 1, len(rows[-1]) - 1
    ids, mask = right_padded(rows, tokenizer.pad_token_id, device)

    n_rewrite = len(texts)
    target_t = torch.tensor(target, device=device)
    gather_rows = torch.arange(n_rewrite, device=device).unsqueeze(1)
    gather_cols = torch.tensor(answer_starts, device=device).unsqueeze(1) - 1 + torch.arange(len(target), device=device)
    at_subject = torch.zeros(ids.shape[0], ids.shape[1], 1, device=device)
    at_subject[torch.arange(len(rows)), torch.tensor(sub_positions)] = 1.0

    delta = torch.zeros(out_dim, device=device, requires_grad=True)
    original: dict[str, torch.Tensor] = {}

    def add_delta(_module, _inputs, output):
        if "value" not in original:  # the unedited value at the subject in the bare prompt
            original["value"] = output[0, sub_positions[0]].detach().clone()
        return output + at_subject.to(output.dtype) * delta.to(output.dtype)

    lm_head = model.get_output_embeddings()
    optimiser = torch.optim.Adam([delta], lr=config.v_lr)
    hook = module.register_forward_hook(add_delta)
    losses: list[float] = []
    try:
        for step in range(config.v_steps):
            # Only the positions that enter the loss go through the LM head (a large
            # share of the cost with a 50k vocabulary).
            hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
            rewrite_lp = lm_head(hidden[gather_rows, gather_cols]).float().log_softmax(-1)
            token_lp = rewrite_lp.gather(-1, target_t.expand(n_rewrite, -1).unsqueeze(-1)).squeeze(-1)
            nll = -token_lp.mean()
            kl_lp = lm_head(hidden[kl_row, kl_last]).float().log_softmax(-1)
            if "kl" not in original:
                original["kl"] = kl_lp.detach()
            kl = F.kl_div(kl_lp, original["kl"], log_target=True, reduction="sum")
            decay = config.v_weight_decay * (delta.norm() / original["value"].norm()) ** 2
            loss = nll + config.kl_factor * kl + decay
            losses.append(float(nll.detach()))
            if losses[-1] < config.early_stop_loss or step == config.v_steps - 1:
                break
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            with torch.no_grad():
                limit = config.clamp_norm_factor * original["value"].norm()
                if delta.norm() > limit:
                    delta.mul_(limit / delta.norm())
    finally:
        hook.remove()
    value = (original["value"] + delta).detach()
    info = {
        "case_id": case.case_id,
        "steps": len(losses),
        "target_nll_first": losses[0],
        "target_nll_last": losses[-1],
        "delta_norm": float(delta.detach().norm()),
        "value_norm": float(original["value"].norm()),
    }
    return value, info

