"""Small pieces several editing methods share: freezing, batching, context prefixes."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import torch


@contextlib.contextmanager
def trainable_only(model: torch.nn.Module, names: Sequence[str] = ()) -> Iterator[None]:
    """Inside the block only the named parameters take gradients; flags are put back after.

    Computing gradients only for what is optimised is most of the speed of an
    edit on a CPU: autograd then keeps no state for the frozen weights.
    """
    wanted = set(names)
    saved = {name: p.requires_grad for name, p in model.named_parameters()}
    try:
        for name, param in model.named_parameters():
            param.requires_grad_(name in wanted)
        yield
    finally:
        for name, param in model.named_parameters():
            param.requires_grad_(saved[name])


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def right_padded(sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` for token lists padded on the right.

    Right padding keeps every real token at the same position it would have
    alone, so positions computed per sequence stay valid in the batch.
    """
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids.to(device), mask.to(device)


# Openings of the short context prefixes (ROME averages keys and values over
# such prefixes, so the edit holds whatever text precedes the subject).
_PREFIX_OPENINGS = ("The", "Therefore", "Because", "I", "You", "However", "In", "It", "When", "She")
_prefix_cache: "weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple[int, int], list[str]]]" = weakref.WeakKeyDictionary()


def context_prefixes(model: torch.nn.Module, tokenizer: Any, count: int, seed: int = 0, length: int = 10) -> list[str]:
    """``""`` plus ``count`` short texts sampled from the model, each ending in ". ".

    Sampled once per model (and seed), before any edit, and then reused, so every
    edit of a run sees the same prefixes.
    """
    per_model = _prefix_cache.setdefault(model, {})
    if (count, seed) in per_model:
        return per_model[(count, seed)]
    prefixes = [""]
    if count > 0:
        device = device_of(model)
        openings = [_PREFIX_OPENINGS[i % len(_PREFIX_OPENINGS)] for i in range(count)]
        side, tokenizer.padding_side = tokenizer.padding_side, "left"
        try:
            enc = tokenizer(openings, return_tensors="pt", padding=True).to(device)
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.inference_mode():
                torch.manual_seed(seed)
                out = model.generate(
                    **enc, do_sample=True, top_k=5, max_new_tokens=length, pad_token_id=tokenizer.pad_token_id
                )
        finally:
            tokenizer.padding_side = side
        for row in tokenizer.batch_decode(out, skip_special_tokens=True):
            text = " ".join(row.replace("{", " ").replace("}", " ").split())
            prefixes.append(text.rstrip(".") + ". ")
    per_model[(count, seed)] = prefixes
    return prefixes
