"""The part of each row an edit cannot change, run once and cached.

A value optimisation (:func:`~keditlab.methods.keyvalue.optimise_values`) adds
``δ`` to one module's output at one position of each row: the subject's last
token.  In a causal model nothing *before* that position depends on ``δ``, so
the attention keys and values of those tokens, in every layer, are the same at
every optimisation step.  :class:`FrozenPrefixes` computes them once, without
gradients, and each step then runs only the rest of each row (from the
subject's last token on) against that cache.

On CounterFact's context rows (a ten-token context prefix, the prompt, the
target) the rest is about a quarter of the row's tokens, so each step costs
about a quarter as much; the numbers are the same up to float rounding (the
same sums in a different order).

How the cache is laid out: each row's prefix is stored right-aligned in one
tensor per layer (``rows × heads × width × head_dim``), zero-padded on the
left, with a mask of its real positions.  A pass takes its rows' slices, so the
rows of a pass may have prefixes of different lengths; the padding slots are
masked and hold zeros (never NaN), and no query ever attends only to padding,
because every row's own remaining tokens are unmasked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import DynamicCache

from keditlab.models.sampling import device_of, right_padded


class FrozenPrefixes:
    """Each row's first ``cut[r]`` tokens, run once; :meth:`inputs` gives a pass's forward arguments for the rest.

    ``rows`` are token lists; ``cut[r]`` is where row ``r``'s changing part
    starts (``0``: nothing to cache for that row).  ``passes`` cuts a list of
    rows sorted by length into batches (the caller's memory bound).
    """

    def __init__(self, model: torch.nn.Module, rows: list[list[int]], cut: list[int], pad_id: int,
                 passes: Callable[[list[int], list[int]], list[list[int]]]):
        self.rows, self.cut, self.pad_id = rows, cut, pad_id
        self.device = device_of(model)
        self.width = max(cut, default=0)
        self.mask = torch.zeros(len(rows), self.width, dtype=torch.long, device=self.device)
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        cached = sorted((r for r in range(len(rows)) if cut[r] > 0), key=lambda r: cut[r])
        for part in passes(cached, cut):
            ids, mask = right_padded([rows[r][: cut[r]] for r in part], pad_id, self.device)
            with torch.no_grad():
                cache = model.base_model(input_ids=ids, attention_mask=mask, use_cache=True).past_key_values
            for layer, entry in enumerate(cache.layers):
                if layer == len(self.keys):
                    _, heads, _, dim = entry.keys.shape
                    shape = (len(rows), heads, self.width, dim)
                    self.keys.append(entry.keys.new_zeros(shape))
                    self.values.append(entry.values.new_zeros(shape))
                for i, r in enumerate(part):  # right-aligned: the prefix ends where the row's rest begins
                    self.keys[layer][r, :, self.width - cut[r]:] = entry.keys[i, :, : cut[r]]
                    self.values[layer][r, :, self.width - cut[r]:] = entry.values[i, :, : cut[r]]
            for r in part:
                self.mask[r, self.width - cut[r]:] = 1

    def rest(self, r: int) -> list[int]:
        """Row ``r``'s tokens from its cut on (what each step runs)."""
        return self.rows[r][self.cut[r]:]

    def inputs(self, part: list[int]) -> dict[str, Any]:
        """Keyword arguments of ``model.base_model`` running the rest of the rows ``part``, right-padded, on their prefixes."""
        ids, rest_mask = right_padded([self.rest(r) for r in part], self.pad_id, self.device)
        index = torch.tensor(part, device=self.device)
        positions = index.new_tensor([self.cut[r] for r in part])[:, None] + torch.arange(ids.shape[1], device=self.device)
        width = max(self.cut[r] for r in part)
        if width == 0:
            return {"input_ids": ids, "attention_mask": rest_mask, "position_ids": positions}
        cache = DynamicCache()
        for layer, (keys, values) in enumerate(zip(self.keys, self.values)):
            cache.update(keys[index, :, self.width - width:], values[index, :, self.width - width:], layer)
        mask = torch.cat([self.mask[index, self.width - width:], rest_mask], dim=1)
        return {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "past_key_values": cache}
