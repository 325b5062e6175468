"""Which layers a method edits when the spec names none: every default-layer rule, in one place.

Each rule is a fraction of the depth, so it carries over from the embedded
30-layer SmolLM2-135M to deeper models; the numbers in the docstrings are
the embedded model's.  A method names the rule it uses, and the rules do not
mean the same thing, so each has a name that says what it picks:

=================================  ===================================  ============================
rule                               picks                                used by
=================================  ===================================  ============================
:func:`factual_recall_layer`       17% of the depth (layer 5 of 30)     ROME, r-ROME, FT, LoRA
:func:`memit_window`               a sixth of the depth, ending there   MEMIT, EMMET, AlphaEdit
                                   (layers 1-5 of 30)
:func:`late_layers`                60% of the depth up to the           UltraEdit
                                   last-but-one (layers 18-28 of 30)
:func:`tuning_layer`               70% of the depth (layer 21 of 30)    LocFT-BF
:func:`adaptor_layer`              80% of the depth (layer 24 of 30)    GRACE, WISE
:func:`upper_half`                 the upper half (layers 15-29 of 30)  knowledge neurons
:func:`last_layers`                the last three (layers 27-29 of 30)  MEND
:func:`last_layer`                 the last layer (layer 29 of 30)      T-Patcher
=================================  ===================================  ============================

``layer: auto`` / ``layers: auto`` replaces the factual-recall layer by the
layer causal tracing finds (:mod:`keditlab.trace.auto_layer`); a method says
what that means for it with :meth:`~keditlab.methods.base.EditMethod.auto_layer_settings`,
using :func:`window_ending_at` for a window of layers.
"""

from __future__ import annotations

from keditlab.methods.base import MethodConfigError

#: The factual-recall layer is this fraction of the depth: early-middle, where
#: causal tracing finds factual recall.  Layer 5 of 30 on the embedded
#: SmolLM2-135M (tied best with layer 2 among layers 2, 5, 8, 12 on the
#: quickstart; docs/methods.md).  The fine-tuning baselines use the same layer,
#: so methods are compared like for like.
DEFAULT_LAYER_FRACTION = 0.17

#: MEMIT edits this many consecutive layers for every 30 of depth (5 on the embedded model).
LAYERS_PER_30 = 5

#: UltraEdit's edited layers run from this fraction of the depth up to (not including) the last layer:
#: layers 18-28 of 30 on the embedded model (the paper's 7B settings sit between 60% and 95% of the depth).
FIRST_LATE_LAYER_FRACTION = 0.6

#: LocFT-BF's tuned layer is this fraction of the depth: late, as the paper finds best
#: (22/32 on Llama-3-8B, 23/32 on Mistral-7B).  Layer 21 of 30 on the embedded model.
TUNING_LAYER_FRACTION = 0.7

#: The adaptors of GRACE and WISE sit at this fraction of the depth (layer 24 of 30 on the embedded model),
#: late enough that a replaced output reaches the answer through few layers.  Measured on ZsRE: docs/methods.md.
ADAPTOR_LAYER_FRACTION = 0.8


def layer_at(fraction: float, num_layers: int) -> int:
    """The layer at ``fraction`` of the depth, rounded, within ``0..num_layers-1``."""
    return max(0, min(num_layers - 1, round(fraction * num_layers)))


def factual_recall_layer(num_layers: int) -> int:
    """The single layer ROME edits (and the fine-tuning baselines tune) when the spec names none: 17% of the depth."""
    return layer_at(DEFAULT_LAYER_FRACTION, num_layers)


def window_ending_at(last: int, count: int) -> list[int]:
    """``count`` consecutive layers ending at ``last`` (moved up so that none is below layer 0)."""
    last = max(last, count - 1)
    return list(range(last - count + 1, last + 1))


def memit_window(num_layers: int) -> list[int]:
    """MEMIT's edited layers when the spec names none: a run of ``num_layers/6`` ending at the factual-recall layer."""
    count = max(1, round(LAYERS_PER_30 * num_layers / 30))
    return window_ending_at(factual_recall_layer(num_layers), count)


def late_layers(num_layers: int) -> list[int]:
    """UltraEdit's edited layers when the spec names none: from 60% of the depth to the last-but-one layer."""
    first = min(num_layers - 1, round(FIRST_LATE_LAYER_FRACTION * num_layers))
    return list(range(first, max(first + 1, num_layers - 1)))


def tuning_layer(num_layers: int) -> int:
    """The single late layer LocFT-BF tunes when the spec names none: 70% of the depth."""
    return layer_at(TUNING_LAYER_FRACTION, num_layers)


def adaptor_layer(num_layers: int) -> int:
    """The layer an adaptor method (GRACE, WISE) edits when the spec names none: 80% of the depth."""
    return layer_at(ADAPTOR_LAYER_FRACTION, num_layers)


def upper_half(num_layers: int) -> list[int]:
    """The layers knowledge neurons are searched in when the spec names none: the upper half, as the paper finds them."""
    return list(range(num_layers // 2, num_layers))


#: MEND edits the MLPs of this many last layers, on every model, as in its paper.
MEND_LAST_LAYERS = 3


def last_layers(num_layers: int, count: int = MEND_LAST_LAYERS) -> list[int]:
    """The last ``count`` layers (all of them on a model with fewer): where MEND writes its edits."""
    return list(range(max(0, num_layers - count), num_layers))


def last_layer(num_layers: int) -> int:
    """The layer T-Patcher patches when the spec names none: the last, as in its paper.

    A patch there changes the logits only at the positions where it fires (no
    later layer carries it elsewhere), so where it fires is all it changes.
    """
    return num_layers - 1


def chosen_layers(layers: list[int] | None, default: list[int]) -> list[int]:
    """A ``layers`` setting resolved: ``default`` when empty (None), else the named layers sorted, each once."""
    chosen = default if layers is None else sorted(set(layers))
    if not chosen:
        raise MethodConfigError("layers: the list is empty. Fix: name at least one layer, or leave layers out for the default.")
    return chosen


def check_value_layer(setting: str, layer: int, num_layers: int) -> None:
    """The layer where a value change is added at the subject must have a layer above it.

    The change is added at the subject's last token; only attention in later
    layers carries it to the positions that predict the target, so at the last
    layer it could not change the answer and the edit would silently write nothing.
    """
    if layer >= num_layers - 1:
        raise MethodConfigError(
            f"{setting}: layer {layer} is the model's last layer; the change made at the subject must be carried to the "
            f"answer by a later layer, so nothing would be written. Fix: choose layers below {num_layers - 1}."
        )
