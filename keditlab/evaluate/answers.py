"""The generation protocol: what the model *says*, scored as text.

Teacher forcing feeds the answer's tokens in and asks whether each is the
argmax; it leaks the answer's content and length, so it over-states what a
user sees.  *The Mirage of Model Editing* (Yang et al., ACL 2025) re-scored
the same edits from real greedy generations and saw 96.8% fall to 38.5%.
This protocol does what a user does: ask, let the model answer, read it.

* **Context** (``evaluate.context``): the prompt as written (``bare``), a
  question-answer instruction (``qa``: ``Question: <prompt>\\nAnswer:``), or
  the model's chat template (``chat``, applied by the runner to editing and
  evaluation alike; see ``model.chat_template``).
* **Decoding**: greedy, at most ``evaluate.answer_tokens`` (default 50) new
  tokens, batched with left padding; a row stops at its first sentence end
  (``.``, ``!`` or ``?`` followed by white space) or newline after some text,
  and the batch stops as soon as every row has (:class:`AnswerStop`).
* **Answer**: the generation up to that point (:func:`cut_answer`).
* **Scores** against the expected answer *and its aliases*, after
  :func:`normalize` (case, punctuation, articles ``a``/``an``/``the`` and
  white space ignored, as in SQuAD's evaluation):

  - ``exact``: the normalised answer equals a normalised expected answer;
  - ``contains``: a normalised expected answer occurs in it, on word boundaries.

* **Locality** under generation: is the answer after the edit the same
  (normalised) text as before it?
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from typing import Any

import torch

from keditlab.evaluate.generation import greedy_generate

#: How ``evaluate.context`` frames a prompt (``chat`` is the runner's, see the module docstring).
QA_FRAME = "Question: {prompt}\nAnswer:"

_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s|\n")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def frame(prompt: str, context: str) -> str:
    """The text the model reads for ``prompt`` under ``context`` (``bare``/``chat``: as given; ``qa``: framed)."""
    if context == "qa":
        return QA_FRAME.format(prompt=prompt.strip())
    return prompt


def cut_answer(text: str) -> str:
    """The answer in a generation: leading white space dropped, cut at the first sentence end or newline.

    ``" Paris. It is"`` → ``"Paris."``; ``" the U.S. state of Ohio.\\nNext"`` → ``"the U.S."`` (a known
    limit: an abbreviation followed by a space ends the answer).
    """
    text = text.lstrip()
    match = _SENTENCE_END.search(text)
    return (text[: match.start() + 1] if match and text[match.start()] != "\n" else text[: match.start()] if match else text).strip()


def normalize(text: str) -> str:
    """Lower case, punctuation to spaces, articles dropped, white space collapsed (SQuAD-style)."""
    text = text.casefold().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(answer: str, expected: Sequence[str]) -> bool:
    """Whether the normalised ``answer`` equals one normalised expected answer."""
    said = normalize(answer)
    return any(said == normalize(e) for e in expected if normalize(e))


def contains_answer(answer: str, expected: Sequence[str]) -> bool:
    """Whether a normalised expected answer occurs in the normalised ``answer`` as whole words."""
    said = f" {normalize(answer)} "
    return any(f" {normalize(e)} " in said for e in expected if normalize(e))


class AnswerStop:
    """A stopping criterion: each row is done at its first sentence end or newline after some text.

    Returns one flag per row, so ``generate`` pads finished rows and stops the
    whole batch once all are done.
    """

    def __init__(self, tokenizer: Any, width: int) -> None:
        self.tokenizer, self.width = tokenizer, width

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.Tensor:
        texts = [self.tokenizer.decode(row, skip_special_tokens=True) for row in input_ids[:, self.width:]]
        done = [bool(_SENTENCE_END.search(t.lstrip())) for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def generate_answers(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 50,
                     batch_size: int = 16, done: Callable[[int], Any] | None = None) -> list[str]:
    """Greedy generations (prompt excluded) of each prompt, each stopped at its answer's end; in order.

    Returns the raw continuations; :func:`cut_answer` takes the answer out.
    Prompts are sorted by length and batched with left padding; ``done`` is
    called with each batch's size once it is decoded (see :func:`greedy_generate`).
    """
    return greedy_generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                           stop=lambda width: AnswerStop(tokenizer, width), done=done)
