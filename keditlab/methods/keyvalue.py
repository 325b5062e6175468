"""Key–value machinery of the locate-then-edit methods (ROME and its successors).

These methods read one MLP output projection ``W`` as a linear memory: the
*key* ``k`` is the MLP's hidden activation (the input to ``W``) at the subject's
last token, the *value* ``W k`` is what that MLP writes into the residual
stream there.  An edit has three parts, one function each:

:func:`subject_keys`
    The keys of the subject in the edit prompt, once bare and once after each
    of several short context prefixes (so the edit holds whatever text comes
    before the prompt).
:func:`optimise_value`
    The value change ``δ``: a vector added to the MLP output at the subject's
    last token of every context, optimised (with the model frozen) so the
    model says the target, while a KL term keeps ``"<subject> is a"``
    unchanged and a decay term keeps ``δ`` small.
:func:`key_direction`
    The row vector ``u`` of the weight update ``ΔW = δ uᵀ``: the smallest
    change, in the metric of the key covariance ``C = E[k kᵀ]``, whose effect
    at each context's key is exactly ``δ`` (``uᵀ kᵢ = 1``).

Why every context's key, and not only their mean (a lesson measured on real
benchmark records, ``docs/methods.md``): ``δ`` is found by adding it at each
context's key.  The paper's update is solved at the *average* key ``k̄``, so at
the bare prompt's own key its effect is ``uᵀk₀ ≠ 1`` times ``δ``: 0.23–0.96 of
it on the ten reference edits, and most of those edits then did not take.  The
original implementation instead scales the update at the bare prompt's key
(exact there, not at the other contexts), and r-ROME (Gupta et al., 2024,
"Rebuilding ROME", arXiv:2403.07175) uses ``k̄`` consistently on both sides.
Constraining ``uᵀkᵢ = 1`` at every context carries ``δ`` to all of them at
once; with ``n`` contexts it is the minimum-norm solution
``u = C⁻¹K (KᵀC⁻¹K)⁻¹ 1`` (``K`` the keys as columns), which is also what
MEMIT's least squares gives for one layer and one fact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from keditlab.methods.common import device_of
from keditlab.models.sampling import right_padded
from keditlab.models.tokens import encode_answer, encode_prompt, subject_last_token

#: How the update's direction ``u`` is solved (the ``update_keys`` setting of ROME).
UPDATE_KEYS = ("contexts", "prompt", "mean")


def subject_keys(model, tokenizer, module, prompt: str, subject: str, prefixes: list[str]) -> tuple[torch.Tensor, list[str], list[int]]:
    """Keys at the subject's last token of ``prefix + prompt`` for each prefix.

    Returns ``(keys, texts, positions)``: keys of shape ``(len(prefixes), mlp_size)``
    in float32, the texts read and the subject position in each.
    """
    texts = [prefix + prompt for prefix in prefixes]
    positions = [subject_last_token(tokenizer, text, subject, search_from=len(prefix)) for prefix, text in zip(prefixes, texts)]
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
    return captured[0].float(), texts, positions


@dataclass
class ValueSettings:
    """The knobs of :func:`optimise_value` (a method's config passes its own)."""

    steps: int
    lr: float
    weight_decay: float
    kl_factor: float
    clamp_norm_factor: float
    early_stop_loss: float


def optimise_value(model, tokenizer, module, out_dim: int, subject: str, target: str, texts: list[str],
                   positions: list[int], settings: ValueSettings) -> tuple[torch.Tensor, dict[str, Any]]:
    """Find ``δ``, the change of the MLP output at the subject that makes the model say ``target``.

    The loss is the target's mean negative log-likelihood over ``texts``
    (teacher-forced, every target token), plus ``kl_factor`` times the KL
    divergence of the next-token distribution after ``"<subject> is a"`` from
    the unedited one, plus ``weight_decay · (‖δ‖ / ‖v‖)²`` where ``v`` is the
    unedited value at the subject in ``texts[0]``.  ``δ`` is clamped to
    ``clamp_norm_factor · ‖v‖``.  Only ``δ`` takes gradients (the caller freezes
    the model); optimisation stops once the NLL is below ``early_stop_loss``.

    Returns ``δ`` (float32, shape ``(out_dim,)``) and diagnostics: steps, the NLL
    and the whole loss at each step, ``‖δ‖`` and ``‖v‖``.
    """
    device = device_of(model)
    target_ids = encode_answer(tokenizer, target)
    rows: list[list[int]] = []
    answer_starts: list[int] = []
    for text in texts:  # prompt (with prefix) + target minus its last token: teacher forcing
        prompt_ids = encode_prompt(tokenizer, text)
        rows.append(prompt_ids + target_ids[:-1])
        answer_starts.append(len(prompt_ids))
    kl_text = f"{subject} is a"
    rows.append(encode_prompt(tokenizer, kl_text))
    sub_positions = positions + [subject_last_token(tokenizer, kl_text, subject)]
    kl_row, kl_last = len(rows) - 1, len(rows[-1]) - 1
    ids, mask = right_padded(rows, tokenizer.pad_token_id, device)

    n_rewrite = len(texts)
    target_t = torch.tensor(target_ids, device=device)
    gather_rows = torch.arange(n_rewrite, device=device).unsqueeze(1)
    gather_cols = torch.tensor(answer_starts, device=device).unsqueeze(1) - 1 + torch.arange(len(target_ids), device=device)
    at_subject = torch.zeros(ids.shape[0], ids.shape[1], 1, device=device)
    at_subject[torch.arange(len(rows)), torch.tensor(sub_positions)] = 1.0

    delta = torch.zeros(out_dim, device=device, requires_grad=True)
    original: dict[str, torch.Tensor] = {}

    def add_delta(_module, _inputs, output):
        if "value" not in original:  # the unedited value at the subject in texts[0]
            original["value"] = output[0, sub_positions[0]].detach().clone()
        return output + at_subject.to(output.dtype) * delta.to(output.dtype)

    lm_head = model.get_output_embeddings()
    optimiser = torch.optim.Adam([delta], lr=settings.lr)
    hook = module.register_forward_hook(add_delta)
    losses: list[float] = []   # the target's NLL at each step
    objective: list[float] = []  # the whole loss: NLL + KL + decay
    try:
        for step in range(settings.steps):
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
            decay = settings.weight_decay * (delta.norm() / original["value"].norm()) ** 2
            loss = nll + settings.kl_factor * kl + decay
            losses.append(float(nll.detach()))
            objective.append(float(loss.detach()))
            if losses[-1] < settings.early_stop_loss or step == settings.steps - 1:
                break
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            with torch.no_grad():
                limit = settings.clamp_norm_factor * original["value"].norm()
                if delta.norm() > limit:
                    delta.mul_(limit / delta.norm())
    finally:
        hook.remove()
    info = {
        "steps": len(losses),
        "target_nll": [round(x, 4) for x in losses],
        "loss": [round(x, 4) for x in objective],
        "delta_norm": float(delta.detach().norm()),
        "value_norm": float(original["value"].norm()),
    }
    return delta.detach(), info


def key_direction(keys: torch.Tensor, covariance: torch.Tensor, how: str = "contexts",
                  covariance_ridge: float = 1e-4, solve_ridge: float = 1e-3) -> torch.Tensor:
    """The vector ``u`` of a rank-one update ``ΔW = δ uᵀ``; its effect at key ``k`` is ``(uᵀk) δ``.

    ``keys`` holds one key per context, the bare prompt's first.  ``how``:

    ``contexts``  ``uᵀkᵢ = 1`` for every context (minimum ``uᵀCu``), with a
        ridge of ``solve_ridge`` (relative to the mean diagonal) on ``KᵀC⁻¹K``
        because keys of one subject in different contexts are nearly parallel;
    ``prompt``    ROME's original code: along ``C⁻¹k̄``, scaled so ``uᵀk₀ = 1``
        at the bare prompt's key;
    ``mean``      the paper's equation with the average key on both sides
        (r-ROME's consistent keys): along ``C⁻¹k̄`` with ``uᵀk̄ = 1``.

    ``C`` gets a ridge of ``covariance_ridge`` × its mean diagonal.  Computed in
    float64; returned in float64 on the keys' device.
    """
    if how not in UPDATE_KEYS:
        raise ValueError(f"update_keys must be one of {', '.join(UPDATE_KEYS)}, not {how!r}")
    keys = keys.to(torch.float64)
    cov = covariance.to(device=keys.device, dtype=torch.float64)
    cov = cov + covariance_ridge * cov.diagonal().mean() * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    if how == "contexts":
        cinv_k = torch.linalg.solve(cov, keys.T)                     # C⁻¹K, (mlp, n)
        gram = keys @ cinv_k                                         # KᵀC⁻¹K, (n, n)
        gram = gram + solve_ridge * gram.diagonal().mean() * torch.eye(len(keys), dtype=gram.dtype, device=gram.device)
        return cinv_k @ torch.linalg.solve(gram, torch.ones(len(keys), dtype=keys.dtype, device=keys.device))
    mean = keys.mean(0)
    direction = torch.linalg.solve(cov, mean)                        # C⁻¹k̄
    anchor = keys[0] if how == "prompt" else mean
    return direction / direction.dot(anchor)


def add_rank_one(module: torch.nn.Module, delta: torch.Tensor, direction: torch.Tensor, transposed: bool) -> torch.Tensor:
    """``W ← W + δ uᵀ`` in place (``W`` stored as ``uᵀδ`` when ``transposed``, as GPT-2's Conv1D); returns the update."""
    with torch.no_grad():
        weight = module.weight
        delta64, direction64 = delta.to(weight.device, torch.float64), direction.to(weight.device, torch.float64)
        update = torch.outer(direction64, delta64) if transposed else torch.outer(delta64, direction64)
        weight.add_(update.to(weight.dtype))
    return update
