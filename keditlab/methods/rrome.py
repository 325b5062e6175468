"""r-ROME: ROME with consistent keys.

Gupta, Baskaran and Anumanchipalli, "Rebuilding ROME: Resolving Model
Collapse during Sequential Model Editing", 2024 (arXiv:2403.07175).

In sequential editing, ROME's original code occasionally makes a "disabling
edit": one update so large that the model collapses and every later edit and
measurement is garbage.  Gupta et al. trace it to an inconsistency: the update
is aimed along ``C⁻¹k̄`` (the key averaged over context prefixes) but scaled at
the bare prompt's key ``k₀``, and where ``k̄`` and ``k₀`` are nearly orthogonal
in the ``C⁻¹`` metric the scale ``1 / (C⁻¹k̄)ᵀk₀`` explodes.  r-ROME uses the
average key on both sides (``uᵀk̄ = 1``), which keeps every update bounded.

That is one setting of keditlab's ROME (``update_keys: mean``), so r-ROME is
ROME with that default and nothing else: the same module, not a copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from keditlab.methods.keyvalue import UPDATE_KEYS
from keditlab.methods.rome import Rome, RomeConfig


@dataclass
class RRomeConfig(RomeConfig):
    update_keys: str = field(
        default="mean",
        metadata={"help": "Where the rank-one update is solved; r-ROME's consistent keys are 'mean' (δ at the average key k̄, "
                          "as in the paper's equation). 'contexts' and 'prompt' are ROME's forms, for comparison.",
                  "choices": list(UPDATE_KEYS)},
    )


class RRome(Rome, name="r-rome", paper="Gupta, Baskaran and Anumanchipalli, 2024, arXiv:2403.07175",
            config_class=RRomeConfig):
    """ROME with consistent keys for sequential editing (Gupta et al., 2024)"""
