"""MEMIT's preservation term as a soft penalty on a fine-tuning loss, shared by LocFT-BF, FT-M and FT-L.

Meng, Sharma, Andonian, Belinkov and Bau, "Mass-Editing Memory in a
Transformer", ICLR 2023 (arXiv:2210.07229).  MEMIT writes new keys ``K`` →
values ``V`` into an MLP output matrix ``W₀`` and asks it, *at the same time*,
to keep writing what it wrote at a large sample of other keys ``P`` (its
``C = E[p pᵀ]``, the key covariance):

    minimise  ‖(W₀ + Δ) K − V‖²  +  λ · n · tr(Δ C Δᵀ)

The second term is the preservation term: ``tr(Δ C Δᵀ)`` is the mean of
``‖Δ p‖²`` over the preserved keys, how far the layer's output at them moves.
MEMIT solves the sum in closed form; a fine-tuning method cannot (its loss is
a cross-entropy through the rest of the model), but it can add the same term
to its loss and let the optimiser weigh the two.  That is what this module
provides:

* :func:`preservation_penalty`: ``tr(ΔW C ΔWᵀ) / tr(W₀ C W₀ᵀ)`` with
  ``ΔW = W − W₀`` and ``W₀`` the *anchor* (the matrix before the stream's
  first edit): the relative change of the layer's output at the preserved
  keys, squared, so that one weight means the same on every layer and model;
* :func:`held_anchors`: the anchors and the second moments ``C`` of the keys
  of unrelated prompts (:func:`~keditlab.methods.adaptors.preserved_keys`:
  texts sampled from the model, or a spec's ``stats.unrelated`` questions,
  ``EditContext.unrelated``), read once per stream and kept in the method's
  ``EditContext.memory``;
* :class:`Preservation`: the weighted penalty of one ``apply`` call, a mean
  over the tuned matrices, ready to add to a loss.

Who uses it.  LocFT-BF's ``preserve`` / ``preserve_weight`` and FT-M's and
FT-L's ``preserve`` / ``preserve_weight`` are keditlab's additions, not their
papers': the papers fine-tune with the edit loss alone (``preserve: 0``, the
default).  The penalty is what lets a fine-tuned edit that changes *how the
model answers* (KnowEdit's Sanitation: "I don't know." to the questions to
forget) leave the other questions' answers alone (``docs/methods.md``).

The anchors are kept in the method's memory, keyed by layer, from the first
call of a stream on: the penalty holds the whole stream's change of each
matrix, not only the latest call's, and a down projection's keys do not depend
on that matrix, so a later call would read the same ones.  Restoring an edit
never needs them (the handle's snapshot puts the weights back); after a
restore the anchors are the weights again, so the next call (a batch, or
another single edit) uses them as they are, and the keys are read once per run.
They are read again only if a call asks for another number of preserved texts
(another method entry of the same method).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from keditlab.methods.adaptors import preserved_keys

#: Default weight of the preservation penalty (see :func:`preservation_penalty`).
PRESERVE_WEIGHT = 100.0


def preservation_penalty(weight: torch.Tensor, anchor: torch.Tensor, second_moment: torch.Tensor,
                         scale: torch.Tensor | None = None) -> torch.Tensor:
    """``tr(ΔW C ΔWᵀ) / tr(W₀ C W₀ᵀ)``, ``ΔW = W − W₀``: how much the layer's output moves at the preserved keys.

    ``C = PᵀP / n`` is the second moment of the keys of unrelated text
    (:func:`~keditlab.methods.adaptors.preserved_keys`), so the numerator is
    the mean squared change ``‖ΔW p‖²`` of what the layer writes at those
    tokens and the denominator the mean of ``‖W₀ p‖²``: the relative change,
    squared.  This is MEMIT's preservation term (Meng et al., ICLR 2023) as a
    soft penalty on a fine-tuning loss.

    The denominator does not change while training: pass it as ``scale``
    (:func:`penalty_scale`) to compute it once per call.  The numerator is
    one matrix product, value and gradient (:class:`_QuadraticForm`).
    """
    delta = (weight - anchor).float()
    return _QuadraticForm.apply(delta, second_moment) / (penalty_scale(anchor, second_moment) if scale is None else scale)


def penalty_scale(anchor: torch.Tensor, second_moment: torch.Tensor) -> torch.Tensor:
    """``tr(W₀ C W₀ᵀ)``, the denominator of :func:`preservation_penalty`."""
    anchor = anchor.detach().float()
    return (anchor @ second_moment * anchor).sum()


class _QuadraticForm(torch.autograd.Function):
    """``tr(Δ C Δᵀ)`` for a symmetric ``C``, and its gradient ``2 Δ C`` from the product the value is made of.

    Autograd would compute the product ``Δ C`` for the value and ``Δ Cᵀ`` again
    for the gradient; with eleven 576 x 1536 matrices held against two such
    ``C`` at every step that second product was most of LocFT-BF's time.
    """

    @staticmethod
    def forward(ctx, delta: torch.Tensor, second_moment: torch.Tensor) -> torch.Tensor:
        product = delta @ second_moment
        ctx.save_for_backward(product)
        return (product * delta).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (product,) = ctx.saved_tensors
        return 2 * grad * product, None


def held_anchors(memory: dict[str, Any], model, tokenizer, profile, layers: Sequence[int], count: int,
                 context) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """``layer → (W₀, C)`` for every layer of ``layers``, kept in ``memory["anchors"]`` (a method's ``context.memory`` entry).

    ``W₀`` is the MLP output matrix as ``(out, in)`` when the layer is first
    met (the stream's first call), ``C`` the second moment of its keys over
    ``count`` unrelated texts, or at most ``count`` of ``context.unrelated``'s
    questions (:func:`~keditlab.methods.adaptors.preserved_keys`), read as
    one-off set-up (``context.setup()``).  Layers already held are used as
    they are; with ``count`` 0 nothing is read (the anchors held so far are
    returned).  Held anchors read for another ``count`` are dropped and read
    again.
    """
    anchors = memory.setdefault("anchors", {})
    if count and memory.get("anchors_count", count) != count:
        anchors.clear()
    missing = [layer for layer in layers if layer not in anchors]
    if count and missing:
        with context.setup():
            modules = {layer: model.get_submodule(profile.mlp_out_module(layer)) for layer in missing}
            keys = preserved_keys(model, tokenizer, modules, count, context.seed, context.unrelated)
        for layer in missing:
            anchor = profile.mlp_out_weight(model, layer).detach().clone()
            anchors[layer] = (anchor, keys[layer].to(anchor.device))
    if count:
        memory["anchors_count"] = count
    return anchors


class Preservation:
    """The preservation penalty of one call: ``weight ×`` the mean of :func:`preservation_penalty` over the tuned matrices.

    ``anchors`` from :func:`held_anchors`; ``out_in(layer)`` returns the tuned
    matrix as ``(out, in)`` with gradients flowing
    (``profile.mlp_out_weight(model, layer)``).  The denominators are computed
    once, here.  ``penalty()`` is added to a loss; :meth:`changes` reports the
    relative change of each layer's output at the preserved keys.
    """

    def __init__(self, anchors: dict[int, tuple[torch.Tensor, torch.Tensor]], layers: Sequence[int], weight: float,
                 out_in: Callable[[int], torch.Tensor]) -> None:
        self.layers = list(layers)
        self.anchors = {layer: anchors[layer] for layer in self.layers}
        self.weight = weight
        self.out_in = out_in
        self.scales = {layer: penalty_scale(*self.anchors[layer]) for layer in self.layers}

    def __call__(self) -> torch.Tensor:
        return self.weight * sum(
            preservation_penalty(self.out_in(layer), *self.anchors[layer], self.scales[layer]) for layer in self.layers
        ) / len(self.layers)

    def changes(self) -> dict[int, float]:
        """``layer → ‖ΔW P‖ / ‖W₀ P‖`` now (the square root of the unweighted penalty), rounded to 4 places."""
        return {layer: round(float(preservation_penalty(self.out_in(layer).detach(), *self.anchors[layer])) ** 0.5, 4)
                for layer in self.layers}
