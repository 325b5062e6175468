"""A forward pass that reuses and returns the model's key-value cache, in every ``transformers`` version keditlab supports.

Attention is causal, so a prompt's prefix gives the same keys and values to
every continuation of it.  Two layers run many continuations of one prefix:
causal tracing (one corrupted or restored token at a time) and KN's integrated
gradients (``steps`` scaled copies of the last token).  They run the prefix once
and hand its cache to each continuation.

``transformers`` renamed the argument and the output field from
``past_key_values`` to ``cache`` (5.x); :func:`forward_with_cache` uses
whichever the model's ``forward`` takes, so callers need not know.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import torch


def _keyword(decoder: torch.nn.Module) -> str:
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def forward_with_cache(decoder: torch.nn.Module, input_ids: torch.Tensor, cache: Any = None, keep: bool = False) -> tuple[Any, Any]:
    """``(output, cache)``: ``decoder`` run on ``input_ids`` after the tokens ``cache`` holds.

    ``decoder`` is the model's base model (its output has ``last_hidden_state``)
    or the whole causal LM.  The returned cache covers ``cache``'s tokens and
    ``input_ids``'s when ``keep``; otherwise it is ``None``.  A cache passed in
    is extended in place by the model: pass :func:`copied` when it must be reused.
    """
    use = keep or cache is not None
    out = decoder(input_ids=input_ids, use_cache=use, **({_keyword(decoder): cache} if cache is not None else {}))
    if not keep:
        return out, None
    kept = out.get("cache")
    return out, kept if kept is not None else out.get("past_key_values")


def copied(cache: Any, copies: int = 1) -> Any:
    """A copy of ``cache`` for ``copies`` identical rows (each of its rows repeated ``copies`` times)."""
    fresh = copy.deepcopy(cache)
    if copies > 1:
        fresh.batch_repeat_interleave(copies)
    return fresh
