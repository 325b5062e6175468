"""How prompts, answers and subjects become tokens, the same way everywhere.

Editing and evaluation must agree on tokenization, or a method would optimise
one token sequence and be graded on another.  The convention here:

* an answer is tokenized on its own, with one leading space and no special
  tokens (``" Rome"``), and appended to the prompt's tokens; so
  ``prompt_ids + answer_ids`` is exactly what the model sees in a
  teacher-forced check;
* the subject's *last token* (where ROME reads its key) is found through the
  tokenizer's character offsets when it has them, otherwise by tokenizing the
  prompt up to the end of the subject.
"""

from __future__ import annotations

from typing import Any


class SubjectNotFoundError(ValueError):
    """The subject does not occur in the prompt."""


def answer_text(answer: str) -> str:
    """The text appended after a prompt for ``answer``: a single leading space."""
    return " " + answer.strip()


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a prompt, with the tokenizer's usual special tokens (e.g. BOS)."""
    return list(tokenizer(prompt)["input_ids"])


def encode_answer(tokenizer: Any, answer: str) -> list[int]:
    """Token ids of an answer as it is appended after a prompt (no special tokens)."""
    ids = list(tokenizer(answer_text(answer), add_special_tokens=False)["input_ids"])
    if not ids:
        raise ValueError(f"the answer {answer!r} tokenizes to nothing")
    return ids


def context_length(model: Any) -> int | None:
    """The most positions the model reads (``max_position_embeddings``, GPT-2's ``n_positions``), or None if unstated.

    A multimodal model's language part (``text_config``) is asked first.
    """
    config = getattr(model, "config", None)
    for part in (getattr(config, "text_config", None), config):
        value = getattr(part, "max_position_embeddings", None) if part is not None else None
        if isinstance(value, int) and value > 0:
            return value
    return None


def encode_prompt_answer(tokenizer: Any, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """``(prompt_ids, answer_ids)``; the model reads ``prompt_ids + answer_ids``."""
    return encode_prompt(tokenizer, prompt), encode_answer(tokenizer, answer)


def subject_last_token(tokenizer: Any, prompt: str, subject: str, search_from: int = 0) -> int:
    """Index, in ``encode_prompt(tokenizer, prompt)``, of the last token of ``subject``.

    Uses the first occurrence of the subject at or after character ``search_from``
    (a method that puts a context prefix before the prompt searches after it).
    """
    start = prompt.find(subject, search_from)
    if start < 0:
        raise SubjectNotFoundError(f"subject {subject!r} does not occur in prompt {prompt!r}")
    end = start + len(subject)
    try:
        enc = tokenizer(prompt, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
    except (NotImplementedError, TypeError, ValueError, KeyError):
        offsets = None
    if offsets:
        last = None
        for index, (a, b) in enumerate(offsets):
            if b > a and a < end:  # a real token that starts inside (or before the end of) the subject
                last = index
        if last is not None:
            return last
    # Fallback: the tokens of the prompt cut at the subject's end.
    return len(encode_prompt(tokenizer, prompt[:end])) - 1


def subject_token_range(tokenizer: Any, prompt: str, subject: str) -> tuple[int, int]:
    """Token indices ``[start, end)`` of the first occurrence of ``subject`` in ``encode_prompt(tokenizer, prompt)``.

    A token belongs to the subject when its characters overlap the subject's
    (a leading space merged into the subject's first token counts).  Without
    character offsets, the prompt is tokenized up to the subject's start and end.
    """
    start = prompt.find(subject)
    if start < 0 or not subject:
        raise SubjectNotFoundError(
            f"subject {subject!r} does not occur in prompt {prompt!r}. "
            "Fix: spell the subject exactly as it is written in the prompt (case and spaces included)."
        )
    end = start + len(subject)
    try:
        offsets = tokenizer(prompt, return_offsets_mapping=True)["offset_mapping"]
    except (NotImplementedError, TypeError, ValueError, KeyError):
        offsets = None
    if offsets:
        inside = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
        if inside:
            return inside[0], inside[-1] + 1
    first = len(encode_prompt(tokenizer, prompt[:start])) if start else len(encode_prompt(tokenizer, ""))
    return first, len(encode_prompt(tokenizer, prompt[:end]))
