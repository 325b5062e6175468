"""The probability protocol (CounterFact, Meng et al. 2022): is the new target now more likely than the old truth?

Teacher-forced accuracy asks "is the target the argmax?".  CounterFact asks a
softer, comparative question: given the prompt, does the model assign the new
``target`` a higher probability than the ``ground_truth`` it said before?
We compare *mean per-token* negative log-likelihoods (so a target with more
tokens is not penalised for its length):

    value = 1.0  if  NLL(target) < NLL(ground_truth)  else 0.0

averaged over cases this is CounterFact's "efficacy score" ES (edit prompt)
and "paraphrase score" PS (rephrases); on a neighbourhood prompt the
comparison is turned round (the true answer should stay above the new
target): the "neighbourhood score" NS.  The *magnitudes* EM, PM, NM are the
mean differences ``exp(-NLL(first)) - exp(-NLL(second))`` of the per-token
probabilities, and Score S is the harmonic mean of ES, PS and NS (Meng et
al., 2022, section 4; the summary computes it from the means).  Both NLLs come from the same batched
teacher-forced forward passes as every other probe (see
:mod:`keditlab.evaluate.teacher_forced`); this module only compares them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from keditlab.evaluate.teacher_forced import TFResult


def probability_test(target: TFResult, ground_truth: TFResult) -> tuple[float, dict]:
    """``(value, extra)``: 1.0 when the target's mean NLL beats the ground truth's.

    ``extra`` keeps the two mean NLLs (nats per token) and the two sequence
    probabilities ``P(answer | prompt)`` so a reader can see the margin.
    """
    value = 1.0 if target.nll < ground_truth.nll else 0.0
    extra = {
        # CounterFact's magnitude (EM/PM/NM): the difference of the per-token probabilities exp(-mean NLL)
        "magnitude": math.exp(-target.nll) - math.exp(-ground_truth.nll),
        "nll_target": target.nll,
        "nll_ground_truth": ground_truth.nll,
        "p_target": math.exp(-target.total_nll),
        "p_ground_truth": math.exp(-ground_truth.total_nll),
    }
    return value, extra


def references_test(wanted: Sequence[TFResult], other: Sequence[TFResult]) -> tuple[float, dict]:
    """``(value, extra)``: 1.0 when the ``wanted`` answers are, on average, likelier than the ``other`` ones.

    ConvSent's probability test (Mitchell et al., 2022): a topic question is
    read with each reference answer of the edit's sentiment and each of the
    other sentiment; the value is 1.0 when the mean, over references, of the
    per-token NLL is lower for the wanted set.  ``extra`` has both means and
    the magnitude, the difference of the per-token probabilities as above.
    """
    mean_wanted = sum(r.nll for r in wanted) / len(wanted)
    mean_other = sum(r.nll for r in other) / len(other)
    extra = {"magnitude": math.exp(-mean_wanted) - math.exp(-mean_other), "nll_wanted": mean_wanted,
             "nll_other": mean_other, "references": [len(wanted), len(other)]}
    return (1.0 if mean_wanted < mean_other else 0.0), extra
