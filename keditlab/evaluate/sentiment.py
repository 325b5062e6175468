"""The sentiment of a generated answer, for KnowEdit's ConvSent edits.

A ConvSent edit (Mitchell et al., ICML 2022, "Memory-Based Model Editing at
Scale", the SERAC paper's sentiment task; KnowEdit, Zhang et al., 2024)
asks the model to hold an opinion on a topic: after the edit, "What do you
think of Tallahassee?" should be answered positively (or negatively).  No
single answer is right, so success is judged on the *sentiment* of what the
model says.  The paper used a trained classifier; keditlab must work
offline, so it uses VADER (Hutto & Gilbert, ICWSM 2014, "VADER: A
Parsimonious Rule-based Model for Sentiment Analysis of Social Media Text";
the ``vaderSentiment`` package, MIT): a lexicon of rated words and a few
rules (negation, intensifiers, "but", punctuation) that scores a sentence
with a *compound* value in [-1, 1].  No model, no download, the same score
on every machine.

How far to trust it: on ConvSent's own reference answers
(``blender_val.json``, 15,980 sentences labelled positive or negative by the
dataset), VADER's compound leans the labelled way for 68%, is neutral
(|compound| <= 0.05) for 19% and leans the other way for 13%: many reference
answers ("I have never been there.") carry no sentiment a lexicon can see.
The classifier's verdicts are therefore reported apart from the probability
protocol's (:func:`keditlab.evaluate.probability.references_test`), which
asks the model itself whether the references of the wanted sentiment are now
likelier than the others.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

#: The sentiments an edit can ask for, and the sign of a compound value that leans each way.
SENTIMENTS = {"positive": 1.0, "negative": -1.0}

#: A compound value within this distance of 0 leans neither way (VADER's authors' own threshold).
NEUTRAL = 0.05


@lru_cache(maxsize=1)
def _analyser() -> Any:
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:  # pragma: no cover - a dependency of keditlab; only a broken install lacks it
        raise ImportError("scoring ConvSent answers needs the package vaderSentiment. "
                          "Fix: pip install vaderSentiment (it is one of keditlab's dependencies).") from None
    return SentimentIntensityAnalyzer()


def compound(text: str) -> float:
    """VADER's compound sentiment of ``text``, in [-1, 1] (0.0 for an empty text)."""
    return float(_analyser().polarity_scores(text)["compound"]) if text.strip() else 0.0


def leaning(text: str, sentiment: str) -> tuple[float, float]:
    """``(value, score)`` of an answer for an edit that asks for ``sentiment``.

    ``value`` is 1.0 when the answer leans that way (compound beyond
    :data:`NEUTRAL` on its side), else 0.0; ``score`` is the compound turned
    toward the wanted sentiment (1.0: as positive as VADER scores, when
    positive was asked; -1.0: as far the other way).
    """
    if sentiment not in SENTIMENTS:
        raise ValueError(f"unknown sentiment {sentiment!r}; known: {', '.join(SENTIMENTS)}")
    score = SENTIMENTS[sentiment] * compound(text)
    return float(score > NEUTRAL), score
