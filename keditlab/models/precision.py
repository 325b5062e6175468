"""Half precision (``model.dtype: bfloat16`` / ``float16``): where keditlab computes in float32, and what it warns.

A model loaded in a half dtype keeps its weights in that dtype; keditlab computes
what an edit needs in float32 or float64 and writes the edit back in the
model's dtype:

* key statistics are accumulated in float64 from the keys (:mod:`keditlab.stats`);
  they belong to the checkpoint, not to the dtype it was loaded in
  (:func:`keditlab.stats.covariance.model_fingerprint`);
* keys, value changes ``δ`` and every solve are float32 / float64
  (:mod:`keditlab.methods.keyvalue`); the update is cast to the weight's dtype
  by :meth:`~keditlab.models.profile.ModelProfile.add_to_mlp_out`;
* optimisers train float32 master copies of half-precision weights
  (:class:`MasterWeights`): an Adam step of ``1e-3`` on a weight of ``0.5``
  is below bfloat16's resolution there and would otherwise vanish;
* log-probabilities are taken in float32 from the logits (:mod:`keditlab.evaluate`);
* ``restore()`` copies back snapshots in the model's own dtype: bit for bit.

A CPU without bfloat16 arithmetic (no AVX-512 BF16 or AMX; torch emulates it)
multiplies bfloat16 matrices several times slower than float32, and their
backward pass tens of times slower: there an edit is computed on the weights
upcast to float32 for its duration (:func:`float32_compute`), then written back
rounded to the model's dtype; measurements still run the model as loaded.
float16 on a CPU is refused at load (:func:`precision_problem`): it is a GPU
format, and bfloat16 is the half precision a CPU can run.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

HALF = (torch.bfloat16, torch.float16)


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype most of the model's parameters are in (the one it was loaded in)."""
    counts: dict[torch.dtype, int] = {}
    for param in model.parameters():
        counts[param.dtype] = counts.get(param.dtype, 0) + param.numel()
    return max(counts, key=counts.get) if counts else torch.float32


@functools.lru_cache(maxsize=1)
def native_bfloat16_cpu() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX), read from ``/proc/cpuinfo``."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return any(flag in flags for flag in (" avx512_bf16", " amx_bf16"))


def needs_float32_compute(model: torch.nn.Module) -> bool:
    """True when ``model`` is in a half dtype on a CPU that has no arithmetic for it (edits then compute in float32)."""
    param = next(model.parameters(), None)
    if param is None or param.device.type != "cpu":
        return False
    dtype = model_dtype(model)
    return dtype == torch.float16 or (dtype == torch.bfloat16 and not native_bfloat16_cpu())


def precision_problem(dtype: torch.dtype, device: str) -> str | None:
    """Why ``dtype`` cannot be used on ``device`` (a message with its fix), or None."""
    if dtype == torch.float16 and str(device).startswith("cpu"):
        return ("model.dtype float16 on the CPU: float16 is a GPU format (torch has few and slow float16 kernels "
                "on a CPU, and float16's range overflows in some models). Fix: model.dtype: bfloat16 (the same "
                "memory, float32's range) or auto (float32) on a CPU; float16 with run.device: cuda.")
    return None


def precision_warnings(model: torch.nn.Module) -> list[str]:
    """What a user of ``model`` should know about its dtype here (empty for float32, or half precision on a GPU)."""
    if needs_float32_compute(model) and model_dtype(model) == torch.bfloat16:
        return ["bfloat16 on this CPU, which has no bfloat16 arithmetic (no AVX-512 BF16 or AMX): torch emulates it, "
                "so forward passes are several times slower than in float32 and backward passes tens of times. "
                "Edits are computed on the weights upcast to float32 (as fast as float32, with its peak memory) and "
                "written back in bfloat16; measurements run in bfloat16. Fix: model.dtype: auto (float32) on this "
                "CPU; bfloat16 on a GPU or a CPU with AVX-512 BF16 / AMX."]
    return []


@contextlib.contextmanager
def float32_compute(model: torch.nn.Module, enabled: bool = True) -> Iterator[dict[str, torch.dtype]]:
    """Inside the block the model's half-precision parameters are float32; after it, back in their dtype.

    Only parameters are cast (buffers such as rotary frequencies keep their
    dtype), through ``param.data``, so every ``Parameter`` keeps its identity.
    A half value upcast and cast back is the same value bit for bit; a weight
    the block changed is rounded to its dtype (round to nearest even).
    Yields ``{name: dtype}`` of the parameters it cast (empty when not ``enabled``).
    """
    cast: dict[str, torch.dtype] = {}
    if enabled:
        for name, param in model.named_parameters():
            if param.dtype in HALF:
                cast[name] = param.dtype
                param.data = param.data.float()
    try:
        yield cast
    finally:
        if cast:
            params = dict(model.named_parameters())
            for name, dtype in cast.items():
                params[name].data = params[name].data.to(dtype)


class MasterWeights:
    """Float32 master copies of the half-precision tensors an optimiser trains (mixed-precision training).

    The optimiser steps :attr:`masters`; :meth:`pull_grads` hands them the
    gradients the model's tensors received, :meth:`push` writes them back
    rounded to the model's dtype.  Float32 tensors are their own masters.
    Without this an Adam step below half a unit in the last place of a weight
    (``1e-3`` on ``0.5`` in bfloat16, whose resolution there is ``2e-3``)
    rounds away, step after step.
    """

    def __init__(self, params: Iterable[torch.Tensor]) -> None:
        self.params = list(params)
        self.masters = [p.detach().float().clone().requires_grad_(True) if p.dtype in HALF else p for p in self.params]

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None
        for master in self.masters:
            master.grad = None

    def pull_grads(self) -> None:
        for param, master in zip(self.params, self.masters):
            if master is not param and param.grad is not None:
                master.grad = param.grad.float()

    def push(self) -> None:
        with torch.no_grad():
            for param, master in zip(self.params, self.masters):
                if master is not param:
                    param.copy_(master)

    def absorb(self) -> None:
        """Take into the masters what code outside the optimiser wrote into the model's tensors (a clamp, a mask).

        An element whose model value is no longer its master rounded to the
        model's dtype was set from outside; its master becomes that value.
        """
        with torch.no_grad():
            for param, master in zip(self.params, self.masters):
                if master is not param:
                    moved = param != master.to(param.dtype)
                    master.copy_(torch.where(moved, param.float(), master))

