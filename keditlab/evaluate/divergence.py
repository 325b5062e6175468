"""Neighbourhood KL: how far an edit moves the model's next-token distribution on prompts it should leave alone.

Locality asks whether the *most likely* answer of an unrelated prompt is
still the same; an edit can keep every argmax and still shift probability
mass toward its new target on prompts about other subjects.  CounterFact+
(Hoelscher-Obermaier et al., Findings of ACL 2023, "Detecting Edit Failures
in Large Language Models: An Improved Specificity Benchmark") measures that
shift as the KL divergence between the next-token distributions of the
model before and after the edit, on the neighbourhood prompts:

    KL(P_before || P_after) = sum over tokens t of  P_before(t) · log(P_before(t) / P_after(t))

(0 when nothing moved; larger is worse; in nats).  keditlab reads it at the
position after each locality prompt, the one that predicts the answer's
first token.

The pre-edit distribution must be kept between the two measurements, and in
the run folder (a resumed run compares with it), so it is kept coarse: the
unedited model's :data:`~keditlab.evaluate.teacher_forced.TOP_K` most likely
tokens, each with its probability, and one bucket for all the others.  The
divergence of the two distributions seen through those 65 buckets is a lower
bound of the full one (merging outcomes never raises a KL divergence) and
equals it when the edit moves mass only among the top tokens or only among
the rest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: The smallest probability a bucket is given, so that a bucket emptied by an edit gives a large but finite divergence.
FLOOR = 1e-12


def coarse_kl(before: Sequence[float], after: Sequence[float]) -> float:
    """KL(before || after) over the same tokens' log-probabilities, plus one bucket for every other token."""
    p = [math.exp(v) for v in before]
    q = [math.exp(v) for v in after]
    p_rest, q_rest = max(FLOOR, 1.0 - sum(p)), max(FLOOR, 1.0 - sum(q))
    kl = sum(pi * (lp - lq) for pi, lp, lq in zip(p, before, after))
    return max(0.0, kl + p_rest * (math.log(p_rest) - math.log(q_rest)))
