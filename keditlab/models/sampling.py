"""Reproducible sampling from a model, and right-padded batches of token lists.

Two layers sample text from the model itself (ROME's context prefixes, the
``model-samples`` statistics corpus) and three build padded batches of token
ids (editing, evaluation, statistics); they share these helpers so that
padding and seeding are done one way everywhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch


def device_of(model: torch.nn.Module) -> torch.device:
    """The device of the model's parameters: where its input batches must go."""
    return next(model.parameters()).device


def right_padded(sequences: Sequence[Sequence[int]], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` for token lists padded on the right.

    Right padding keeps every real token at the position it would have alone,
    so positions computed per sequence stay valid in the batch.
    """
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids.to(device), mask.to(device)


@contextlib.contextmanager
def seeded(model: torch.nn.Module, seed: int) -> Iterator[None]:
    """Inside the block torch's random numbers start from ``seed``; outside, they are untouched."""
    device = device_of(model)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


class _EveryStep:
    """A no-op logits processor that calls ``callback(batch_size)`` once per decoding step.

    ``generate()`` offers no per-step hook besides its processors; this one
    lets a progress bar move with every generated token instead of once per batch.
    """

    def __init__(self, callback: Callable[[int], None]) -> None:
        self.callback = callback

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.callback(input_ids.shape[0])
        return scores


def sample_ids(
    model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int, top_k: int, min_new_tokens: int = 0,
    on_step: Callable[[int], None] | None = None,
) -> list[list[int]]:
    """Top-k samples continuing each prompt: prompt + continuation ids, padding removed.

    Seed it with :func:`seeded` for reproducible text.  ``on_step(n)`` is called
    after each decoding step with the number of sequences still in the batch
    (for a progress bar that shows the true token rate from the start).
    """
    from transformers import LogitsProcessorList

    device = device_of(model)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # generation continues at the right end
    try:
        enc = tokenizer(list(prompts), return_tensors="pt", padding=True).to(device)
        with torch.inference_mode():
            out = model.generate(
                **enc,
                do_sample=True,
                top_k=top_k,
                temperature=1.0,
                max_new_tokens=max_new_tokens,
                min_new_tokens=min_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                logits_processor=LogitsProcessorList([_EveryStep(on_step)]) if on_step else None,
            )
    finally:
        tokenizer.padding_side = side
    rows = []
    for row, mask in zip(out, enc["attention_mask"]):
        start = int((mask == 0).sum())  # drop the left padding
        rows.append([t for t in row[start:].tolist() if t != tokenizer.pad_token_id])
    return rows
