"""Greedy generation, batched: the text users read before and after an edit.

Prompts are padded on the *left* (so every prompt ends at the same column and
the next token is generated in the same place for all of them), and
``model.generate`` decodes greedily (``do_sample=False``) with its KV cache.
Only the continuation is returned, decoded without special tokens.  A
sequence that emits EOS stops; its continuation is what came before EOS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from keditlab.evaluate.teacher_forced import pad_id
from keditlab.models.sampling import device_of
from keditlab.vocabulary import plain_text


def greedy_generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 24,
    batch_size: int = 16,
    stop: Callable[[int], Any] | None = None,
    done: Callable[[int], Any] | None = None,
) -> list[str]:
    """Greedy continuation (text only, prompt excluded) of each prompt, in order.

    ``stop(width)``, when given, makes a ``transformers`` stopping criterion for
    a batch whose prompts are ``width`` tokens wide (left-padded), e.g. to stop
    at the end of an answer (:class:`keditlab.evaluate.answers.AnswerStop`).
    ``done``, when given, is called with the number of prompts of each batch
    once it is decoded (a progress bar's ``update``).
    """
    if not prompts:
        return []
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    device = device_of(model)
    pad = pad_id(tokenizer)
    # Sort by length so batches are padded little; left padding keeps the ends aligned.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    texts: list[str] = [""] * len(prompts)
    saved_side = tokenizer.padding_side
    saved_pad = tokenizer.pad_token
    try:
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        with torch.inference_mode():
            from transformers import StoppingCriteriaList

            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                batch = tokenizer([prompts[i] for i in chunk], return_tensors="pt", padding=True)
                batch = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
                width = batch["input_ids"].shape[1]
                stopping = {} if stop is None else {"stopping_criteria": StoppingCriteriaList([stop(width)])}
                out = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=pad,
                    **stopping,
                )
                for row, i in enumerate(chunk):
                    texts[i] = tokenizer.decode(out[row, width:], skip_special_tokens=True)
                if done is not None:
                    done(len(chunk))
    finally:
        tokenizer.padding_side = saved_side
        if saved_pad is None:
            tokenizer.pad_token = None
    return texts


def starts_with_answer(continuation: str, answer: str) -> bool:
    """Whether a greedy ``continuation`` says ``answer`` first (case and spacing ignored).

    ``" Rome, the capital"`` says ``"Rome"``; ``" the city of Rome"`` does not.
    (So ``evaluate.max_new_tokens`` must leave room for the whole answer.)
    """
    said, wanted = plain_text(continuation), plain_text(answer)
    return bool(wanted) and said.startswith(wanted)
