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
  tokens, batched with left padding; a row stops at EOS, and at the first
  end that a stop rule of ``evaluate.stop`` names (default both): ``sentence``
  (``.``, ``!`` or ``?`` followed by white space) and ``newline`` (a line
  break after some text).  The batch stops as soon as every row has
  (:class:`AnswerStop`); ``stop: []`` leaves only the length and EOS.
* **Answer**: the generation up to that point (:func:`cut_answer`, with the
  same rules: the one place that says where an answer ends).
* **Scores** against the expected answer *and its aliases*, after
  :func:`normalize` (case, punctuation, articles ``a``/``an``/``the`` and
  white space ignored, as in SQuAD's evaluation):

  - ``exact``: the normalised answer equals a normalised expected answer;
  - ``contains``: a normalised expected answer occurs in it, on word boundaries.

  With a judge (``evaluate.judge``, :mod:`keditlab.evaluate.judge`) the
  judge's yes or no is the value, and these two are kept beside it.

* **Locality** under generation: is the answer after the edit the same
  (normalised) text as before it?
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import torch

from keditlab.evaluate.generation import greedy_generate
from keditlab.spec.types import ANSWER_STOPS
from keditlab.vocabulary import QA_FRAME

# How ``evaluate.context: qa`` frames a prompt: QA_FRAME, from the vocabulary (``chat`` is the runner's, see the
# module docstring).

#: What ends an answer under each stop rule of ``evaluate.stop`` (:data:`~keditlab.spec.types.ANSWER_STOPS`):
#: a sentence end is ``.``, ``!`` or ``?`` (closing quotes or brackets may follow) then white space.
STOP_PATTERNS = {"sentence": r"[.!?][\"')\]]*\s", "newline": r"\n"}
assert set(STOP_PATTERNS) == set(ANSWER_STOPS), "every stop rule the spec language names has its pattern"
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def frame(prompt: str, context: str) -> str:
    """The text the model reads for ``prompt`` under ``context`` (``bare``/``chat``: as given; ``qa``: framed)."""
    if context == "qa":
        return QA_FRAME.format(prompt=prompt.strip())
    return prompt


@lru_cache(maxsize=None)
def answer_end(stops: tuple[str, ...] = ANSWER_STOPS) -> re.Pattern[str] | None:
    """The pattern that ends an answer under the stop rules ``stops`` (None for ``()``: nothing in the text does)."""
    unknown = set(stops) - set(STOP_PATTERNS)
    if unknown:
        raise ValueError(f"unknown stop rules {sorted(unknown)}; known: {', '.join(ANSWER_STOPS)}")
    parts = [STOP_PATTERNS[rule] for rule in ANSWER_STOPS if rule in stops]
    return re.compile("|".join(parts)) if parts else None


def cut_answer(text: str, stops: Sequence[str] = ANSWER_STOPS) -> str:
    """The answer in a generation: leading white space dropped, cut at the first end the stop rules ``stops`` name.

    With both rules (the default) ``" Paris. It is"`` → ``"Paris."``, ``" the U.S. state of Ohio.\\nNext"``
    → ``"the U.S."`` (a known limit: an abbreviation followed by a space ends the answer); with
    ``("newline",)`` the second is ``"the U.S. state of Ohio."``; with ``()`` the text is kept whole.
    """
    text = text.lstrip()
    end = answer_end(tuple(stops))
    match = end.search(text) if end is not None else None
    if match is None:
        return text.strip()
    return (text[: match.start()] if text[match.start()] == "\n" else text[: match.start() + 1]).strip()


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
    """A stopping criterion: each row is done at the first end, after some text, that the stop rules name.

    Returns one flag per row, so ``generate`` pads finished rows and stops the
    whole batch once all are done.  ``stops`` are rule names of
    ``evaluate.stop`` (default: a sentence end or a newline); the same
    :func:`answer_end` pattern then cuts the answer (:func:`cut_answer`).
    """

    def __init__(self, tokenizer: Any, width: int, stops: Sequence[str] = ANSWER_STOPS) -> None:
        self.tokenizer, self.width, self.end = tokenizer, width, answer_end(tuple(stops))

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.Tensor:
        if self.end is None:   # no rule: only the length and EOS end a row
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        texts = [self.tokenizer.decode(row, skip_special_tokens=True) for row in input_ids[:, self.width:]]
        done = [bool(self.end.search(t.lstrip())) for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def generate_answers(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 50,
                     batch_size: int = 16, done: Callable[[int], Any] | None = None,
                     stops: Sequence[str] = ANSWER_STOPS) -> list[str]:
    """Greedy generations (prompt excluded) of each prompt, each stopped at its answer's end; in order.

    Returns the raw continuations; :func:`cut_answer` (with the same
    ``stops``) takes the answer out.  A row ends at EOS, after
    ``max_new_tokens``, or at the first end the stop rules ``stops`` name
    (``()``: none, so only the length and EOS).  Prompts are sorted by length
    and batched with left padding; ``done`` is called with each batch's size
    once it is decoded (see :func:`greedy_generate`).
    """
    stop = (lambda width: AnswerStop(tokenizer, width, stops)) if answer_end(tuple(stops)) is not None else None
    return greedy_generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                           stop=stop, done=done)
