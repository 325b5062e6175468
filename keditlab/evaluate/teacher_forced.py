"""Teacher-forced checks: does the model predict the answer, token by token?

For a pair ``(prompt, answer)`` the model reads ``prompt_ids + answer_ids``
in one forward pass (the tokenization is the shared convention of
:mod:`keditlab.models.tokens`: the answer gets one leading space).  The logits
at position ``t`` predict token ``t + 1``, so the answer's ``k``-th token is
predicted at position ``len(prompt_ids) + k - 1``.  From those positions we
read:

* ``predicted``: the argmax token ids (what greedy decoding would pick *if*
  every earlier answer token were already right: that is the "teacher
  forcing");
* ``accuracy``: the fraction of answer tokens equal to the argmax
  (KnowEdit's reliability/generalization/portability score for one probe);
* ``nll``: the mean negative log-likelihood (nats per token) of the answer,
  used by the probability protocol.

Many pairs are checked together: they are sorted by length, so each batch
needs little padding, padded on the right with an attention mask (real tokens
come first, so their positions and outputs do not depend on the padding),
and each batch is a single forward pass under ``torch.inference_mode()``
that computes logits at the answer positions only
(:func:`~keditlab.models.logits.logits_at`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from keditlab.models.logits import logits_at
from keditlab.models.sampling import device_of, right_padded
from keditlab.models.tokens import encode_prompt_answer


@dataclass
class TFResult:
    """The teacher-forced reading of one ``(prompt, answer)`` pair."""

    accuracy: float          # fraction of answer tokens that are the argmax
    predicted: list[int]     # argmax ids at the answer positions
    answer_ids: list[int]    # the answer's token ids
    nll: float               # mean negative log-likelihood per answer token (nats)
    #: Where asked for (``teacher_forced(distributions=...)``): token ids and their log-probabilities in the
    #: next-token distribution after the prompt, the position that predicts the answer's first token.
    top: tuple[list[int], list[float]] | None = None

    @property
    def total_nll(self) -> float:
        """Negative log-likelihood of the whole answer: ``-log P(answer | prompt)``."""
        return self.nll * len(self.answer_ids)


#: How many of the most likely next tokens a distribution is kept by (:attr:`TFResult.top`).
TOP_K = 64


def _top(logits: torch.Tensor, ids: Sequence[int] | None) -> tuple[list[int], list[float]]:
    """The :data:`TOP_K` most likely tokens of ``logits`` (or the tokens ``ids``) and their log-probabilities."""
    logprobs = logits.float().log_softmax(dim=-1)
    if ids is None:
        values, ids = logprobs.topk(min(TOP_K, logprobs.shape[-1]))
        return [int(t) for t in ids.tolist()], values.tolist()
    return list(ids), logprobs[torch.tensor(list(ids), device=logprobs.device)].tolist()


def pad_id(tokenizer: Any) -> int:
    """A token id to pad with: the tokenizer's pad token, else its EOS, else 0.

    Padded positions are masked out, so the choice does not change results.
    """
    for value in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if value is not None:
            return int(value)
    return 0


def teacher_forced(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[tuple[str, str]],
    batch_size: int = 16,
    done: Callable[[int], Any] | None = None,
    distributions: dict[int, Sequence[int] | None] | None = None,
) -> list[TFResult]:
    """Teacher-forced accuracy, argmax ids and mean NLL for each ``(prompt, answer)`` pair.

    Results come back in the order of ``pairs``.  Batching does not change
    them (beyond float noise in ``nll``).  ``done``, when given, is called with
    the number of pairs of each batch once its forward pass is read (a progress
    bar's ``update``).

    ``distributions`` asks, for some pairs (by index), for the next-token
    distribution after the prompt (:attr:`TFResult.top`): ``None`` for its
    :data:`TOP_K` most likely tokens, or a list of token ids for theirs.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    encoded = [encode_prompt_answer(tokenizer, p, a) for p, a in pairs]
    if any(not prompt_ids for prompt_ids, _ in encoded):
        raise ValueError("a prompt tokenizes to nothing; there is no position to predict the answer from")
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
    device = device_of(model)
    pad = pad_id(tokenizer)
    results: list[TFResult | None] = [None] * len(encoded)

    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            seqs = [encoded[i][0] + encoded[i][1] for i in chunk]
            input_ids, mask = right_padded(seqs, pad, device)
            # position len(prompt) - 1 predicts the first answer token
            positions = [range(len(encoded[i][0]) - 1, len(encoded[i][0]) - 1 + len(encoded[i][1])) for i in chunk]
            logits = logits_at(model, input_ids, mask, positions)
            for row, i in enumerate(chunk):
                answer_ids = encoded[i][1]
                rows = logits[row, : len(answer_ids)].float()
                target = torch.tensor(answer_ids, device=rows.device)
                predicted = rows.argmax(dim=-1)
                nll = torch.nn.functional.cross_entropy(rows, target, reduction="mean")
                results[i] = TFResult(
                    accuracy=float((predicted == target).float().mean()),
                    predicted=[int(t) for t in predicted.tolist()],
                    answer_ids=list(answer_ids),
                    nll=float(nll),
                    top=_top(rows[0], distributions[i]) if distributions and i in distributions else None,
                )
            if done is not None:
                done(len(chunk))
    return [r for r in results if r is not None]
