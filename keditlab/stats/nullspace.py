"""The approximate null space of the preserved keys, as a projector (AlphaEdit's statistic).

AlphaEdit (Fang et al., ICLR 2025, arXiv:2410.02355) confines an edit to the
directions of key space that ordinary text (almost) never uses, so that the
outputs at the preserved keys ``K₀`` do not move: if ``ΔW P = ΔW`` with ``P``
projecting onto the null space of ``K₀ K₀ᵀ``, then ``ΔW K₀ ≈ 0``.

The keys' second moment ``C = E[k kᵀ]`` (:mod:`keditlab.stats.covariance`) has
the same eigenvectors as ``K₀ K₀ᵀ``.  Its spectrum decides what "almost never"
means, and it depends on the model: on the embedded SmolLM2-135M it is flat
(eigenvalues 0.002–0.83, mean 0.017), so the paper's absolute threshold
(eigenvalues below 0.02, chosen for Llama-3-8B) would call 1,167 of 1,536
directions "unused".  keditlab sets the threshold by *energy* instead: the
null space is the span of the smallest eigenvalues whose sum is at most
``energy`` of the trace, so the preserved keys keep at least ``1 − energy`` of
their squared norm outside it, whatever the model's scale.

The projector is a cached statistic, stored beside the covariance it came
from (``<covariance>-nullspace-<energy>.pt`` in the keditlab cache), never in
the working directory.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from keditlab.stats.covariance import CovarianceStats, atomic_save


@dataclass
class NullSpace:
    """A projector onto the low-energy directions of a layer's key covariance."""

    layer: int
    projector: torch.Tensor  # (mlp, mlp), float32, symmetric, P @ P = P; an MoE layer: (E, size, size), one per expert
    dimensions: int
    energy: float            # the share of the trace the null space was allowed
    path: str
    loaded_from_cache: bool

    def describe(self) -> dict[str, Any]:
        return {"layer": self.layer, "null_space_dimensions": self.dimensions, "energy": self.energy,
                "path": self.path, "loaded_from_cache": self.loaded_from_cache}


def null_space(stats: CovarianceStats, energy: float) -> NullSpace:
    """The projector onto the eigenvectors of ``stats.matrix`` whose eigenvalues sum to at most ``energy`` of the trace."""
    if not 0 < energy < 1:
        raise ValueError(f"null_space_energy must be between 0 and 1 (a share of the keys' energy), not {energy!r}")
    path = Path(stats.path).with_name(f"{Path(stats.path).stem}-nullspace-{energy:g}.pt")
    cached = _cached_projector(path, stats.matrix.shape)
    if cached is not None:
        projector, dimensions = cached
        return NullSpace(stats.layer, projector, dimensions, energy, str(path), True)
    if stats.matrix.dim() == 3:   # an MoE layer: one projector per expert, each from its own block
        parts = [_projector(block, energy) for block in stats.matrix]
        projector, dimensions = torch.stack([p for p, _ in parts]), sum(d for _, d in parts)
    else:
        projector, dimensions = _projector(stats.matrix, energy)
    atomic_save({"projector": projector, "dimensions": dimensions, "energy": energy}, path)
    return NullSpace(stats.layer, projector, dimensions, energy, str(path), False)


def _cached_projector(path: Path, shape: torch.Size) -> tuple[torch.Tensor, int] | None:
    """The projector cached at ``path`` and its dimension count, or ``None`` when absent or damaged (cut short, empty,
    not finite, not the covariance's shape): a damaged file is computed again, never used and never fatal."""
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        projector, dimensions = saved["projector"], int(saved["dimensions"])
        if projector.shape != shape or not bool(torch.isfinite(projector).all()) or not 0 <= dimensions <= shape[-1] * (
                shape[0] if len(shape) == 3 else 1):
            raise ValueError(f"not a finite {tuple(shape)} projector")
        return projector, dimensions
    except Exception as exc:  # noqa: BLE001 - any damage (a truncated zip, a missing key, NaN) means: compute again
        print(f"keditlab: the cached null space {path} is damaged ({type(exc).__name__}: {exc}); computing it again",
              file=sys.stderr)
        return None


def _projector(matrix: torch.Tensor, energy: float) -> tuple[torch.Tensor, int]:
    values, vectors = torch.linalg.eigh(matrix.to(torch.float64))   # ascending
    share = torch.cumsum(values.clamp(min=0), 0) / values.clamp(min=0).sum().clamp(min=1e-300)
    dimensions = int((share <= energy).sum())
    basis = vectors[:, :dimensions]
    return (basis @ basis.T).float(), dimensions
