"""Logits at the positions a reader needs, not at every position.

A causal language model's last step, the unembedding (``lm_head``), maps
every position's hidden state to a score per vocabulary token.  Teacher-forced
checks read only the positions that predict the answer: two or three of a
fifteen-token sequence.  With a large vocabulary the unembedding is most of
the work: Gemma 3 270M's 262,144 x 640 matrix holds more weights than its
eighteen layers together, so scoring every position spends most of a forward
pass on logits nobody reads.

``transformers`` models take ``logits_to_keep`` (a tensor of positions per row)
and apply the unembedding to those positions only; :func:`logits_at` passes it
where the model's ``forward`` accepts it and otherwise computes every logit and
picks the rows, so the result is the same either way (up to float rounding).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any

import torch


@functools.lru_cache(maxsize=None)
def _takes_logits_to_keep(model_class: type) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model_class.forward).parameters
    except (TypeError, ValueError):
        return False


def logits_at(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              positions: Sequence[Sequence[int]]) -> torch.Tensor:
    """The logits at ``positions[row]`` of each row: a ``(rows, k, vocab)`` tensor, ``k`` the longest list.

    Row ``r``'s first ``len(positions[r])`` entries are its positions' logits,
    in order; shorter lists are padded by repeating their last position (read
    nothing past ``len(positions[r])``).
    """
    width = max(1, *(len(p) for p in positions))
    index = torch.tensor([list(p) + [p[-1] if p else 0] * (width - len(p)) for p in positions], dtype=torch.long,
                         device=input_ids.device)
    if _takes_logits_to_keep(type(model)):
        return model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=index).logits
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return logits.gather(1, index.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
