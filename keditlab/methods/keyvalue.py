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

from keditlab.methods.frozen_prefix import FrozenPrefixes
from keditlab.methods.progress import progress_bar
from keditlab.models.hooks import StopForward, hooks
from keditlab.models.sampling import device_of, right_padded
from keditlab.models.tokens import encode_answer, encode_prompt, subject_last_token

#: How the update's direction ``u`` is solved (the ``update_keys`` setting of ROME).
UPDATE_KEYS = ("contexts", "prompt", "mean")


def context_texts(tokenizer, prompt: str, subject: str, prefixes: list[str]) -> tuple[list[str], list[int]]:
    """``prefix + prompt`` for each prefix, and the position of the subject's last token in each."""
    texts = [prefix + prompt for prefix in prefixes]
    positions = [subject_last_token(tokenizer, text, subject, search_from=len(prefix)) for prefix, text in zip(prefixes, texts)]
    return texts, positions


def subject_keys(model, tokenizer, site, prompt: str, subject: str, prefixes: list[str]) -> tuple[torch.Tensor, list[str], list[int]]:
    """Keys at the subject's last token of ``prefix + prompt`` for each prefix.

    ``site`` is a :class:`~keditlab.models.experts.ExpertSite` (``profile.key_site(model, layer)``)
    or the projection module itself.  Returns ``(keys, texts, positions)``: keys of shape
    ``(len(prefixes), site.width)`` in float32, the texts read and the subject position in each.
    """
    texts, positions = context_texts(tokenizer, prompt, subject, prefixes)
    keys, _ = read_at_subjects(model, tokenizer, texts, positions, site)
    return keys, texts, positions


def read_at_subjects(model, tokenizer, texts: list[str], positions: list[int], key_site,
                     out_module=None, chunk: int = 128,
                     shift: tuple[torch.nn.Module, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Keys (read at ``key_site``) and, optionally, outputs of ``out_module`` at the given positions.

    ``shift``: ``(module, rows)``, a row per text added to ``module``'s output
    at that text's position (MEMIT reads the residual stream its target
    vectors ``δ`` lead to this way).

    ``key_site``: a :class:`~keditlab.models.experts.ExpertSite` (the keys of a
    dense projection, or the gate-weighted keys of an MoE layer's routed
    experts) or a module (its input is the key).  One forward per ``chunk``
    rows, stopped after the last module read.  Used by the multi-layer methods
    to read the keys at the layer being edited and the hidden state at the last
    edited layer (a decoder block: its output is the residual stream).
    Returns float32 ``(len(texts), key_width)`` and ``(len(texts), hidden)`` (or ``None``).
    """
    if isinstance(key_site, torch.nn.Module):
        key_module, read = key_site, (lambda inputs, where, _sequence: inputs[0][where].detach().float())
    else:
        key_module, read = key_site.key_module, key_site.read_keys
    device = device_of(model)
    keys: list[torch.Tensor] = []
    outs: list[torch.Tensor] = []
    for start in range(0, len(texts), chunk):
        part = slice(start, start + chunk)
        ids, mask = right_padded([encode_prompt(tokenizer, t) for t in texts[part]], tokenizer.pad_token_id, device)
        where = (torch.arange(ids.shape[0], device=device), torch.tensor(positions[part], device=device))
        seen: dict[str, torch.Tensor] = {}

        def grab_key(_module, inputs):
            seen["key"] = read(inputs, where, ids.shape[1])
            if out_module is None or "out" in seen:
                raise StopForward

        def grab_out(_module, _inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            seen["out"] = hidden[where].detach().float()
            if "key" in seen:
                raise StopForward

        def add_shift(_module, _inputs, output):
            output = output.clone()
            output[where] += shift[1][part].to(device, output.dtype)
            return output

        outs_wanted = [] if out_module is None else [(out_module, grab_out)]
        if shift is not None:
            outs_wanted.insert(0, (shift[0], add_shift))
        with hooks(pre=[(key_module, grab_key)], forward=outs_wanted), torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
        keys.append(seen["key"])
        if out_module is not None:
            outs.append(seen["out"])
    return torch.cat(keys), (torch.cat(outs) if out_module is not None else None)


@dataclass
class ValueSettings:
    """The knobs of :func:`optimise_values` (a method's config passes its own)."""

    steps: int
    lr: float
    weight_decay: float
    kl_factor: float
    clamp_norm_factor: float
    early_stop_loss: float
    stop_when: str = "loss"


#: When a request's value optimisation stops (``stop_when``): its NLL is below
#: ``early_stop_loss``, or the target is the model's most probable continuation
#: at every target token in every context (ENCORE's criterion, Gupta et al.,
#: 2025, arXiv:2502.01636; either also stops at the NLL threshold).
STOP_WHEN = ("loss", "most_probable")


@dataclass
class ValueRequest:
    """One edit's share of a value optimisation: its contexts and where the subject ends in each."""

    subject: str
    target: str
    texts: list[str]
    positions: list[int]


def optimise_value(model, tokenizer, module, out_dim: int, subject: str, target: str, texts: list[str],
                   positions: list[int], settings: ValueSettings, progress: Any = False) -> tuple[torch.Tensor, dict[str, Any]]:
    """:func:`optimise_values` for one edit: ``(δ, diagnostics)``."""
    deltas, infos = optimise_values(model, tokenizer, module, out_dim, [ValueRequest(subject, target, texts, positions)], settings,
                                    progress=progress)
    return deltas[0], infos[0]


def optimise_values(model, tokenizer, module, out_dim: int, requests: list[ValueRequest],
                    settings: ValueSettings, progress: Any = False) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Find ``δᵢ`` for every request: the change of ``module``'s output at the subject that makes the model say its target.

    The loss of request ``i`` is its target's mean negative log-likelihood over
    its ``texts`` (teacher-forced, every target token), plus ``kl_factor`` times
    the KL divergence of the next-token distribution after ``"<subject> is a"``
    from the unedited one, plus ``weight_decay · (‖δᵢ‖ / ‖vᵢ‖)²`` where ``vᵢ`` is
    the unedited value at the subject in its first text.  ``δᵢ`` is clamped to
    ``clamp_norm_factor · ‖vᵢ‖``.  Only the ``δ``'s take gradients (the caller
    freezes the model).

    **All requests are optimised together**: each step runs every context row
    of every request still running, sorted by length and cut into passes of
    at most :data:`MAX_PASS_TOKENS` padded tokens (little padding, bounded
    memory), and takes one Adam step for all of them.  The loss is a sum over
    rows, so gradients accumulated pass by pass are the whole batch's.  The
    requests never interact (each row is its own sequence and carries only
    its own ``δᵢ``), so the result is the one each would get alone.  Nothing
    before a row's subject depends on ``δ``: those tokens run once
    (:class:`~keditlab.methods.frozen_prefix.FrozenPrefixes`) and each step
    runs only the rest of the row, about a quarter of it.  A request
    stops (its ``δᵢ`` is frozen and its rows leave the batch) once its
    ``stop_when`` criterion holds (:data:`STOP_WHEN`).

    Returns ``δ`` (float32, shape ``(len(requests), out_dim)``) and, per
    request, diagnostics: steps, the NLL and the whole loss at each step,
    ``‖δ‖`` and ``‖v‖``.  ``progress`` (an :class:`~keditlab.methods.base.EditContext`
    or a bool) shows a bar over the steps (:func:`~keditlab.methods.progress.progress_bar`).
    """
    if settings.stop_when not in STOP_WHEN:
        raise ValueError(f"stop_when must be one of {', '.join(STOP_WHEN)}, not {settings.stop_when!r}")
    device = device_of(model)
    rows: list[list[int]] = []
    row_request: list[int] = []   # the request each row belongs to
    sub_positions: list[int] = []  # the subject's last token in each row
    answer_cols: list[list[int]] = []  # per rewrite row: positions whose next token is a target token
    targets: list[list[int]] = []
    kl_rows: list[int] = []
    first_rows: list[int] = []
    for index, request in enumerate(requests):
        target_ids = encode_answer(tokenizer, request.target)
        targets.append(target_ids)
        first_rows.append(len(rows))
        for text, position in zip(request.texts, request.positions):  # prompt (with prefix) + target minus its last token
            prompt_ids = encode_prompt(tokenizer, text)
            rows.append(prompt_ids + target_ids[:-1])
            answer_cols.append(list(range(len(prompt_ids) - 1, len(prompt_ids) - 1 + len(target_ids))))
            row_request.append(index)
            sub_positions.append(position)
        kl_text = f"{request.subject} is a"
        kl_rows.append(len(rows))
        rows.append(encode_prompt(tokenizer, kl_text))
        answer_cols.append([])
        row_request.append(index)
        sub_positions.append(subject_last_token(tokenizer, kl_text, request.subject))
    kl_row_set = set(kl_rows)

    n = len(requests)
    token_count = torch.tensor([len(targets[i]) * len(r.texts) for i, r in enumerate(requests)], dtype=torch.float, device=device)
    delta = torch.zeros(n, out_dim, device=device, requires_grad=True)
    done = torch.zeros(n, dtype=torch.bool)
    frozen = torch.zeros(n, out_dim, device=device)
    values = torch.zeros(n, out_dim, device=device)   # vᵢ: the unedited value at the subject, first text
    kl_reference: dict[int, torch.Tensor] = {}        # the unedited next-token log-probabilities after "<subject> is a"
    nll_steps: list[list[float]] = [[] for _ in requests]
    loss_steps: list[list[float]] = [[] for _ in requests]
    lm_head = model.get_output_embeddings()
    optimiser = torch.optim.Adam([delta], lr=settings.lr)
    chunk: dict[str, Any] = {}

    def add_delta(_module, _inputs, output):
        if chunk["first"]:  # step 0: record vᵢ before any δ is added
            rows_here, reqs_here, positions_here = zip(*chunk["first"])
            values[list(reqs_here)] = output[list(rows_here), list(positions_here)].detach().float()
        return output + chunk["at_subject"].to(output.dtype) * delta[chunk["request"]].unsqueeze(1).to(output.dtype)

    first_set = set(first_rows)
    prefixes = FrozenPrefixes(model, rows, sub_positions, tokenizer.pad_token_id, _passes)  # before δ exists
    rest = [len(prefixes.rest(r)) for r in range(len(rows))]
    with (hooks(forward=[(module, add_delta)]),
          progress_bar(progress, total=settings.steps, desc=f"value optimisation ({n} edit{'s' if n != 1 else ''})") as bar):
        for step in range(settings.steps):
            bar.update()
            # Rows of the requests still running, sorted by length and cut into passes of
            # at most MAX_PASS_TOKENS padded tokens: little padding, bounded memory.
            active = sorted((r for r in range(len(rows)) if not done[row_request[r]]), key=lambda r: rest[r])
            nll = torch.zeros(n, device=device)
            kl = torch.zeros(n, device=device)
            misses = torch.zeros(n, device=device)
            optimiser.zero_grad()
            for part in _passes(active, rest):
                inputs = prefixes.inputs(part)  # each row from its subject's last token on: δ goes at position 0
                chunk["request"] = torch.tensor([row_request[r] for r in part], device=device)
                chunk["first"] = [(i, row_request[r], 0) for i, r in enumerate(part) if r in first_set] if step == 0 else []
                at_subject = torch.zeros(len(part), inputs["input_ids"].shape[1], 1, device=device)
                at_subject[:, 0] = 1.0
                chunk["at_subject"] = at_subject
                # Only the positions that enter the loss go through the LM head (a large
                # share of the cost with a 50k vocabulary).
                hidden = model.base_model(**inputs).last_hidden_state
                where = [(i, col - sub_positions[r], token, row_request[r]) for i, r in enumerate(part)
                         for col, token in zip(answer_cols[r], targets[row_request[r]])]
                part_loss = hidden.new_zeros(())
                if where:
                    tok_rows, tok_cols, tok_ids, tok_req = (list(x) for x in zip(*where))
                    logits = lm_head(hidden[tok_rows, tok_cols]).float()
                    ids_t, req_t = torch.tensor(tok_ids, device=device), torch.tensor(tok_req, device=device)
                    token_nll = -logits.log_softmax(-1).gather(-1, ids_t.unsqueeze(-1)).squeeze(-1) / token_count[req_t]
                    nll = nll + torch.zeros(n, device=device).index_add(0, req_t, token_nll.detach())
                    misses.index_add_(0, req_t, (logits.argmax(-1) != ids_t).float())
                    part_loss = part_loss + token_nll.sum()
                kl_here = [(i, r) for i, r in enumerate(part) if r in kl_row_set]
                if kl_here:
                    lp = lm_head(hidden[[i for i, _ in kl_here], [rest[r] - 1 for _, r in kl_here]]).float().log_softmax(-1)
                    for (i, r), row_lp in zip(kl_here, lp):
                        req = row_request[r]
                        if req not in kl_reference:  # step 0: δ = 0
                            kl_reference[req] = row_lp.detach()
                        term = (kl_reference[req].exp() * (kl_reference[req] - row_lp)).sum()
                        kl[req] = term.detach()
                        part_loss = part_loss + settings.kl_factor * term
                part_loss.backward()   # gradients accumulate over the passes: the loss is a sum over rows
            decay = settings.weight_decay * (delta.norm(dim=1) / values.norm(dim=1)) ** 2
            loss = nll + settings.kl_factor * kl + decay.detach()
            last = step == settings.steps - 1
            for req in sorted({row_request[r] for r in active}):
                nll_steps[req].append(float(nll[req]))
                loss_steps[req].append(float(loss[req]))
                converged = nll_steps[req][-1] < settings.early_stop_loss or (settings.stop_when == "most_probable" and float(misses[req]) == 0)
                if converged or last:
                    done[req] = True
                    frozen[req] = delta[req].detach()
            if bool(done.all()):
                break
            running = (~done).to(device)
            decay[running].sum().backward()
            with torch.no_grad():
                delta.grad[~running] = 0.0
            optimiser.step()
            with torch.no_grad():
                limit = settings.clamp_norm_factor * values.norm(dim=1, keepdim=True)
                norms = delta.norm(dim=1, keepdim=True)
                delta.mul_(torch.where(norms > limit, limit / norms, torch.ones_like(norms)))
                delta[~running] = frozen[~running]
    infos = [
        {
            "steps": len(nll_steps[i]),
            "target_nll": [round(x, 4) for x in nll_steps[i]],
            "loss": [round(x, 4) for x in loss_steps[i]],
            "delta_norm": float(frozen[i].norm()),
            "value_norm": float(values[i].norm()),
        }
        for i in range(n)
    ]
    return frozen.detach(), infos


#: Most padded tokens in one forward-and-backward pass of :func:`optimise_values`.
#: Larger passes are no faster on a CPU (the work is already compute-bound at
#: one request's seven rows) and hold more activations for the backward pass.
MAX_PASS_TOKENS = 2048


def _passes(rows: list[int], lengths: list[int]) -> list[list[int]]:
    """Cut ``rows`` (sorted by length) into passes of at most :data:`MAX_PASS_TOKENS` padded tokens."""
    passes: list[list[int]] = []
    for r in rows:
        if passes and (len(passes[-1]) + 1) * lengths[r] <= MAX_PASS_TOKENS:
            passes[-1].append(r)
        else:
            passes.append([r])
    return passes


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
    cov = ridged(covariance.to(keys.device), covariance_ridge)
    if how == "contexts":  # the equality-constrained update for one value change δ at every key
        return equality_solve(keys, torch.ones(len(keys), 1, dtype=keys.dtype, device=keys.device), cov, solve_ridge)[0]
    mean = keys.mean(0)
    direction = torch.linalg.solve(cov, mean)                        # C⁻¹k̄
    anchor = keys[0] if how == "prompt" else mean
    return direction / direction.dot(anchor)


def equality_solve(keys: torch.Tensor, gaps: torch.Tensor, covariance: torch.Tensor, solve_ridge: float) -> torch.Tensor:
    """The least-disturbing weight change that writes ``gaps`` at ``keys``: ``ΔW = R (KᵀC⁻¹K + μI)⁻¹ KᵀC⁻¹``.

    ``keys`` ``(n, mlp)`` and ``gaps`` ``(n, out)`` are rows; the result is
    ``(out, mlp)``.  Minimises ``tr(ΔW C ΔWᵀ)`` subject to ``ΔW kᵢ = rᵢ``,
    softened by a ridge of ``solve_ridge`` times the mean diagonal of the Gram
    matrix ``KᵀC⁻¹K``.  ROME's ``update_keys: contexts`` is this with one gap of
    1 per context (then ``ΔW`` is the direction ``u``); EMMET uses it at every
    layer for a whole batch.
    """
    cinv_k = torch.linalg.solve(covariance, keys.T)              # C⁻¹K, (mlp, n)
    gram = keys @ cinv_k                                         # KᵀC⁻¹K, (n, n)
    gram = gram + solve_ridge * gram.diagonal().mean() * torch.eye(len(keys), dtype=gram.dtype, device=gram.device)
    return gaps.T @ torch.linalg.solve(gram, cinv_k.T)


def value_change_for(output_map, values: torch.Tensor, gaps: torch.Tensor, iterations: int = 8) -> torch.Tensor:
    """The change ``Δ`` of an MLP output projection's output rows that moves the residual stream by ``gaps``.

    ``output_map`` is what the block applies to the projection's output before
    adding it to the residual stream (:func:`keditlab.models.residual.mlp_output_map`);
    ``values`` are the outputs at the rows as they are.  ``Δ`` minimises
    ``‖map(values + Δ) − map(values) − gaps‖`` by Levenberg–Marquardt steps
    (Gauss–Newton on the map's Jacobian ``J``, one batched backward pass, damped by ``μ`` that grows when a step does not help and shrinks
    when it does): ``s = (JᵀJ + μ·mean diag(JᵀJ)·I)⁻¹ Jᵀ r`` for what is still
    missing, ``r``.  A norm after the MLP (Gemma's post-feedforward RMS norm)
    ignores its input's scale and divides its output among features by fixed
    gains, so part of a gap may not be reachable at all; the damping keeps
    ``Δ`` from growing without bound chasing it, and what is left is met by
    the layers after (MEMIT re-reads the model before each layer).  Without a
    map the change is the gap itself.
    """
    if output_map is None:
        return gaps
    values = values.detach().double()
    wanted = (_mapped(output_map, values) + gaps.double()).detach()
    delta = torch.zeros_like(values)
    damping = torch.full((values.shape[0],), 1e-3, dtype=values.dtype, device=values.device)
    missing = wanted - _mapped(output_map, values)
    for _ in range(iterations):
        for rows in torch.arange(values.shape[0], device=values.device).split(64):
            jacobian = _jacobians(output_map, values[rows] + delta[rows])
            normal = jacobian.transpose(1, 2) @ jacobian
            ridge = damping[rows, None, None] * normal.diagonal(dim1=1, dim2=2).mean(dim=1).clamp(min=1e-12)[:, None, None]
            eye = torch.eye(normal.shape[1], dtype=normal.dtype, device=normal.device)
            step = torch.linalg.solve(normal + ridge * eye, (jacobian.transpose(1, 2) @ missing[rows].unsqueeze(-1))).squeeze(-1)
            trial = wanted[rows] - _mapped(output_map, values[rows] + delta[rows] + step)
            better = trial.norm(dim=1) < missing[rows].norm(dim=1)
            delta[rows[better]] += step[better]
            missing[rows[better]] = trial[better]
            damping[rows] = torch.where(better, damping[rows] / 10, damping[rows] * 10)
    return delta.to(gaps.dtype)


def contribution_sizes(output_map, values: torch.Tensor) -> torch.Tensor:
    """Float64 ``(rows,)``: the norm of what each row of an MLP output adds to the residual stream (``output_map`` applied, if any)."""
    values = values.detach().double()
    return (values if output_map is None else _mapped(output_map, values)).norm(dim=1)


def _jacobians(output_map, rows: torch.Tensor) -> torch.Tensor:
    """``(rows, out, in)``: the Jacobian of ``output_map`` at each row (the map works row by row).

    One backward pass, batched over the output features (``is_grads_batched``).
    """
    point = rows.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = _mapped(output_map, point)
        basis = torch.eye(out.shape[1], dtype=out.dtype, device=out.device).unsqueeze(1).expand(-1, *out.shape)
        (columns,) = torch.autograd.grad(out, point, grad_outputs=basis, is_grads_batched=True)
    return columns.permute(1, 0, 2)


def _mapped(output_map, rows: torch.Tensor) -> torch.Tensor:
    """``output_map`` on float64 rows: its modules run in the model's dtype, the result comes back in float64."""
    return output_map(rows.float()).double()


def ridged(covariance: torch.Tensor, ridge: float) -> torch.Tensor:
    """``C + ridge · mean(diag C) · I`` in float64: well conditioned for a solve, whatever the keys' scale."""
    cov = covariance.to(torch.float64)
    return cov + ridge * cov.diagonal().mean() * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)


def add_rank_one(model, site, delta: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """``W ← W + δ uᵀ`` in place at ``site`` (an :class:`~keditlab.models.experts.ExpertSite`); returns the update, ``(out, width)``, float64.

    Written by ``site.add``, which knows how ``W`` is stored (GPT-2's ``Conv1D``, an MoE layer's fused experts).
    """
    device = delta.device
    update = torch.outer(delta.to(device, torch.float64), direction.to(device, torch.float64))
    site.add(model, update)
    return update
