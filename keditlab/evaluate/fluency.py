"""Fluency as n-gram entropy (Meng et al., 2022, "Locating and Editing Factual Associations in GPT").

An edit can leave a model able to name the new fact while wrecking its
ability to write: after a too-strong edit, greedy generations often collapse
into loops like ``"Rome Rome Rome Rome"``.  Meng et al. detect this with the
entropy of the n-gram distribution of a generated text:

* split the text into lowercased words (and punctuation marks);
* for ``n`` in (2, 3) count every n-gram and turn the counts into a
  distribution ``p``; its entropy is ``H_n = -Σ p log₂ p`` (bits);
* the fluency of one text is the weighted average
  ``(2/3 · H_2 + 4/3 · H_3) / 2`` (the weights sum to 2, so this is a proper
  weighted mean that leans on trigrams).

A text that repeats itself has few distinct n-grams, so low entropy; a varied
text has many, so high entropy.  The value also grows with text length (more
n-grams can be distinct), so compare fluency only between generations of the
same length (``max_new_tokens``).  A case's fluency is the mean over its
generations.  Here we score the *continuation* only (the prompt is left out),
so the number reflects what the model wrote.

Everything here is pure Python: no model, no torch.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

#: Words (letters, digits, underscore, apostrophes inside words) or single punctuation marks.
_WORD = re.compile(r"\w+(?:'\w+)*|[^\w\s]")

DEFAULT_NS: tuple[int, ...] = (2, 3)
DEFAULT_WEIGHTS: tuple[float, ...] = (2 / 3, 4 / 3)


def words(text: str) -> list[str]:
    """Lowercased words and punctuation marks of ``text``, in order."""
    return _WORD.findall(text.lower())


def ngram_entropy(tokens: Sequence[str], n: int) -> float:
    """Entropy in bits of the distribution of ``n``-grams in ``tokens`` (0.0 when there are none)."""
    grams = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    total = sum(grams.values())
    if total == 0:
        return 0.0
    return -sum((c / total) * math.log2(c / total) for c in grams.values())


def text_fluency(
    text: str,
    ns: Sequence[int] = DEFAULT_NS,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
) -> float:
    """Weighted mean of the n-gram entropies of one text: ``Σ w_n H_n / len(ns)``."""
    if len(ns) != len(weights):
        raise ValueError("ns and weights must have the same length")
    tokens = words(text)
    return sum(w * ngram_entropy(tokens, n) for n, w in zip(ns, weights)) / len(ns)


def fluency(texts: Sequence[str]) -> float | None:
    """Mean :func:`text_fluency` over ``texts``; ``None`` when there are no texts."""
    if not texts:
        return None
    return sum(text_fluency(t) for t in texts) / len(texts)
