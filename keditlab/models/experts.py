"""Sparse mixture-of-experts blocks: recognised by structure, and read as one key–value memory.

A sparse MoE block (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, ...) replaces the
dense MLP by a *router* (a ``hidden → num_experts`` projection) and
``num_experts`` small MLPs, the *experts*; each token goes to the ``top-k``
experts the router scores highest, and the block writes the routing-weighted
sum of their outputs::

    out(x) = Σ_{e ∈ topk(x)} g_e(x) · W_e k_e(x)

with ``k_e(x)`` expert ``e``'s hidden activation (the input to its down
projection ``W_e``) and ``g_e(x)`` its routing weight.  In transformers 5 the
experts of a layer are stored *fused*: one ``(E, hidden, expert_size)``
parameter for every expert's down projection (``experts.down_proj``) and one
for their input projections, with no per-expert module to hook.

**The key–value view** (the tensor-structured reading of MoE MEMIT,
arXiv:2605.16686, and the block-structured one of MoEEdit: Gu, Wei, Zhu and
Li, "MoEEdit: Efficient and Routing-Stable Knowledge Editing for
Mixture-of-Experts LLMs", ICLR 2026, arXiv:2602.10965).  Concatenating the down
projections side by side, ``W̃ = [W_1 … W_E]`` (``hidden × E·expert_size``),
and the gate-weighted keys on top of each other,
``k̃ = [g_1 k_1; …; g_E k_E]`` (zero blocks for the experts a token is not
routed to), the experts' output is exactly ``W̃ k̃``: one linear memory like a
dense MLP's, with a block-sparse key.  A locate-then-edit method solves its
update ``ΔW̃`` in that space (:class:`ExpertSite`):

* only the experts the subject's last token is routed to have a non-zero key
  block, and the minimum-norm (and the covariance-weighted least-squares)
  solution is zero outside them, so only those experts' down projections
  change;
* the router and every expert's input projection are untouched, so the
  routing of every token at the edited layer is exactly as before;
* the key statistics ``E[k̃ k̃ᵀ]`` are kept block-diagonal: one
  ``expert_size × expert_size`` second moment per expert, over the tokens
  routed to it, gate-weighted and divided by *all* tokens read (the diagonal
  blocks of the whole ``E[k̃ k̃ᵀ]``; tokens routed to two experts also
  couple them, which is left out).

Keys are computed from the module's own fused parameters and its own gate
function (``_apply_gate``), whatever kernel (``grouped_mm``, eager, ...) its
forward uses; :func:`find_experts` checks the recomputation against the
module's forward on random input before a profile claims to understand it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from keditlab.models.peek import config_num_experts  # noqa: F401  (the config keys are read there, without torch)


@dataclass(frozen=True)
class FoundExperts:
    """What :func:`find_experts` recognised in a block: relative paths and sizes."""

    block: str        # the MoE block, e.g. "mlp"
    router: str       # e.g. "mlp.gate"
    experts: str      # the fused experts module, e.g. "mlp.experts"
    down: str         # its down-projection parameter, e.g. "down_proj"
    num_experts: int
    top_k: int
    expert_size: int


def find_experts(block: torch.nn.Module, hidden: int, config: Any) -> FoundExperts | None:
    """A sparse MoE block inside ``block``, by structure, or None.

    The experts module holds fused 3-D parameters whose leading dimension is
    the number of experts: a down projection ``(E, hidden, m)`` and an input
    projection ``(E, m or 2m, hidden)``; its sibling in the same parent is the
    router, whose weight is ``(E, hidden)``.  The recomputed output
    (:func:`expert_keys`, then the down projections) must match the module's
    own forward on random input, so an unfamiliar layout is not mistaken for
    a known one.
    """
    for name, module in block.named_modules():
        params = {n: p for n, p in module.named_parameters(recurse=False) if p.dim() == 3}
        if len(params) < 2:
            continue
        count = {p.shape[0] for p in params.values()}
        if len(count) != 1:
            continue
        experts = count.pop()
        if bool(getattr(module, "is_transposed", False)):
            continue   # (E, in, out) storage: not supported yet
        downs = [n for n, p in params.items() if p.shape[1] == hidden and p.shape[2] != hidden]
        if len(downs) != 1 or not hasattr(module, "act_fn"):
            continue
        down = downs[0]
        size = int(params[down].shape[2])
        parent_name, _, _ = name.rpartition(".")
        parent = block.get_submodule(parent_name) if parent_name else block
        routers = [n for n, m in parent.named_children()
                   if m is not module and getattr(m, "weight", None) is not None and tuple(m.weight.shape) == (experts, hidden)]
        if len(routers) != 1:
            continue
        router = parent.get_submodule(routers[0])
        top_k = getattr(router, "top_k", None) or getattr(parent, "top_k", None) or getattr(config, "num_experts_per_tok", None)
        if not isinstance(top_k, int) or top_k < 1:
            continue
        found = FoundExperts(parent_name, f"{parent_name}.{routers[0]}" if parent_name else routers[0], name, down,
                             experts, top_k, size)
        if _recomputes(module, found, hidden):
            return found
    return None


def _input_projection(experts: torch.nn.Module, down: str) -> str | None:
    names = [n for n, p in experts.named_parameters(recurse=False) if p.dim() == 3 and n != down]
    return names[0] if len(names) == 1 else None


def expert_keys(experts: torch.nn.Module, down: str, states: torch.Tensor, expert: int) -> torch.Tensor:
    """Expert ``expert``'s hidden activations (the inputs of its down projection) for the rows of ``states``."""
    weight = getattr(experts, _input_projection(experts, down))[expert]
    projected = torch.nn.functional.linear(states, weight)
    bias_name = f"{_input_projection(experts, down)}_bias"
    if bool(getattr(experts, "has_bias", False)) and getattr(experts, bias_name, None) is not None:
        projected = projected + getattr(experts, bias_name)[expert]
    if bool(getattr(experts, "has_gate", True)) and hasattr(experts, "_apply_gate"):
        return experts._apply_gate(projected)
    return experts.act_fn(projected)


def _recomputes(experts: torch.nn.Module, found: FoundExperts, hidden: int) -> bool:
    """Whether ``Σ g_e W_e k_e`` recomputed from the parameters equals the module's forward on random input."""
    if _input_projection(experts, found.down) is None:
        return False
    weight = getattr(experts, found.down)
    generator = torch.Generator().manual_seed(0)
    states = torch.randn(3, hidden, generator=generator).to(weight)
    index = torch.stack([torch.randperm(found.num_experts, generator=generator)[:found.top_k] for _ in range(3)]).to(weight.device)
    gates = torch.rand(3, found.top_k, generator=generator).to(weight)
    try:
        with torch.no_grad():
            theirs = experts(states, index, gates)
            ours = torch.zeros_like(states)
            for row in range(3):
                for slot in range(found.top_k):
                    e = int(index[row, slot])
                    ours[row] += gates[row, slot] * (weight[e] @ expert_keys(experts, found.down, states[row:row + 1], e)[0])
    except Exception:   # an unfamiliar call signature: not a layout keditlab can read
        return False
    return bool(torch.allclose(theirs.float(), ours.float(), rtol=1e-3, atol=1e-4))


class ExpertSite:
    """Where a locate-then-edit method reads keys and writes at one layer: a dense MLP output projection or an MoE layer's experts.

    ``width`` is the key width: the MLP width for a dense layer,
    ``num_experts · expert_size`` (the concatenated ``W̃``) for an MoE layer.
    ``units`` are the key blocks the site covers, ``(None,)`` for a dense
    layer, expert indices for an MoE one; :meth:`touched_by` narrows an MoE
    site to the experts some keys reach, so that solves and statistics stay
    ``len(units) · expert_size`` wide.  Methods use the same calls for both::

        site = profile.key_site(model, layer)
        keys = ...read with site.key_module / site.read_keys...     # (n, site.width)
        part = site.touched_by(keys)                                 # dense: the site itself
        update = solve(part.select(keys), part.gather(statistics))    # (hidden, part.width)
        part.add(model, update)
    """

    def __init__(self, profile: Any, model: torch.nn.Module, layer: int, units: tuple[int | None, ...] | None = None) -> None:
        self.profile, self.layer = profile, layer
        self.moe = bool(profile.expert_out)
        if self.moe:
            experts_path, _, self.down = profile.expert_out.format(layer=layer).rpartition(".")
            self.key_module = model.get_submodule(experts_path)
            self.value_module = model.get_submodule(profile.mlp_out_module(layer))
            self.size = profile.mlp_size
            self.units = tuple(range(profile.num_experts)) if units is None else units
        else:
            self.key_module = self.value_module = model.get_submodule(profile.mlp_out_module(layer))
            self.size = profile.mlp_size
            self.units = (None,)
        self.parameter = profile.mlp_out_parameter(layer)

    @property
    def width(self) -> int:
        return self.size * len(self.units)

    # -- reading ---------------------------------------------------------------------------------
    def read_keys(self, inputs: tuple[Any, ...], where: tuple[torch.Tensor, torch.Tensor], sequence: int) -> torch.Tensor:
        """Keys ``(n, width)`` at positions ``where = (rows, columns)`` from ``key_module``'s inputs (a pre-hook's view).

        Dense: the projection's input there.  MoE: the experts module is
        called on the flattened ``(tokens, hidden)`` states with the routing
        ``(top_k_index, top_k_weights)``; the key is the gate-weighted
        activation of each routed expert in its block, zero elsewhere.
        """
        if not self.moe:
            return inputs[0][where].detach().float()
        flat = where[0] * sequence + where[1]
        return self._virtual(inputs[0][flat], inputs[1][flat], inputs[2][flat])

    def _virtual(self, states: torch.Tensor, index: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        keys = torch.zeros(len(states), len(self.units), self.size, device=states.device)
        position = {unit: i for i, unit in enumerate(self.units)}
        with torch.no_grad():
            for expert in sorted({int(e) for e in index.flatten()}):
                if expert not in position:
                    continue
                rows, slots = torch.nonzero(index == expert, as_tuple=True)
                found = expert_keys(self.key_module, self.down, states[rows], expert).float()
                keys[rows, position[expert]] = found * gates[rows, slots].float()[:, None]
        return keys.reshape(len(states), -1)

    def second_moment_sums(self, inputs: tuple[Any, ...], mask: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``Σ k kᵀ`` over the real tokens of a batch (``mask``: ``(batch, seq)``), float64, and their count.

        Dense: ``(width, width)``.  MoE: ``(E, size, size)``, one block per
        expert over the tokens routed to it, gate-weighted (``k̃``'s diagonal blocks).
        """
        if not self.moe:
            keys = inputs[0][mask].double()
            return keys.T @ keys, keys.shape[0]
        real = mask.reshape(-1)
        states, index, gates = inputs[0][real], inputs[1][real], inputs[2][real]
        sums = torch.zeros(len(self.units), self.size, self.size, dtype=torch.float64, device=states.device)
        for expert in sorted({int(e) for e in index.flatten()}):
            rows, slots = torch.nonzero(index == expert, as_tuple=True)
            keys = expert_keys(self.key_module, self.down, states[rows], expert).double() * gates[rows, slots].double()[:, None]
            sums[expert] = keys.T @ keys
        return sums, int(real.sum())

    # -- narrowing and gathering ---------------------------------------------------------------------
    def touched_by(self, keys: torch.Tensor) -> "ExpertSite":
        """The site narrowed to the units some row of ``keys`` (``(n, width)``) reaches; a dense site is returned as is."""
        if not self.moe:
            return self
        blocks = keys.reshape(len(keys), len(self.units), self.size)
        used = tuple(unit for i, unit in enumerate(self.units) if bool(blocks[:, i].abs().sum() > 0))
        part = ExpertSite.__new__(ExpertSite)
        part.__dict__.update(self.__dict__)
        part.units = used
        return part

    def select(self, keys: torch.Tensor, site: "ExpertSite | None" = None) -> torch.Tensor:
        """``keys`` read on ``site`` (default: all experts) restricted to this site's units, ``(n, width)``."""
        if not self.moe:
            return keys
        full = site.units if site is not None else tuple(range(self.profile.num_experts))
        blocks = keys.reshape(len(keys), len(full), self.size)
        return blocks[:, [full.index(unit) for unit in self.units]].reshape(len(keys), -1)

    def gather(self, statistic: torch.Tensor) -> torch.Tensor:
        """A per-unit statistic as this site's matrix: dense ``(w, w)`` as is; MoE ``(E, s, s)`` → the block diagonal of the units."""
        if not self.moe:
            return statistic
        return torch.block_diag(*[statistic[unit] for unit in self.units])

    def blocks(self, matrix: torch.Tensor) -> dict[int | None, torch.Tensor]:
        """The diagonal blocks of a ``(width, width)`` matrix, per unit (dense: ``{None: matrix}``)."""
        if not self.moe:
            return {None: matrix}
        s = self.size
        return {unit: matrix[i * s:(i + 1) * s, i * s:(i + 1) * s] for i, unit in enumerate(self.units)}

    # -- writing ---------------------------------------------------------------------------------
    def weight(self, model: torch.nn.Module) -> torch.Tensor:
        """``W`` (``(out, width)``) of this site: the projection, or the units' down projections side by side (a copy)."""
        if not self.moe:
            return self.profile.mlp_out_weight(model, self.layer)
        fused = getattr(self.key_module, self.down)
        return torch.cat([fused[unit] for unit in self.units], dim=1)

    def add(self, model: torch.nn.Module, update: torch.Tensor) -> None:
        """``W ← W + ΔW`` with ``ΔW`` ``(out, width)``; an MoE site writes each unit's block into its expert, skipping all-zero blocks."""
        if not self.moe:
            self.profile.add_to_mlp_out(model, self.layer, update)
            return
        fused = getattr(self.key_module, self.down)
        with torch.no_grad():
            for i, unit in enumerate(self.units):
                block = update[:, i * self.size:(i + 1) * self.size]
                if bool(block.abs().sum() > 0):
                    fused[unit].add_(block.to(fused.device, fused.dtype))

    def describe(self) -> dict[str, Any]:
        """What the run records: the parameter and, for an MoE layer, the experts written."""
        return {"parameter": self.parameter, **({"experts": [int(u) for u in self.units]} if self.moe else {})}


def routed_experts(model: torch.nn.Module, profile: Any, layer: int, input_ids: torch.Tensor, position: int) -> list[int]:
    """The experts the router at ``layer`` sends token ``position`` of ``input_ids`` (one row) to, sorted."""
    from keditlab.models.hooks import StopForward, hooks

    site = ExpertSite(profile, model, layer)
    seen: dict[str, Any] = {}

    def grab(_module, inputs):
        seen["index"] = inputs[1][position]
        raise StopForward

    with hooks(pre=[(site.key_module, grab)]), torch.no_grad():
        model(input_ids=input_ids)
    return sorted(int(e) for e in seen["index"])
