"""Evaluation: turn probes into metric values, each tagged with its protocol.

This layer knows no editing method: it takes a model, its tokenizer and
:class:`~keditlab.vocabulary.EditCase` objects, and measures.  The runner
calls :func:`measure` before an edit (``reference=None``) and after it (with
the pre-edit measurements as ``reference``, for locality).

Protocols:

* ``teacher_forced``: argmax agreement at the answer positions of
  ``prompt + answer`` (:mod:`keditlab.evaluate.teacher_forced`);
* ``probability``: CounterFact's ES, PS, NS with magnitudes EM, PM, NM
  (:mod:`keditlab.evaluate.probability`; Score S in the summary);
* ``generation``: greedy answers (stopped as ``evaluate.stop`` says: at the
  first sentence end or line break by default), scored by exact match and
  answer-contained against the answer and its aliases
  (:mod:`keditlab.evaluate.answers`) or by a judge model's yes or no
  (``evaluate.judge``, :mod:`keditlab.evaluate.judge`), and the n-gram-entropy fluency
  of greedy generations (:mod:`keditlab.evaluate.fluency`,
  :mod:`keditlab.evaluate.generation`).  docs/protocols.md says when to use which.

See :mod:`keditlab.evaluate.measurement` for the exact metric definitions;
it has one scoring function per protocol.
"""

from keditlab.evaluate.answers import contains_answer, cut_answer, exact_match, generate_answers, normalize
from keditlab.evaluate.fluency import fluency, ngram_entropy, text_fluency, words
from keditlab.evaluate.generation import greedy_generate, starts_with_answer
from keditlab.evaluate.judge import JUDGE_PROMPT, Judge, JudgeError, JudgeQuestion, Verdict, open_judge, read_verdict
from keditlab.evaluate.measurement import (
    CaseMeasurement,
    Generation,
    ProbeResult,
    case_scores,
    harmonic_mean,
    mean_scores,
    measure,
)
from keditlab.evaluate.probability import probability_test
from keditlab.evaluate.teacher_forced import TFResult, teacher_forced
from keditlab.vocabulary import PROTOCOLS  # declared in the ground vocabulary; re-exported as keditlab.evaluate.PROTOCOLS

__all__ = [
    "JUDGE_PROMPT",
    "PROTOCOLS",
    "Judge",
    "JudgeError",
    "JudgeQuestion",
    "Verdict",
    "open_judge",
    "read_verdict",
    "case_scores",
    "contains_answer",
    "cut_answer",
    "exact_match",
    "generate_answers",
    "harmonic_mean",
    "normalize",
    "CaseMeasurement",
    "Generation",
    "ProbeResult",
    "TFResult",
    "fluency",
    "greedy_generate",
    "mean_scores",
    "measure",
    "ngram_entropy",
    "probability_test",
    "starts_with_answer",
    "teacher_forced",
    "text_fluency",
    "words",
]
