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
  so that every layer, the benchmark readers included, words it the same way;
* what makes an edit case well formed (:func:`case_problems`): the one check
  every benchmark reader (:mod:`keditlab.data`) runs on each record, so that a
  record of a benchmark file is held to the rules of an edit written in a spec
  (for those, the JSON Schema says "a non-empty text" and
  :mod:`keditlab.spec.rules` asks :func:`subject_problem`, the same words).

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
from typing import Any, NamedTuple

#: What a probe measures (:attr:`Probe.kind`): a paraphrase of the edit prompt, an unrelated fact that must not
#: change, a fact that should follow from the edit, a multi-hop question (MQuAKE), a ripple-effect query (RippleEdits),
#: a question whose answer should take the edit's sentiment (KnowEdit's ConvSent).
PROBE_KINDS = ("rephrase", "locality", "portability", "multihop", "ripple", "sentiment")

#: The metric vocabulary of the spec language (``evaluate: {metrics}``), in reading order: tables and charts list
#: metrics in this order, and a metric a run has beyond these (``locality_accuracy``, ``multihop``) after them.
#: ``neighbourhood_kl`` (CounterFact+'s side-effect measure) is measured only where a spec asks for it.
METRIC_NAMES = ("reliability", "generalization", "locality", "neighbourhood_kl", "portability", "fluency")

#: The metrics a spec that names none is measured on.
DEFAULT_METRICS = ("reliability", "generalization", "locality", "portability", "fluency")

#: How a question is put to a model as question and answer: ``evaluate.context: qa``, and KnowEdit's Sanitation prompts.
QA_FRAME = "Question: {prompt}\nAnswer:"

#: The protocols a value can come from, in reading order (docs/protocols.md): ``teacher_forced`` (KnowEdit's token
#: accuracy), ``probability`` (CounterFact's comparisons) and ``generation`` (greedy decoding, scored on the text).
PROTOCOLS = ("teacher_forced", "probability", "generation")

#: Each protocol's short name, as the results tables write it: ``reliability (tf)``.
PROTOCOL_SHORT = {"teacher_forced": "tf", "probability": "prob", "generation": "gen"}
#: The short names back to the protocols they stand for (``tf`` → ``teacher_forced``).
PROTOCOL_LONG = {short: name for name, short in PROTOCOL_SHORT.items()}

#: The protocols each metric can be measured under, where the case has what the protocol needs (``probability``: a
#: ground truth to compare the target with).  Portability has no probability test: its probes have their own
#: answers, not the edit's target and ground truth.  Fluency is a property of generated text only; the neighbourhood
#: KL of the next-token distributions, of a teacher-forced reading.
METRIC_PROTOCOLS = {
    "reliability": PROTOCOLS,
    "generalization": PROTOCOLS,
    "locality": PROTOCOLS,
    "neighbourhood_kl": ("teacher_forced",),
    "portability": ("teacher_forced", "generation"),
    "fluency": ("generation",),
}

#: The states a causal trace restores (``trace.kinds``); :mod:`keditlab.trace` implements them.
TRACE_KINDS = ("residual", "mlp", "attn")

#: General ability (``evaluate.general``, docs/protocols.md): lm-evaluation-harness tasks run on the whole model
#: before the edits and after them.  These are the tasks keditlab ships, which read a local file and need no
#: network; any other name is a task of the harness itself, whose data the harness downloads on first use.
GENERAL_TASKS = ("knowns",)
#: The metric family of a general-ability score: task ``knowns`` is the row ``general:knowns``, never an edit metric.
GENERAL_FAMILY = "general"
#: The protocol of a general-ability score: the harness's own metric, ``lm-eval:acc`` (computed by its rules).
HARNESS_PROTOCOL = "lm-eval"


def general_row(task: str, metric: str) -> tuple[str, str]:
    """The ``(metric, protocol)`` row of the harness's score ``metric`` on ``task``: ``("general:knowns", "lm-eval:acc")``."""
    return f"{GENERAL_FAMILY}:{task}", f"{HARNESS_PROTOCOL}:{metric}"


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
    #: Answers that should become *less* likely than :meth:`answers` (ConvSent: the references of the other
    #: sentiment); the probability protocol compares the two sets' likelihoods.
    contrast: tuple[str, ...] = ()

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


def plain_text(text: str) -> str:
    """``text`` as keditlab compares names and answers: spacing collapsed to single spaces, case folded.

    ``plain_text("  Danielle  Darrieux ") == plain_text("danielle darrieux")``.
    """
    return " ".join(text.split()).casefold()


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


# -- what makes an edit case well formed ------------------------------------------------------------------------------
#
# A method edits at the subject's last token inside the prompt (ROME, MEMIT, ...) or trains the prompt to complete
# with the target (FT-M, LoRA, ...), and the evaluation compares completions with the target, the ground truth and
# each probe's answer.  None of that can be done with an empty text, a number where a text belongs, or a subject the
# prompt does not contain: ROME stops at such a case in the middle of a run, and FT-M trains on it without a word.
# So every case a benchmark reader builds is checked before anything runs, by case_problems below.  A spec's inline
# edits follow the same rules: the JSON Schema asks for non-empty texts, and keditlab.spec.rules asks subject_problem.


class CaseProblem(NamedTuple):
    """One thing wrong with an :class:`EditCase`: where it is, what is wrong, and how to fix it.

    ``where`` is the path of the field inside the case: ``("target",)``,
    ``("rephrase", 1)``, ``("locality", 3, "answer")``, ``("joint", 0,
    "subject")``.  A benchmark reader turns it into its own records' spelling
    (``("target",)`` is ``target_new`` in CounterFact's flat format, ``alt`` in
    ZsRE's), so a message names the field a user can find in the file.
    ``problem`` reads after the field's name: ``is an empty string``.
    """

    where: tuple[str | int, ...]
    problem: str
    fix: str


def shown_field(where: tuple[str | int, ...]) -> str:
    """A field path as a message writes it: ``("locality", 3, "answer")`` → ``locality[3].answer``."""
    text = ""
    for part in where:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def shorten(text: str, width: int = 60) -> str:
    """``text`` cut to ``width`` characters, the cut marked with an ellipsis: a value quoted in a message."""
    return text if len(text) <= width else text[: width - 1] + "…"


def _kind_of(value: Any) -> str:
    """A JSON value named by its kind, for a message: ``null``, ``the number 42``, ``a list``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def text_problem(value: Any) -> tuple[str, str] | None:
    """``(problem, fix)`` when ``value`` is not a non-empty text (a string with more than blanks), else None.

    Nothing is converted: ``42`` is a number, not the text ``"42"``, and a
    null is not the text ``"None"``; a benchmark record that holds them is
    malformed, and saying so beats editing toward a word nobody wrote.
    """
    if isinstance(value, str):
        if value.strip():
            return None
        return f"is {'an empty string' if not value else 'only blanks'}", "write the text it should hold"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"is {_kind_of(value)}, not a string", f'write it as a JSON string ("{value}") if that is the text meant'
    return f"is {_kind_of(value)}, not a string", "write the text it should hold, as a JSON string"


def suggest_subject(subject: str, prompt: str) -> str | None:
    """The part of ``prompt`` the user most likely meant by ``subject`` (a case or spelling slip), or None.

    The same letters in another case come first (``'eiffel tower'`` in
    ``"The Eiffel Tower is in"`` suggests ``'Eiffel Tower'``), then the run of
    words in the prompt that spells most like the subject.
    """
    start = prompt.lower().find(subject.lower())
    if start >= 0:
        return prompt[start : start + len(subject)]
    words = prompt.split()
    size = len(subject.split())
    candidates = {
        " ".join(words[i : i + n]).strip(".,;:!?\"'()")
        for n in (size - 1, size, size + 1)
        if n > 0
        for i in range(len(words) - n + 1)
    }
    matches = difflib.get_close_matches(subject, sorted(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def subject_problem(subject: str, prompt: str) -> tuple[str, str] | None:
    """``(problem, fix)`` when ``subject`` does not occur in ``prompt`` (exactly, letter case included), else None.

    The editing methods find the subject's tokens in the prompt and edit at
    the last of them, so only the exact spelling works.  The problem reads
    after the field's name (``subject 'Eifel Tower' does not occur in the
    prompt ...``); the fix names the prompt's own spelling when one is close.
    """
    if subject in prompt:
        return None
    problem = f"'{subject}' does not occur in the prompt '{shorten(prompt, 40)}'"
    suggestion = suggest_subject(subject, prompt)
    if suggestion and suggestion.lower() == subject.lower():
        problem += f" (it does with different capitalisation: '{suggestion}')"
        fix = f"use the exact spelling from the prompt: '{suggestion}'"
    elif suggestion:
        fix = f"use the exact spelling from the prompt, e.g. '{suggestion}'"
    else:
        fix = "write the subject exactly as it appears in the prompt (the edit is made at its last token)"
    return problem, fix


def _probe_problems(probe: Probe, where: tuple[str | int, ...]) -> list[CaseProblem]:
    """A probe's prompt, answer, aliases and contrasting answers are texts; so are those of its condition queries."""
    found = []
    for name, value in (("prompt", probe.prompt), ("answer", probe.answer)):
        problem = text_problem(value)
        if problem:
            found.append(CaseProblem((*where, name), *problem))
    for field in ("aliases", "contrast"):  # an empty alias would count any generated text as the answer
        for k, alias in enumerate(getattr(probe, field)):
            problem = text_problem(alias)
            if problem:
                found.append(CaseProblem((*where, field, k), *problem))
    for k, condition in enumerate(probe.conditions):
        found += _probe_problems(condition, (*where, "conditions", k))
    return found


def _request_problems(case: EditCase, where: tuple[str | int, ...]) -> list[CaseProblem]:
    """The edit itself: prompt, subject, target, ground truth, rephrases, target aliases; the subject in the prompt."""
    found = []
    for name in ("prompt", "subject", "target"):
        problem = text_problem(getattr(case, name))
        if problem:
            found.append(CaseProblem((*where, name), *problem))
    if not found:  # all three are texts: the subject must be in the prompt
        problem = subject_problem(case.subject, case.prompt)
        if problem:
            found.append(CaseProblem((*where, "subject"), *problem))
    if case.ground_truth is not None:
        problem = text_problem(case.ground_truth)
        if problem:
            found.append(CaseProblem((*where, "ground_truth"), problem[0], problem[1] + ", or leave it out (it is optional)"))
    for name in ("rephrase", "aliases"):
        for k, text in enumerate(getattr(case, name)):
            problem = text_problem(text)
            if problem:
                found.append(CaseProblem((*where, name, k), *problem))
    return found


def case_problems(case: EditCase) -> list[CaseProblem]:
    """Every reason ``case`` cannot be edited and measured as it is; an empty list when it can.

    The rules, the same for an inline edit and a benchmark record:

    * ``prompt``, ``subject`` and ``target`` are texts with more than blanks;
    * the subject occurs in the prompt, spelled exactly (:func:`subject_problem`);
    * ``ground_truth`` is such a text, or absent (``None``);
    * each rephrase, and each alias of the target, is such a text;
    * each probe (locality, portability, multi-hop and ripple questions) has
      a prompt and an answer that are such texts, and so are its aliases and
      the prompts and answers of its condition queries;
    * ``case_id`` is a text (a reader writes a whole-number id as its digits);
    * the joint edits of a case (MQuAKE) follow the same rules, at ``("joint", k, ...)``.

    Unique case ids are a rule about a list of cases, not one: the spec's
    rules and the readers check them where they hold the list.
    """
    found = _request_problems(case, ())
    for kind in ("locality", "portability", "questions"):
        for k, probe in enumerate(getattr(case, kind)):
            found += _probe_problems(probe, (kind, k))
    problem = text_problem(case.case_id)
    if problem:
        found.append(CaseProblem(("case_id",), problem[0], "give the record a whole number or a text as its case_id, "
                                                           "or leave case_id out to number it by its position"))
    for k, joint in enumerate(case.joint):
        found += _request_problems(joint, ("joint", k))
    return found
