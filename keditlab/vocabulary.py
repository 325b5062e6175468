"""The words every layer of keditlab shares: what an edit is, and what is measured on it, how.

This is the ground floor.  The spec language, the benchmark readers
(:mod:`keditlab.data`), the evaluation, the methods, the runner and the
dashboards all speak of the same few things:

* an :class:`EditCase`: make a prompt about a subject complete with a new
  target, with the :class:`Probe` prompts that measure how the edit took;
* the **metrics** (:data:`METRIC_NAMES`): reliability, generalization,
  locality, portability, fluency;
* the **protocols** a value is measured under (:data:`PROTOCOLS`, shown in
  tables by their short names :data:`PROTOCOL_SHORT`): ``teacher_forced``
  (KnowEdit's token accuracy), ``probability`` (CounterFact's comparisons,
  Meng et al., 2022) and ``generation`` (greedy decoding, scored on the text);
  docs/protocols.md says when to use which;
* which protocols each metric can be measured under (:data:`METRIC_PROTOCOLS`);
* how a message suggests one of these names for a typo (:func:`did_you_mean`),
  so that every layer, the benchmark readers included, words it the same way.

Each table is declared here once; every other module imports it (``keditlab.spec``
and ``keditlab.evaluate`` re-export the names users know them by).  This module
imports nothing but the standard library, and nothing of keditlab, so every
layer can build on it without a loop: it holds plain data only (no torch, no
YAML, no I/O).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

#: What a probe measures (:attr:`Probe.kind`): a paraphrase of the edit prompt, an unrelated fact that must not
#: change, a fact that should follow from the edit, a multi-hop question (MQuAKE), a ripple-effect query (RippleEdits).
PROBE_KINDS = ("rephrase", "locality", "portability", "multihop", "ripple")

#: The metric vocabulary of the spec language (``evaluate: {metrics}``), in reading order: tables and charts list
#: metrics in this order, and a metric a run has beyond these (``locality_accuracy``, ``multihop``) after them.
METRIC_NAMES = ("reliability", "generalization", "locality", "portability", "fluency")

#: The protocols a value can come from, in reading order (docs/protocols.md): ``teacher_forced`` (KnowEdit's token
#: accuracy), ``probability`` (CounterFact's comparisons) and ``generation`` (greedy decoding, scored on the text).
PROTOCOLS = ("teacher_forced", "probability", "generation")

#: Each protocol's short name, as the results tables write it: ``reliability (tf)``.
PROTOCOL_SHORT = {"teacher_forced": "tf", "probability": "prob", "generation": "gen"}
#: The short names back to the protocols they stand for (``tf`` → ``teacher_forced``).
PROTOCOL_LONG = {short: name for name, short in PROTOCOL_SHORT.items()}

#: The protocols each metric can be measured under, where the case has what the protocol needs (``probability``: a
#: ground truth to compare the target with).  Portability has no probability test: its probes have their own
#: answers, not the edit's target and ground truth.  Fluency is a property of generated text only.
METRIC_PROTOCOLS = {
    "reliability": PROTOCOLS,
    "generalization": PROTOCOLS,
    "locality": PROTOCOLS,
    "portability": ("teacher_forced", "generation"),
    "fluency": ("generation",),
}

#: The states a causal trace restores (``trace.kinds``); :mod:`keditlab.trace` implements them.
TRACE_KINDS = ("residual", "mlp", "attn")


@dataclass(frozen=True)
class Probe:
    """One prompt used to measure an edit.

    ``kind`` says what the probe measures: ``rephrase`` (generalization: a
    paraphrase of the edit prompt, answered with the new target),
    ``locality`` (an unrelated fact that must not change) or ``portability``
    (a fact that should follow from the edit).  ``answer`` is the expected
    completion; for a rephrase it is the edit target.
    """

    kind: str
    prompt: str
    answer: str
    #: Other spellings that count as the answer under the generation protocol (MQuAKE, RippleEdits).
    aliases: tuple[str, ...] = ()
    #: A named sub-kind reported under its own name: KnowEdit's ``Reasoning`` or
    #: ``Relation_Specificity``, RippleEdits' criterion.  Empty: none.
    group: str = ""
    #: RippleEdits' condition queries: the probe is scored only where the
    #: *unedited* model answers these (``condition_mode`` ``OR``: one of them, ``AND``: all).
    conditions: tuple["Probe", ...] = ()
    condition_mode: str = "AND"
    #: RippleEdits' tests: the queries of one test share ``test`` (an id within
    #: the case) and the test passes when ``test_condition`` holds: ``OR`` (any
    #: query answered) or ``AND`` (all).  Empty ``test``: the probe is a test alone.
    test: str = ""
    test_condition: str = "OR"

    def answers(self) -> tuple[str, ...]:
        """The answer and its aliases, without repeats."""
        return tuple(dict.fromkeys((self.answer, *self.aliases)))


@dataclass(frozen=True)
class EditCase:
    """One requested edit: make ``prompt`` (which mentions ``subject``) complete with ``target``.

    ``ground_truth`` is what the model is believed to say before the edit; when
    given, the probability test P(target) > P(ground_truth) is also reported.
    """

    prompt: str
    subject: str
    target: str
    ground_truth: str | None = None
    rephrase: tuple[str, ...] = ()
    locality: tuple[Probe, ...] = ()
    portability: tuple[Probe, ...] = ()
    case_id: str = "0"
    #: Other spellings of the target that count under the generation protocol.
    aliases: tuple[str, ...] = ()
    #: Multi-hop questions (MQuAKE, kind ``multihop``) and ripple-effect queries
    #: (RippleEdits, kind ``ripple``), scored under the generation protocol.
    questions: tuple[Probe, ...] = ()
    #: Further edits that belong to this case and are applied with it (an
    #: MQuAKE case rewrites up to four facts before its questions are asked).
    joint: tuple["EditCase", ...] = ()

    def probes(self) -> list[Probe]:
        """Every probe of this case, rephrases first (their answer is the target)."""
        rephrases = [Probe("rephrase", p, self.target) for p in self.rephrase]
        return rephrases + list(self.locality) + list(self.portability) + list(self.questions)

    def requests(self) -> list["EditCase"]:
        """The edits to apply for this case: itself, then its joint edits."""
        return [self, *self.joint]


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice most like ``word`` (a typo's likely intent: the same word in another case first), or None."""
    choices = [c for c in choices if isinstance(c, str)]
    lowered = {c.lower(): c for c in choices}
    if isinstance(word, str) and word.lower() in lowered:  # wrong case only
        return lowered[word.lower()]
    matches = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a choice is close to ``word``, else an empty string: a message's tail for a typo."""
    match = closest(word, choices)
    return f" (did you mean '{match}'?)" if match else ""
