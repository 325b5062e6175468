"""LocFT-BF: localised fine-tuning, run breadth-first.

Yang, Tang, Zang, Su, Cao, Wang, Shen, Cheng and Sun, "Fine-tuning Done Right
in Model Editing", ICLR 2026 (arXiv:2509.22072).

Fine-tuning has long been the weak baseline of model editing.  The paper
traces that to *how* it was run, not to fine-tuning itself: the editing code
bases train *depth-first*, one edit (or one batch) to convergence before the
next, which over-fits each edit and lets later edits overwrite earlier ones.
Run the way models are normally trained it does much better:

* **Breadth-first.**  Epochs over the whole edit set: each epoch shuffles the
  edits and takes one optimiser step per mini-batch, so every edit is
  revisited a little at a time and none is driven to zero loss alone.  A
  mini-batch whose loss is already below ``early_stop_loss`` takes no step,
  and training stops after the first epoch whose mean loss is below it.
* **Localised.**  Only one weight matrix is tuned.  The paper's survey of
  tuning locations (layers × modules, several model families) finds the MLP
  *output* projection (``down_proj``) of a *late* layer the best trade between
  writing the edits and keeping the model's other abilities (layer 22 of 32 on
  Llama-3-8B); early layers and attention disturb more for the same edit
  success.  keditlab tunes ``down_proj`` at a fraction of the depth
  (:func:`~keditlab.methods.layers.tuning_layer`).
* **EOS after each target.**  The target is followed by the end-of-sequence
  token and the loss covers the target and that EOS (teacher forcing; the
  prompt is masked out), as in ordinary supervised fine-tuning, so the edited
  model stops after the new answer instead of running on.

The loss of a mini-batch is each edit's mean token negative log-likelihood,
averaged over the edits; the optimiser is Adam.

``layers`` (keditlab's) tunes several late ``down_proj`` matrices together,
each with its own Adam step; the paper tunes one, and one is the default.  On
the 135M embedded model one 1,536 × 576 matrix cannot take a thousand new
answers and keep unrelated ones; eleven late ones can (``docs/methods.md``).
``span: late`` names those layers by the model's depth (UltraEdit's late
layers, :func:`~keditlab.methods.layers.late_layers`), so a spec says it once
for every model.

``preserve`` (keditlab's, off by default) adds MEMIT's preservation term
(Meng et al., ICLR 2023) to the loss as a soft penalty: the change of each
tuned matrix's output at the keys of unrelated prompts, relative and squared,
weighted by ``preserve_weight``.  The term, its anchors and keys are shared
with FT-M and FT-L (:mod:`keditlab.methods.preservation`).

Sequential editing: each ``apply`` trains on its own edits breadth-first, on
top of the model as earlier calls left it; its handle restores the tuned
matrices.  A later call sees only its own edits, so it can overwrite earlier
ones; ``keep_earlier`` (keditlab's, off by default) adds a penalty on how much
the call changes what each tuned matrix writes at the earlier calls' keys (the
inputs of ``down_proj`` where their targets are predicted, summed in the
context's memory and taken back out on restore), as UltraEdit's and MEMIT's
sequential solves hold earlier edits.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from keditlab.methods.base import (
    Capabilities, EditContext, EditHandle, EditMethod, MethodConfig, MethodConfigError, MethodPlan, choice_setting,
)
from keditlab.methods.common import share_of_rms, trainable_only
from keditlab.models.sampling import device_of
from keditlab.methods.adaptors import upper_passes
from keditlab.methods.finetune import masked_batch, per_edit_nll
from keditlab.methods.layers import chosen_layers, late_layers, tuning_layer
from keditlab.methods.lifelong import HeldSums, KeySum, keep_earlier_setting, preserve_setting, preserve_weight_setting
from keditlab.methods.preservation import PRESERVE_WEIGHT, Preservation, held_anchors, penalty_scale, preservation_penalty
from keditlab.methods.progress import progress_bar
from keditlab.models.hooks import hooks
from keditlab.models.precision import MasterWeights

#: Adam's step, as a share of the tuned weight's root-mean-square (:func:`~keditlab.methods.common.share_of_rms`).
LR_SHARE_OF_WEIGHT_RMS = 0.01


def _target_keys(run, modules: dict[int, torch.nn.Module], labels: torch.Tensor, rows: int,
                 chunk: int = 64) -> dict[int, torch.Tensor]:
    """Each module's inputs at every position that predicts a labelled token, ``(tokens, d_in)`` in float64.

    They do not depend on the tuned matrices (their own inputs, and the blocks
    below the lowest are fixed), so they are read before training, through
    ``run`` (:func:`~keditlab.methods.adaptors.upper_passes`).
    """
    found: dict[int, list[torch.Tensor]] = {layer: [] for layer in modules}
    for start in range(0, rows, chunk):
        part = list(range(start, min(rows, start + chunk)))
        grabbed: dict[int, torch.Tensor] = {}
        grabs = [(module, lambda _m, inputs, _o, layer=layer: grabbed.__setitem__(layer, inputs[0].detach()))
                 for layer, module in modules.items()]
        with hooks(forward=grabs), torch.no_grad():
            run(part)
        for layer, keys in grabbed.items():
            predicting = labels[part, 1:keys.shape[1] + 1] != -100   # position t predicts the label at t + 1
            found[layer].append(keys[:, :predicting.shape[1]][predicting].double())
    return {layer: torch.cat(parts) for layer, parts in found.items()}


@dataclass
class LocFTConfig(MethodConfig):
    layers: list[int] | None = field(
        default=None,
        metadata={"help": "The layers whose MLP output projections are fine-tuned, together. Empty: one layer at 70% of the depth "
                          "(layer 21 of 30 on the embedded model), as the paper; see span.",
                  "layer_index": True},
    )
    span: str = choice_setting(
        "one", ("one", "late"),
        "The layers tuned when layers is empty: 'one', the layer at 70% of the depth (the paper); 'late', every layer "
        "from 60% of the depth to the last-but-one, the layers UltraEdit edits (18-28 of 30 on the embedded model), "
        "which a long stream into a small model needs (docs/methods.md).")
    epochs: int = field(default=10, metadata={"minimum": 1, "help": "Most passes over the apply call's whole edit set (the paper: 25)."})
    mini_batch_size: int = field(
        default=10,
        metadata={"minimum": 1, "help": "Edits per optimiser step; each epoch visits every edit once, in a new order "
                                        "(the paper's 100 is for edit sets of thousands; 10 gives an apply call of 100 edits ten steps an epoch)."},
    )
    lr: float | None = field(
        default=None,
        metadata={"exclusive_minimum": 0,
                  "help": "Adam learning rate. Empty: 1% of the root-mean-square of the tuned weight (2e-3 on the embedded model; "
                          "the paper's 5e-4 is about 3% of a 7B model's down_proj RMS)."},
    )
    early_stop_loss: float = field(
        default=0.01,
        metadata={"minimum": 0, "help": "A mini-batch whose loss is below this takes no step; training stops after an epoch whose mean loss is below it."},
    )
    eos: bool = field(default=True, metadata={"help": "Append the end-of-sequence token after each target and train on it too."})
    preserve: int = preserve_setting(
        0, held="Unrelated texts sampled from the model before the stream's first edit whose keys the tuned matrix must keep "
                "answering as before",
        without="the paper's plain fine-tuning")
    keep_earlier: float = keep_earlier_setting(
        0.0, holds="Weight of a penalty on the change this call makes to what the tuned matrix writes at the keys of the "
                   "stream's earlier calls (relative, squared, like preserve_weight)",
        note="", later="later calls free to overwrite earlier edits")
    preserve_weight: float = preserve_weight_setting(
        PRESERVE_WEIGHT, weighs="the preservation penalty: the change of each tuned matrix's output at the preserved keys, "
                                "relative to that output's size, squared, averaged over the matrices (used when preserve > 0).")

    def resolved_layers(self, num_layers: int) -> list[int]:
        """The tuned layers: ``layers``, or when empty the one at 70% of the depth (``span: one``) or the late layers (``span: late``)."""
        return chosen_layers(self.layers, late_layers(num_layers) if self.span == "late" else [tuning_layer(num_layers)])


class LocFTBF(EditMethod, name="locft-bf", family="fine-tuning", paper="Yang et al., ICLR 2026, arXiv:2509.22072",
              config_class=LocFTConfig,
              capabilities=Capabilities(batch=True, sequential=True, needs_statistics=False, changes_weights=True, restorable=True)):
    """Localised fine-tuning of one late MLP, breadth-first over mini-batches (Yang et al., 2026)"""

    @classmethod
    def plan(cls, profile, config: LocFTConfig, model=None) -> MethodPlan:
        """Its late layers' MLP output matrices, trained with Adam, backward from the lowest; an anchor copy of each for the preservation term."""
        layers = config.resolved_layers(profile.num_layers)
        size = profile.hidden_size * profile.mlp_size
        return MethodPlan.mlp_out(profile, layers, backward_from=layers[0], trained=len(layers) * size,
                                  held=len(layers) * size if config.preserve else 0)

    def _apply(self, model, tokenizer, profile, cases, config: LocFTConfig, context: EditContext) -> EditHandle:
        layers = config.resolved_layers(profile.num_layers)
        modules = {layer: model.get_submodule(profile.mlp_out_module(layer)) for layer in layers}
        names = [profile.mlp_out_parameter(layer) for layer in layers]   # an MoE layer: every expert's down projection
        if profile.is_moe and (config.preserve or config.keep_earlier):
            raise MethodConfigError(
                f"{self.name}: preserve and keep_earlier read the keys of one down projection, and an MoE layer's are per expert. "
                "Fix: leave preserve and keep_earlier at 0 on a mixture-of-experts model (the paper's method), or use memit / alphaedit.")
        handle = EditHandle(self.name, model, self.snapshot(model, names))
        parameters = dict(model.named_parameters())
        weights = {layer: parameters[name] for layer, name in zip(layers, names)}
        # One Adam group per matrix, each with its own step (see LR_SHARE_OF_WEIGHT_RMS).
        lrs = {layer: config.lr if config.lr is not None else share_of_rms(LR_SHARE_OF_WEIGHT_RMS, w) for layer, w in weights.items()}
        masters = MasterWeights([weights[layer] for layer in layers])   # float32 copies of half-precision weights
        optimiser = torch.optim.Adam([{"params": [master], "lr": lrs[layer]} for layer, master in zip(layers, masters.masters)])

        def out_in(layer: int) -> torch.Tensor:   # the tuned weight as (out, in), gradients flowing
            return profile.mlp_out_weight(model, layer)

        memory = context.memory.setdefault(self.name, {})
        # The anchor and the keys are those of the stream's first call on each layer: the penalty
        # holds the whole stream's change of the matrix, not only this call's (keditlab.methods.preservation).
        anchors = held_anchors(memory, model, tokenizer, profile, layers, config.preserve, context)
        earlier = memory.setdefault("earlier", HeldSums())
        held_before = {layer: earlier.get(layer) for layer in layers}   # KeySum (Σ kkᵀ, count) of the earlier calls' keys
        call_start = {layer: out_in(layer).detach().clone() for layer in layers}
        # second moment of the earlier calls' keys, held in this call's loss (formed once per call, not per step)
        earlier_moments = ({layer: held.second_moment().float() for layer, held in held_before.items() if held is not None}
                           if config.keep_earlier else {})

        # the penalties' denominators, fixed while training
        preservation = Preservation(anchors, layers, config.preserve_weight, out_in) if config.preserve else None
        earlier_scales = {layer: penalty_scale(call_start[layer], moment) for layer, moment in earlier_moments.items()}

        def penalties() -> torch.Tensor:
            """The preservation and keep-earlier penalties, each a mean over the tuned matrices."""
            total = torch.zeros((), device=device_of(model))
            if preservation is not None and config.preserve_weight:
                total = total + preservation()
            if earlier_moments:
                total = total + config.keep_earlier * sum(
                    preservation_penalty(out_in(layer), call_start[layer], moment, earlier_scales[layer])
                    for layer, moment in earlier_moments.items()) / len(layers)
            return total

        ids, mask, labels = masked_batch(tokenizer, cases, device_of(model), eos=config.eos)
        head = model.get_output_embeddings()
        order = list(range(len(cases)))
        shuffler = random.Random(context.seed)
        epoch_losses: list[float] = []
        steps = 0
        # Only the down_proj matrices are trained, so the blocks below the lowest are run once for all
        # edits and each step recomputes from there up (about a third of the model at the default layer).
        with (trainable_only(model, names), upper_passes(model, profile.layers, layers[0], ids, mask) as run,
              progress_bar(context, total=config.epochs, desc=f"{self.name}: epochs", unit="epoch") as bar):
            edit_keys = _target_keys(run, modules, labels, len(cases)) if config.keep_earlier else {}
            for _epoch in range(config.epochs):
                shuffler.shuffle(order)
                total = 0.0
                for start in range(0, len(order), config.mini_batch_size):
                    rows = order[start:start + config.mini_batch_size]
                    hidden = run(rows)
                    loss = per_edit_nll(head, hidden, labels[rows, :hidden.shape[1]])
                    total += float(loss.detach()) * len(rows)
                    if float(loss.detach()) < config.early_stop_loss:
                        continue
                    masters.zero_grad()
                    (loss + penalties()).backward()
                    masters.pull_grads()
                    optimiser.step()
                    masters.push()
                    steps += 1
                epoch_losses.append(total / len(order))
                bar.update()
                if epoch_losses[-1] < config.early_stop_loss:
                    break
        if config.keep_earlier:   # this call's keys join the held ones; restore takes them back out
            for layer, keys in edit_keys.items():
                earlier.hold(layer, KeySum.of(keys), handle)
        for w in weights.values():
            w.grad = None
        handle.details = {
            "layers": layers,
            "parameters": names,
            "lr": lrs,
            "epochs": len(epoch_losses),
            "steps": steps,
            "loss_first": epoch_losses[0],
            "loss_last": epoch_losses[-1],
            "epoch_losses": [round(x, 4) for x in epoch_losses],
            "preserved_change": preservation.changes() if preservation is not None else None,
        }
        return handle
