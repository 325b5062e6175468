"""UltraEdit: lifelong editing by a normalised, closed-form weight update.

Gu, Chen, Li, Gu, Hu and Zhang, "UltraEdit: Training-, Subject-, and
Memory-Free Lifelong Editing in Large Language Models", 2025
(arXiv:2505.14679).

*Training-free*: no optimisation loop; one forward and one backward pass per
batch of edits, then linear algebra.  *Subject-free*: no subject position is
needed; the method reads every position that predicts a target token.
*Memory-free*: no covariance statistics of the model's usual keys and no
store of earlier edits; what it carries from batch to batch are the running
mean and variance of the features it reads (a few vectors per layer).

For each batch, at each edited MLP output projection ``W`` (the layer's
``down_proj``):

1. **Read.**  The model reads ``prompt + target`` (teacher forcing) and the
   loss is the target tokens' negative log-likelihood.  At every position that
   predicts a target token the *key* ``k`` (the input of ``W``) is recorded in
   the forward pass, and the gradient ``g`` of the loss with respect to ``W``'s
   output in the backward pass.  ``-g`` is the direction in which ``W``'s
   output at that token should move for the target to become likelier.
2. **Lifelong normalisation.**  The running mean and variance of the keys
   and of the gradients, over every token of every batch edited so far
   (this one included), standardise both: ``k̂ = (k − μₖ)/σₖ``,
   ``ĝ = (g − μ_g)/σ_g``.  As the edits accumulate the model changes and so do
   its gradients; normalising with statistics that follow them keeps the size
   of the updates steady over thousands of batches.
3. **Value shifts.**  One plain gradient step ``ΔW = −η g kᵀ`` would move the
   output at ``k`` by ``−η ‖k‖² g``.  UltraEdit takes that shift in normalised
   form, ``vᵢ = −η ‖k̂ᵢ‖² ĝᵢ``, as the change each token's output should get.
4. **Solve.**  The weight change that writes every ``vᵢ`` at its raw key
   ``kᵢ``, in the ridge-regularised least-squares sense::

       ΔW = argmin ‖ΔW Kᵀ − Vᵀ‖² + λ‖ΔW‖²  =  Vᵀ (K Kᵀ + λ I)⁻¹ K

   (``K``, ``V`` the batch's keys and shifts as rows), added to ``W``.  The
   layers are solved independently from the same backward pass.

**Scale** (why ports of the paper's settings can leave a model unchanged):
``‖k̂‖² ≈ d_in`` and ``‖ĝ‖ ≈ √d_out`` after normalisation, so a shift has
norm about ``η · d_in · √d_out`` whatever the model's activations.  The
paper's ``η = 1e-6`` gives shifts near 1 on 7B models' wide MLPs; on the
embedded SmolLM2-135M (``down_proj`` 1536 → 576) it gives 0.04, against
``down_proj`` outputs of 50–160 at the answer tokens: no edit is written.
keditlab therefore sets ``η`` per layer from the layer's own activation scale:
``η = value_scale · ρ / (d_in · √d_out)`` with ``ρ`` the mean norm of ``W``'s
output at the batch's target tokens, so every shift is about ``value_scale``
times what the layer normally writes there (``lr`` sets the paper's absolute
``η`` instead).  Likewise the ridge ``λ`` is ``ridge`` times the mean squared
key norm, not an absolute 1.

**Four additions of keditlab's** (each can be switched off to get the paper's
method: ``passes: 1, preserve: 0, keep_earlier: 0, prior_tokens: 0, value_scale: 0.15``).  Measured on 100 ZsRE
edits of the embedded model, one step at ``value_scale`` 0.15 writes 55% of
the answers and already changes 25% of the unrelated questions' answers; a
larger step writes more and disturbs far more.  So:

* **Passes.**  Several small steps instead of one: after each solve the
  batch is read again, the edits whose answer the model now gives (every token,
  greedy, teacher-forced) drop out, and the rest get another step (with the
  running statistics of the first read).  Ten passes of 0.05 write 98%.
* **Preserved keys.**  The solve also holds ``ΔW p = 0`` at the keys ``p`` of
  every token of a few dozen short texts sampled from the model itself before
  the first edit (:func:`preserved_keys`, :func:`preserving_solve`), the
  preservation term of MEMIT without its corpus statistics.  It keeps what the
  layer writes at unrelated tokens.  Given real unrelated questions and their
  answers (``EditContext.unrelated``, a spec's ``stats.unrelated``), the keys
  are read where those answers are predicted instead, which keeps far more of
  a benchmark's locality probes than the model's own samples do.
* **Earlier batches kept.**  In a stream, each solve also holds the keys of
  the earlier batches (their summed ``KᵀK`` per layer, in the context's
  memory), as MEMIT's sequential statistics and AlphaEdit's preserved edits
  do, so later batches neither overwrite earlier edits nor pile their small
  disturbances of unrelated text on top of each other (``keep_earlier``).

* **A prior in the statistics.**  One edit has one to three target tokens,
  too few for a mean and a variance per feature: plain standardisation turns
  one token into zero (nothing is written) and two into ``±1/√2`` everywhere.
  :meth:`RunningMoments.normalise` blends in a prior worth ``prior_tokens``
  tokens, so single edits are written; over a stream it no longer counts.

The passes only re-run the blocks from the lowest edited layer up (the blocks
below are run once per batch, :func:`~keditlab.methods.adaptors.upper_passes`).

Differences from the reference code, for clarity: it keeps one set of running
statistics per weight *shape* (shared by layers of equal shape); keditlab
keeps one per layer.  It edits the MLP input projections on some families
(Llama-3, Qwen2.5); keditlab edits the output projection, as on GPT-J and
Mistral.

Sequential editing: the running statistics live in the
:class:`~keditlab.methods.base.EditContext`'s ``memory``; each handle's
``restore()`` puts back the weights and takes its share of the statistics
back out (bit for bit when handles are restored last-first, as the runner does).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any

import torch

from keditlab.methods.base import Capabilities, EditContext, EditHandle, EditMethod, MethodConfig, MethodPlan
from keditlab.methods.adaptors import preserved_keys, upper_passes
from keditlab.methods.common import trainable_only
from keditlab.methods.layers import chosen_layers, late_layers
from keditlab.methods.lifelong import MEMORY_CLASSES, HeldSums, keep_earlier_setting, preserve_setting, preserve_weight_setting
from keditlab.methods.progress import progress_bar
from keditlab.models.hooks import hooks
from keditlab.models.sampling import device_of, right_padded
from keditlab.models.tokens import encode_answer, encode_prompt


@dataclass
class UltraEditConfig(MethodConfig):
    layers: list[int] | None = field(
        default=None,
        metadata={"help": "Layers whose MLP output projections are edited, each solved on its own. "
                          "Empty: from 60% of the depth to the last-but-one layer (layers 18-28 of 30 on the embedded model).",
                  "layer_index": True},
    )
    value_scale: float = field(
        default=0.05,
        metadata={"exclusive_minimum": 0,
                  "help": "Size of each token's value shift as a share of the norm of what the layer writes there; sets the step η "
                          "per layer from its activation scale. Larger writes edits more strongly and disturbs more."},
    )
    lr: float | None = field(
        default=None,
        metadata={"exclusive_minimum": 0,
                  "help": "The paper's absolute step η (1e-6 for 7B models); overrides value_scale. Empty: derived from value_scale."},
    )
    ridge: float = field(
        default=0.1,
        metadata={"exclusive_minimum": 0,
                  "help": "λ of the least-squares solve, relative to the mean squared key norm. Larger writes the shifts less exactly "
                          "and keeps the update smaller."},
    )
    prior_tokens: float = field(
        default=16.0,
        metadata={"minimum": 0,
                  "help": "Weight, in tokens, of a scalar prior blended into the running mean and variance (keditlab's; 0: the paper's "
                          "plain statistics, which cannot normalise a single edit's one or two target tokens). Negligible once "
                          "thousands of tokens are seen."},
    )
    passes: int = field(
        default=10,
        metadata={"minimum": 1,
                  "help": "Most read-and-solve passes per batch (keditlab's; the paper makes one). Each pass after the first re-reads "
                          "only the edits the model does not yet say and writes a further small step for them. "
                          "1 with value_scale 0.15 is the paper's single step."},
    )
    preserve: int = preserve_setting(
        64, held="How many unrelated texts (sampled from the model itself before the first edit) have their keys held "
                 "at zero change in every solve",
        without="the paper's unconstrained ridge solve")
    preserve_weight: float = preserve_weight_setting(
        3.0, weighs="the preserved keys against the edits' keys in the solve (per key, relative to the batch's key count).")
    keep_earlier: float = keep_earlier_setting(
        1.0, holds="Weight with which the keys of earlier batches of the stream are held at zero change in later solves",
        note=", as MEMIT's sequential statistics and AlphaEdit's preserved edits", later="later batches free to overwrite earlier ones")
    pull_back: float = field(
        default=0.0,
        metadata={"minimum": 0, "maximum": 1,
                  "help": "Share of the stream's drift at the preserved keys (what the layer now writes there minus what it wrote "
                          "before the first edit) that each solve also asks to undo (keditlab's; 0: each solve only holds its own "
                          "change there at zero, and the residues of many solves add up)."},
    )
    forward_batch_size: int = field(
        default=32,
        metadata={"minimum": 1, "help": "Edits read per forward and backward pass (memory, not results)."},
    )

    def resolved_layers(self, num_layers: int) -> list[int]:
        return chosen_layers(self.layers, late_layers(num_layers))


class RunningMoments:
    """Count, sum and sum of squares of feature vectors (float64): the running mean and variance."""

    def __init__(self, width: int, device: Any) -> None:
        self.count = 0
        self.total = torch.zeros(width, dtype=torch.float64, device=device)
        self.squares = torch.zeros(width, dtype=torch.float64, device=device)

    def copy(self) -> "RunningMoments":
        other = RunningMoments.__new__(RunningMoments)
        other.count, other.total, other.squares = self.count, self.total.clone(), self.squares.clone()
        return other

    def add(self, rows: torch.Tensor, sign: int = 1) -> None:
        rows = rows.to(torch.float64)
        self.count += sign * len(rows)
        self.total += sign * rows.sum(0)
        self.squares += sign * (rows * rows).sum(0)

    def merge(self, other: "RunningMoments", sign: int = 1) -> None:
        """Add (``sign=1``) or take back (``-1``) the rows another instance has seen."""
        self.count += sign * other.count
        self.total += sign * other.total
        self.squares += sign * other.squares

    def normalise(self, rows: torch.Tensor, prior_rows: float = 0.0) -> torch.Tensor:
        """``(x − mean) / std`` with the running statistics, shrunk towards a scalar prior over few rows.

        With ``prior_rows = 0`` this is the plain standardisation (unbiased
        variance; a feature of no spread stays 0).  A handful of rows cannot
        estimate a mean and a variance per feature: one row standardises to 0
        (no edit is written), two rows to ``±1/√2`` in every feature (the
        gradient's direction is lost).  So the estimates are blended with a prior
        worth ``prior_rows`` rows, mean 0 and the same variance ``s²`` in every
        feature (the rows' mean square)::

            mean' = n·mean / (n + n₀)
            var'  = ((n − 1)·var + n₀·s²) / (n − 1 + n₀)

        For one row this is ``x / s`` up to a constant (the raw direction at
        the normalised scale); over thousands of rows the prior no longer counts.
        """
        mean = self.total / self.count
        spread = (self.squares - self.count * mean * mean).clamp(min=0)
        if prior_rows > 0:
            mean_square = float(self.squares.sum()) / (self.count * len(self.squares))
            mean = mean * self.count / (self.count + prior_rows)
            variance = (spread + prior_rows * mean_square) / (self.count - 1 + prior_rows)
        else:
            variance = spread / max(self.count - 1, 1)
        return (rows.to(torch.float64) - mean) / (variance.sqrt() + 1e-8)


class UltraEdit(EditMethod, name="ultraedit", family="lifelong closed-form", paper="Gu et al., 2025, arXiv:2505.14679",
                config_class=UltraEditConfig,
                capabilities=Capabilities(batch=True, sequential=True, needs_statistics=False, changes_weights=True, restorable=True)):
    """Lifelong editing by a normalised closed-form update (Gu et al., 2025)"""

    refuses_moe = ("its running per-feature statistics and closed-form solve are over one dense projection's keys, and an MoE "
                   "layer's keys are per expert and sparse (not implemented). Use alphaedit or memit for sequential batches "
                   "(they edit the experts the subjects are routed to).")
    model_needs = ("dense_mlp",)

    @classmethod
    def plan(cls, profile, config: UltraEditConfig, model=None) -> MethodPlan:
        """Its late layers' MLP output matrices; no weight takes a gradient (the backward pass reads gradients at the outputs,
        from the lowest edited layer up); an anchor copy of each matrix and running moments are kept."""
        layers = config.resolved_layers(profile.num_layers)
        plan = MethodPlan.mlp_out(profile, layers, backward_from=layers[0])
        return dataclasses.replace(plan, held=plan.changed_values + 4 * len(layers) * (profile.hidden_size + profile.mlp_size))

    def _apply(self, model, tokenizer, profile, cases, config: UltraEditConfig, context: EditContext) -> EditHandle:
        layers = config.resolved_layers(profile.num_layers)
        names = [profile.mlp_out_module(layer) for layer in layers]
        modules = {layer: model.get_submodule(name) for layer, name in zip(layers, names)}
        handle = EditHandle(self.name, model, self.snapshot(model, [f"{name}.weight" for name in names]))

        memory = context.memory.setdefault(self.name, {"moments": HeldSums(), "earlier": HeldSums(), "live": []})
        if config.preserve and "preserved" not in memory:
            with context.setup():   # sampled and read once per stream, on the model before its first edit
                memory["preserved"] = preserved_keys(model, tokenizer, modules, config.preserve, context.seed, context.unrelated)
                memory["anchor"] = {layer: profile.mlp_out_weight(model, layer).detach().clone() for layer in layers}
        # The stream's running statistics and the earlier batches' keys (Σ kkᵀ per layer): this batch's share joins
        # them after its first read, and restoring the handle takes it back out (HeldSums).
        moments, earlier = memory["moments"], memory["earlier"]
        earlier_before = {layer: earlier[layer] for layer in layers if layer in earlier}
        shares: dict[int, _Moments] = {}
        per_layer, passes = [], []
        ids, mask, labels = answer_rows(tokenizer, cases, device_of(model))
        head = model.get_output_embeddings()
        # The edited layers are the upper ones: the blocks below the lowest run once for every pass.
        with (trainable_only(model), upper_passes(model, profile.layers, layers[0], ids, mask, chunk=config.forward_batch_size) as run,
              progress_bar(context, total=config.passes, desc=f"{self.name}: passes", unit="pass") as bar):
            pending = list(range(len(cases)))
            for pass_index in range(config.passes):
                keys, grads, out_norms, row_case, correct = read_keys_and_gradients(run, head, labels, pending, modules, config.forward_batch_size)
                passes.append(int((~correct).sum()))
                bar.update()
                if pass_index > 0:
                    rows = ~correct[row_case]
                    if not bool(rows.any()):
                        break
                    keys = {layer: k[rows] for layer, k in keys.items()}
                    grads = {layer: g[rows] for layer, g in grads.items()}
                pending = [row for row, ok in zip(pending, correct.tolist()) if not ok]
                for layer in layers:
                    k, g = keys[layer], grads[layer]
                    if pass_index == 0:
                        shares[layer] = _Moments(k.shape[1], g.shape[1], k.device)
                        shares[layer].add(k, g)
                        moments.hold(layer, shares[layer], handle)
                        first_keys = k.float()
                        earlier.hold(layer, first_keys.T @ first_keys, handle)
                    k_hat = moments[layer].keys.normalise(k, config.prior_tokens)
                    g_hat = moments[layer].grads.normalise(g, config.prior_tokens)
                    step = config.lr if config.lr is not None else config.value_scale * out_norms[layer] / (k.shape[1] * g.shape[1] ** 0.5)
                    shifts = -step * (k_hat * k_hat).sum(1, keepdim=True) * g_hat
                    if config.preserve or (config.keep_earlier and layer in earlier_before):
                        held = config.preserve_weight * len(k) * memory["preserved"][layer] if config.preserve else 0
                        if config.keep_earlier and layer in earlier_before:
                            held = held + config.keep_earlier * earlier_before[layer]
                        drift = None
                        if config.preserve and config.pull_back and layer in memory.get("anchor", {}):
                            moved = (profile.mlp_out_weight(model, layer).detach() - memory["anchor"][layer]).double()
                            drift = config.pull_back * config.preserve_weight * len(k) * memory["preserved"][layer].double() @ moved.T
                        update = preserving_solve(k.to(torch.float64), shifts, config.ridge, held, drift)
                    else:
                        update = ridge_solve(k.to(torch.float64), shifts, config.ridge)
                    profile.add_to_mlp_out(model, layer, update)
                    written = k.to(torch.float64) @ update.T
                    per_layer.append({
                        "pass": pass_index,
                        "layer": layer,
                        "step": step,
                        "shift_norm": float(shifts.norm(dim=1).mean()),
                        "output_norm": out_norms[layer],
                        "update_norm": float(update.norm()),
                        "written_share": float((written * shifts).sum() / (shifts * shifts).sum().clamp(min=1e-30)),
                    })

        # The batches of the stream not yet restored, in the order applied.
        token = next(_CALLS)
        memory["live"].append(token)
        handle.on_restore.append(lambda: memory["live"].remove(token))
        handle.details = {
            "layers": layers,
            "modules": names,
            "tokens": int(shares[layers[0]].keys.count),
            "unwritten_before_each_pass": passes,
            "statistics_tokens": moments[layers[0]].keys.count,
            "per_layer": per_layer,
        }
        return handle


class _Moments:
    """The running statistics of one layer: keys and gradients."""

    def __init__(self, key_width: int, grad_width: int, device: Any) -> None:
        self.keys = RunningMoments(key_width, device)
        self.grads = RunningMoments(grad_width, device)

    def add(self, keys: torch.Tensor, grads: torch.Tensor) -> None:
        self.keys.add(keys)
        self.grads.add(grads)

    def merge(self, other: "_Moments", sign: int = 1) -> None:
        self.keys.merge(other.keys, sign)
        self.grads.merge(other.grads, sign)

    def copy(self) -> "_Moments":
        other = _Moments.__new__(_Moments)
        other.keys, other.grads = self.keys.copy(), self.grads.copy()
        return other

    def __add__(self, other: "_Moments") -> "_Moments":
        """The statistics of both sets of rows (a new instance: :class:`~keditlab.methods.lifelong.HeldSums` keeps the old one)."""
        both = self.copy()
        both.merge(other)
        return both

    def __sub__(self, other: "_Moments") -> "_Moments":
        rest = self.copy()
        rest.merge(other, sign=-1)
        return rest


MEMORY_CLASSES.extend([_Moments, RunningMoments])   # a sequential run saves the running statistics with each call
#: A number per call of the stream, held in its memory's ``live`` list until the call is restored.
_CALLS = itertools.count()


def ridge_solve(keys: torch.Tensor, shifts: torch.Tensor, ridge: float) -> torch.Tensor:
    """``ΔW = Vᵀ (K Kᵀ + λ I)⁻¹ K`` with ``λ = ridge · mean ‖kᵢ‖²``: the ridge least-squares update, ``(out, in)``.

    Solved in the smaller of the two spaces: ``(K Kᵀ + λI)⁻¹`` over the tokens
    when there are fewer tokens than key features, else the equal
    ``(KᵀK + λI)⁻¹`` over the features.
    """
    scale = ridge * float((keys * keys).sum(1).mean())
    n, width = keys.shape
    if n <= width:
        gram = keys @ keys.T + scale * torch.eye(n, dtype=keys.dtype, device=keys.device)
        return torch.linalg.solve(gram, shifts).T @ keys
    system = keys.T @ keys + scale * torch.eye(width, dtype=keys.dtype, device=keys.device)
    return torch.linalg.solve(system, keys.T @ shifts).T


def preserving_solve(keys: torch.Tensor, shifts: torch.Tensor, ridge: float, held: torch.Tensor,
                     drift: torch.Tensor | None = None) -> torch.Tensor:
    """``ΔW = Vᵀ K (KᵀK + H + λI)⁻¹``: the ridge solve with the keys summed in ``H`` held at zero change.

    It minimises ``‖ΔW Kᵀ − Vᵀ‖² + Σ_h ‖ΔW h‖² + λ‖ΔW‖²`` over the edit keys
    (rows of ``K``), ``H = Σ_h h hᵀ``: the shifts written at the edits' keys
    while what the layer writes at the held keys stays as it was (MEMIT's
    preservation term).  The caller builds ``H`` from the preserved unrelated
    texts (``w·n·P̄``: weight, the batch's key count, their second moment) and
    the earlier batches' keys.  Solved in float64 by LU (``torch.linalg.solve``),
    not Cholesky: ``H`` is a sum of second moments taken in float32, whose
    rounding can leave it slightly indefinite, and a Cholesky factorisation
    then fails when the ridge is small next to ``H`` (seen on a single reference edit).

    ``drift`` (``(in, out)``, ``H_p Dᵀ`` for the stream's change ``D`` of the
    weight so far and the held preserved keys ``H_p``) asks the solve to undo
    that change at the preserved keys as well: it minimises
    ``Σ_p ‖(ΔW + D) p‖²`` instead of ``Σ_p ‖ΔW p‖²``.
    """
    keys, shifts = keys.double(), shifts.double()
    scale = ridge * float((keys * keys).sum(1).mean())
    width = keys.shape[1]
    system = keys.T @ keys + held.double() + scale * torch.eye(width, dtype=keys.dtype, device=keys.device)
    right = keys.T @ shifts if drift is None else keys.T @ shifts - drift.double()
    return torch.linalg.solve(system, right).T


def answer_rows(tokenizer, cases, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``prompt + target`` minus the target's last token, right-padded, and the labels: ``labels[t]`` is the token position ``t`` predicts (-100 elsewhere)."""
    rows, labels = [], []
    for case in cases:
        prompt, target = encode_prompt(tokenizer, case.prompt), encode_answer(tokenizer, case.target)
        rows.append(prompt + target[:-1])
        labels.append([-100] * (len(prompt) - 1) + target)
    ids, mask = right_padded(rows, tokenizer.pad_token_id, device)
    label_ids, _ = right_padded(labels, -100, device)
    return ids, mask, label_ids


def read_keys_and_gradients(run, head, labels: torch.Tensor, rows: list[int], modules: dict[int, torch.nn.Module], chunk: int):
    """Keys and loss gradients at every position that predicts a target token, at each module, for the rows ``rows``.

    ``run(part)`` gives the last hidden state of the rows ``part`` of
    :func:`answer_rows`' ``ids`` (see :func:`~keditlab.methods.adaptors.upper_passes`:
    only the blocks from the lowest edited layer up are recomputed); the loss
    is the summed negative log-likelihood of the target tokens.  A zero
    ``probe`` added to each module's output takes the gradient of the loss
    with respect to that output, so no weight needs a gradient and the
    backward pass stops at the lowest edited layer.  Returns per layer the keys
    ``(tokens, d_in)`` and gradients ``(tokens, d_out)`` in float32, the mean
    norm of the module's output at those tokens, each token's row (an index
    into ``rows``) and, per row, whether the model already predicts every
    target token (greedy, teacher-forced).
    """
    keys: dict[int, list[torch.Tensor]] = {layer: [] for layer in modules}
    grads: dict[int, list[torch.Tensor]] = {layer: [] for layer in modules}
    norms: dict[int, list[torch.Tensor]] = {layer: [] for layer in modules}
    row_of_token, correct = [], []
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        probes: dict[int, torch.Tensor] = {}
        where: tuple[torch.Tensor, torch.Tensor] | None = None

        def hook(layer):
            def add_probe(_module, inputs, output):
                keys[layer].append(inputs[0][where].detach().float())
                norms[layer].append(output[where].detach().float().norm(dim=1))
                probes[layer] = torch.zeros_like(output, requires_grad=True)
                return output + probes[layer]
            return add_probe

        length = int((labels[part] != -100).nonzero()[:, 1].max()) + 1
        label_ids = labels[part, :length]
        where = torch.nonzero(label_ids != -100, as_tuple=True)
        with hooks(forward=[(module, hook(layer)) for layer, module in modules.items()]), torch.enable_grad():
            hidden = run(part)
            logits = head(hidden[:, :length][where]).float()
            loss = torch.nn.functional.cross_entropy(logits, label_ids[where], reduction="sum")
            found = torch.autograd.grad(loss, [probes[layer] for layer in modules])
        hits = (logits.detach().argmax(-1) == label_ids[where]).float()
        misses = torch.zeros(len(part), device=hits.device).index_add_(0, where[0], 1 - hits)
        correct.append(misses == 0)
        row_of_token.append(where[0] + start)
        for layer, grad in zip(modules, found):
            grads[layer].append(grad[where].float())
    return ({layer: torch.cat(v) for layer, v in keys.items()}, {layer: torch.cat(v) for layer, v in grads.items()},
            {layer: float(torch.cat(v).mean()) for layer, v in norms.items()}, torch.cat(row_of_token), torch.cat(correct))
