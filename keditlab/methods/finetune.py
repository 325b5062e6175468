"""Fine-tuning baselines: FT-L and FT-M.

The simplest way to change a fact is to train on it.  Both baselines here train
only the MLP output projection of the chosen layer(s), with Adam, for at most
``steps`` steps, and stop early once the loss is small.  They differ in the
loss, which matters a great deal:

``ft-l``  Constrained fine-tuning (Zhu et al., 2020, "Modifying Memories in
    Transformer Models", arXiv:2012.00363), as used as a baseline by ROME
    (Meng et al., 2022): the model reads the prompt alone, and the loss is the
    mean negative log-probability of the target's tokens *at the prompt's last
    position*.  After every step each weight is clamped to within
    ``norm_constraint`` of its original value (an L∞ ball), which limits the
    damage and also limits what the edit can achieve: a multi-token target is
    learned as a bag of next tokens, not as a sequence.

``ft-m``  Fine-tuning with a masked loss (the FT-M of Zhang et al., 2024,
    "A Comprehensive Study of Knowledge Editing for Large Language Models",
    arXiv:2401.01286): the model reads prompt + target (teacher forcing) and the
    cross-entropy is taken on the target tokens only; the prompt's tokens are
    masked out of the loss.  No constraint unless ``norm_constraint`` is set.

Given several cases, both train on all of them together.

``preserve`` (keditlab's addition, not in either paper; off by default) adds
MEMIT's preservation term (Meng et al., ICLR 2023) to the loss: the change of
each tuned matrix's output at the keys of unrelated prompts (texts sampled
from the model, or a spec's ``stats.unrelated`` questions), relative to that
output's size and squared, times ``preserve_weight``
(:mod:`keditlab.methods.preservation`, shared with LocFT-BF).  Early stopping
still looks at the edit loss alone.  An edit that changes *how* the model
answers rather than one fact (KnowEdit's Sanitation: "I don't know." to the
questions to forget) spills onto every question the tuned layer reads; the
penalty is what keeps the other answers (``docs/methods.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from keditlab.methods.base import Capabilities, EditContext, EditHandle, EditMethod, MethodConfig, MethodConfigError, MethodPlan
from keditlab.methods.common import share_of_rms, target_logits, trainable_only
from keditlab.methods.layers import factual_recall_layer
from keditlab.methods.lifelong import preserve_setting, preserve_weight_setting
from keditlab.methods.preservation import PRESERVE_WEIGHT, Preservation, held_anchors
from keditlab.methods.progress import progress_bar
from keditlab.models.precision import MasterWeights
from keditlab.models.sampling import device_of, right_padded
from keditlab.models.tokens import encode_answer, encode_prompt

def masked_batch(tokenizer, cases, device, eos: bool = False):
    """``prompt + target`` rows (each target followed by the end-of-sequence token when ``eos``), right-padded.

    Returns ``(ids, mask, labels)``: ``labels`` hold the target's tokens (and
    EOS) where they are, ``-100`` over the prompt and the padding, so a loss on
    ``labels`` is a loss on the answer alone (teacher forcing).
    """
    rows, labels = [], []
    for case in cases:
        prompt, target = encode_prompt(tokenizer, case.prompt), encode_answer(tokenizer, case.target)
        if eos:
            target = target + [tokenizer.eos_token_id]
        rows.append(prompt + target)
        labels.append([-100] * len(prompt) + target)
    ids, mask = right_padded(rows, tokenizer.pad_token_id, device)
    label_ids, _ = right_padded(labels, -100, device)
    return ids, mask, label_ids


def masked_nll(model, batch, per_edit: bool = False) -> torch.Tensor:
    """Cross-entropy of the labelled tokens of a :func:`masked_batch`, logits computed only where they are predicted.

    ``per_edit=False``: the mean over all labelled tokens of the batch (FT-M);
    ``True``: each edit's mean over its own tokens, then the mean over edits
    (a long answer weighs as much as a short one).
    """
    ids, mask, labels = batch
    where = torch.nonzero(labels[:, 1:] != -100, as_tuple=True)   # position t predicts the label at t + 1
    logits = target_logits(model, ids, mask, where).float()
    return _labelled_nll(logits, labels, where, per_edit)


def per_edit_nll(head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """:func:`masked_nll` with ``per_edit=True`` from the last hidden states already computed (``head``: the output embedding)."""
    where = torch.nonzero(labels[:, 1:] != -100, as_tuple=True)
    return _labelled_nll(head(hidden[where]).float(), labels, where, per_edit=True)


def _labelled_nll(logits: torch.Tensor, labels: torch.Tensor, where, per_edit: bool) -> torch.Tensor:
    token_nll = torch.nn.functional.cross_entropy(logits, labels[:, 1:][where], reduction="none")
    if not per_edit:
        return token_nll.mean()
    rows = where[0]
    per_row = torch.zeros(labels.shape[0], device=labels.device).index_add_(0, rows, token_nll)
    counts = torch.bincount(rows, minlength=labels.shape[0]).clamp(min=1)
    return (per_row / counts).mean()


def adam_until(params, loss_of, steps: int, lr: float | Sequence[float], early_stop_loss: float, after_step=None,
               progress: Any = False, desc: str = "training", penalty=None) -> list[float]:
    """Adam on ``params`` for at most ``steps`` steps, stopping once ``loss_of()`` is below ``early_stop_loss``.

    ``lr`` is one learning rate, or one per parameter (see :func:`~keditlab.methods.common.share_of_rms`).

    ``after_step(step)`` runs after each optimiser step (FT-L's clamp, AdaLoRA's
    budget allocation).  ``penalty()``, when given, is added to the loss each
    step is taken on (the preservation term), but neither recorded nor compared
    with ``early_stop_loss``.  Returns the loss before each step taken (and the last one).
    ``progress`` (an ``EditContext`` or a bool) shows a bar over the steps.
    Half-precision ``params`` are trained through float32 master copies
    (:class:`~keditlab.models.precision.MasterWeights`); what ``after_step``
    writes into them is taken into the masters.
    """
    weights = MasterWeights(params)   # half-precision weights are trained through float32 copies
    rates = list(lr) if isinstance(lr, Sequence) else [lr] * len(weights.masters)
    optimiser = torch.optim.Adam([{"params": [master], "lr": rate} for master, rate in zip(weights.masters, rates)])
    losses: list[float] = []
    with progress_bar(progress, total=steps, desc=desc) as bar:
        for step in range(steps):
            loss = loss_of()
            losses.append(float(loss.detach()))
            bar.update()
            if losses[-1] < early_stop_loss:
                break
            weights.zero_grad()
            (loss if penalty is None else loss + penalty()).backward()
            weights.pull_grads()
            optimiser.step()
            weights.push()
            if after_step is not None:
                after_step(step)
                weights.absorb()
    return losses


@dataclass
class FineTuneConfig(MethodConfig):
    #: Empty ``lr``: this share of each tuned matrix's root-mean-square (:func:`~keditlab.methods.common.share_of_rms`).
    LR_SHARE: ClassVar[float] = 0.0055
    #: Empty ``norm_constraint``: this share of the RMS, or no constraint when None.
    NORM_SHARE: ClassVar[float | None] = None

    layers: list[int] | None = field(
        default=None,
        metadata={"help": "Layers whose MLP output projection is fine-tuned. Empty: one layer at 17% of the depth (layer 5 of 30 on the embedded model).", "layer_index": True},
    )
    steps: int = field(default=25, metadata={"minimum": 1, "help": "Most optimisation steps."})
    lr: float | None = field(default=None, metadata={"exclusive_minimum": 0, "help": "Adam learning rate. Empty: 0.55% of the root-mean-square of the tuned matrix's entries "
                                                    "(1e-3 on the embedded model; Gemma 3 270M's entries are 13 times smaller, and so is its rate)."})
    norm_constraint: float | None = field(default=None, metadata={"exclusive_minimum": 0, "help": "Each weight stays within ± this of its original value (L-infinity). Empty: no constraint."})
    early_stop_loss: float = field(default=0.05, metadata={"minimum": 0, "help": "Stop once the loss is below this."})
    preserve: int = preserve_setting(
        0, held="Unrelated texts sampled from the model before the stream's first edit whose keys the tuned matrices must keep "
                "answering as before (MEMIT's preservation term as a penalty)",
        without="plain fine-tuning, as the paper")
    preserve_weight: float = preserve_weight_setting(
        PRESERVE_WEIGHT, weighs="the preservation penalty: the change of each tuned matrix's output at the preserved keys, "
                                "relative to that output's size, squared, averaged over the matrices (used when preserve > 0).")

    def resolved_layers(self, num_layers: int) -> list[int]:
        """The tuned layers: ``layers``, or the factual-recall layer when empty."""
        return sorted(set(self.layers)) if self.layers is not None else [factual_recall_layer(num_layers)]


@dataclass
class FineTuneLConfig(FineTuneConfig):
    """FT-L's defaults: an L∞ ball of ±1.1% of the matrix's RMS (±2e-3 on the embedded
    model) lets the embedded model take 5 of 6 quickstart edits; ROME's ±5e-4 (for
    GPT-2 XL) barely moves a 135M model."""

    LR_SHARE: ClassVar[float] = 0.011
    NORM_SHARE: ClassVar[float | None] = 0.011

    lr: float | None = field(default=None, metadata={"exclusive_minimum": 0, "help": "Adam learning rate. Empty: 1.1% of the root-mean-square of the tuned matrix's entries (2e-3 on the embedded model)."})
    norm_constraint: float | None = field(default=None, metadata={"exclusive_minimum": 0, "help": "Each weight stays within ± this of its original value (L-infinity). "
                                                                   "Empty: ± 1.1% of the root-mean-square of the tuned matrix's entries (2e-3 on the embedded model)."})


class _FineTune(EditMethod, family="fine-tuning",
                capabilities=Capabilities(batch=True, sequential=True, needs_statistics=False)):
    """Shared loop; subclasses choose the batch and the loss."""

    @classmethod
    def plan(cls, profile, config: FineTuneConfig, model=None) -> MethodPlan:
        """Its layers' MLP output matrices, trained with Adam (gradients and two moments), backward from the lowest;
        with ``preserve``, an anchor copy of each for the preservation term."""
        layers = config.resolved_layers(profile.num_layers)
        size = profile.hidden_size * profile.mlp_size
        return MethodPlan.mlp_out(profile, layers, backward_from=layers[0], trained=len(layers) * size,
                                  held=len(layers) * size if config.preserve else 0)

    def _apply(self, model, tokenizer, profile, cases, config: FineTuneConfig, context: EditContext) -> EditHandle:
        layers = config.resolved_layers(profile.num_layers)
        names = [profile.mlp_out_parameter(layer) for layer in sorted(set(layers))]   # an MoE layer: every expert's down projection
        if config.preserve and profile.is_moe:
            raise MethodConfigError(
                f"{self.name}: preserve reads the keys of one down projection, and an MoE layer's are per expert. "
                "Fix: leave preserve at 0 on a mixture-of-experts model (the paper's method), or use memit / alphaedit.")
        handle = EditHandle(self.name, model, self.snapshot(model, names))
        params = dict(model.named_parameters())
        trained = [params[name] for name in names]
        batch = self._batch(tokenizer, cases, device_of(model))

        rates = [config.lr if config.lr is not None else share_of_rms(config.LR_SHARE, param) for param in trained]
        bounds = [config.norm_constraint if config.norm_constraint is not None
                  else share_of_rms(config.NORM_SHARE, param) if config.NORM_SHARE is not None else None for param in trained]

        def clamp(_step: int) -> None:
            with torch.no_grad():
                for name, param, bound in zip(names, trained, bounds):
                    if bound is not None:
                        original = handle.originals[name].to(param.device)
                        param.copy_(torch.clamp(param, original - bound, original + bound))

        preservation = None
        if config.preserve:   # anchors and keys of the stream's first call, kept in the context's memory (as LocFT-BF's)
            tuned = sorted(set(layers))
            anchors = held_anchors(context.memory.setdefault(self.name, {}), model, tokenizer, profile, tuned, config.preserve, context)
            preservation = Preservation(anchors, tuned, config.preserve_weight, lambda layer: profile.mlp_out_weight(model, layer))

        with trainable_only(model, names):
            losses = adam_until(trained, lambda: self._loss(model, batch), config.steps, rates, config.early_stop_loss, clamp,
                                progress=context, desc=f"{self.name}: steps",
                                penalty=preservation if preservation is not None and config.preserve_weight else None)
        handle.details = {"layers": layers, "parameters": names, "steps": len(losses), "loss_first": losses[0], "loss_last": losses[-1],
                          "lr": rates, "norm_constraint": bounds}
        if preservation is not None:
            handle.details["preserved_change"] = preservation.changes()
        return handle

    def _batch(self, tokenizer, cases, device):  # pragma: no cover
        raise NotImplementedError

    def _loss(self, model, batch) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class FineTuneM(_FineTune, name="ft-m", paper="Zhang et al., 2024, arXiv:2401.01286", config_class=FineTuneConfig):
    """Fine-tuning on the target tokens only, prompt masked (FT-M)"""

    def _batch(self, tokenizer, cases, device):
        return masked_batch(tokenizer, cases, device)

    def _loss(self, model, batch) -> torch.Tensor:
        return masked_nll(model, batch)


class FineTuneL(_FineTune, name="ft-l", paper="Zhu et al., 2020, arXiv:2012.00363", config_class=FineTuneLConfig):
    """Constrained fine-tuning of one layer (Zhu et al., 2020; the ROME baseline)"""

    def _batch(self, tokenizer, cases, device):
        prompts = [encode_prompt(tokenizer, case.prompt) for case in cases]
        targets = [encode_answer(tokenizer, case.target) for case in cases]
        ids, mask = right_padded(prompts, tokenizer.pad_token_id, device)
        last = torch.tensor([len(p) - 1 for p in prompts], device=device)
        target_ids, target_mask = right_padded(targets, 0, device)
        return ids, mask, last, target_ids, target_mask

    def _loss(self, model, batch) -> torch.Tensor:
        ids, mask, last, target_ids, target_mask = batch
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        log_probs = logits[torch.arange(ids.shape[0], device=ids.device), last].log_softmax(-1)
        picked = log_probs.gather(1, target_ids) * target_mask
        return -(picked.sum(1) / target_mask.sum(1)).mean()
