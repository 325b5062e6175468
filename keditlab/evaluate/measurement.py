"""From edit cases to metric values, each tagged with the protocol that produced it.

The metrics follow the KnowEdit / CounterFact conventions.  For an
:class:`~keditlab.vocabulary.EditCase` (prompt, subject, target, ground truth,
rephrases, locality and portability probes):

``reliability`` (protocol ``teacher_forced``)
    Feed ``prompt_ids + target_ids``; the value is the fraction of target
    tokens that are the argmax at the preceding position.  1.0 means the
    model now completes the edit prompt with the target.
``generalization`` (``teacher_forced``)
    The same check for each rephrase of the prompt, answered with the target.
``portability`` (``teacher_forced``)
    The same check for each portability probe with its own answer (a fact
    that should follow from the edit, e.g. a question about the new value).
``locality`` (``teacher_forced``)
    Feed ``loc_prompt_ids + loc_answer_ids`` and record the argmax tokens at
    the answer positions.  The value is the fraction of positions whose argmax
    *after* the edit equals the argmax *before* it: agreement of the model
    with itself, not with the written answer (so a fact the model never knew
    still counts as preserved when its prediction does not move).  Before the
    edit there is nothing to compare with, so the value is 1.0 by definition;
    ``extra["accuracy"]`` always holds the plain teacher-forced accuracy
    against the written answer, so users can see whether the model knew it.
``reliability`` / ``generalization`` (protocol ``probability``), when the case has a ``ground_truth``
    1.0 if the target's mean per-token NLL is below the ground truth's, i.e.
    P(target) > P(ground_truth) in the CounterFact sense; both NLLs and
    probabilities are kept in ``extra``.
``fluency`` (protocol ``generation``)
    Greedy generations of ``max_new_tokens`` from the edit prompt and each
    rephrase, scored by n-gram entropy (see :mod:`keditlab.evaluate.fluency`)
    and averaged over the case's generations.

Under ``generation`` (:mod:`keditlab.evaluate.answers`) every probe is
asked and its greedy answer scored: ``reliability``, ``generalization`` and
``portability`` by exact match (and ``*_contains``), ``locality`` by whether
the answer is unchanged from before the edit (``locality_accuracy``: the
answer contained), ``multihop`` by whether any of a case's MQuAKE questions is
answered, ``ripple:<criterion>`` over the RippleEdits tests whose condition
queries the unedited model answered.  With a judge (``evaluate.judge``,
:mod:`keditlab.evaluate.judge`) the judge's yes or no replaces exact match as
each of those values (``locality_accuracy`` for locality), and exact match is
kept as ``*_exact`` beside ``*_contains``; every verdict keeps the prompt the
judge was sent (``extra["judge"]``).  Under ``probability`` a locality probe
is CounterFact's NS (the true answer stays above the new target), and every
comparison carries its magnitude (EM, PM, NM); :func:`case_scores` lists
every key.

Values from different protocols answer different questions, so they are never
averaged together: :meth:`CaseMeasurement.scores` keys every mean by
``(metric, protocol)``.

:func:`measure` plans every probe of every case, runs the model once over
all of them, and hands each probe's reading to its protocol's scoring
function: :func:`score_teacher_forced`, :func:`score_probability`,
:func:`score_generation`.

Speed: every teacher-forced sequence of every case (including the target and
ground-truth sequences of the probability protocol) goes into one
:func:`~keditlab.evaluate.teacher_forced.teacher_forced` call, so the model
runs ``ceil(n / batch_size)`` forward passes in all; identical
``(prompt, answer)`` pairs are computed once.  All generations are batched in
one :func:`~keditlab.evaluate.generation.greedy_generate` call.  The greedy
generation from the edit prompt is produced (users want to see the
before/after text) except where ``measure(text=False)`` says nobody reads it;
rephrase generations and the fluency value only when
``fluency`` is requested.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from keditlab.evaluate.fluency import fluency as fluency_of
from keditlab.evaluate.answers import contains_answer, cut_answer, exact_match, frame, generate_answers, normalize
from keditlab.evaluate.generation import greedy_generate, starts_with_answer
from keditlab.evaluate.judge import Judge, JudgeQuestion, Verdict, open_judge
from keditlab.evaluate.divergence import coarse_kl
from keditlab.evaluate.probability import probability_test, references_test
from keditlab.evaluate.sentiment import leaning
from keditlab.evaluate.teacher_forced import TFResult, teacher_forced
from keditlab.spec.types import ANSWER_STOPS, EvalSpec
from keditlab.vocabulary import METRIC_NAMES, METRIC_PROTOCOLS, PROTOCOLS, EditCase, Probe


@dataclass
class ProbeResult:
    """One probe's value under one protocol.

    ``value`` None: the probe was not scored (a RippleEdits test whose
    conditions the unedited model failed); it counts in no mean.
    """

    metric: str            # reliability | generalization | locality | portability | multihop | ripple
    protocol: str          # teacher_forced | probability | generation
    prompt: str
    answer: str
    value: float | None
    predicted: list[int] | None = None   # argmax ids at the answer positions (teacher_forced)
    extra: dict = field(default_factory=dict)
    group: str = ""        # a named sub-kind (KnowEdit's Reasoning, RippleEdits' criterion, MQuAKE's new/original)


@dataclass
class Generation:
    """A greedy generation: the prompt and its continuation (prompt not included)."""

    prompt: str
    text: str


#: Under the probability protocol, the CounterFact name of each metric's rate and magnitude.
COUNTERFACT_NAMES = {"reliability": ("ES", "EM"), "generalization": ("PS", "PM"), "locality": ("NS", "NM")}


def case_scores(probes: Sequence[ProbeResult]) -> dict[tuple[str, str], float]:
    """One case's scores, keyed ``(metric, protocol)``, from its probe results.

    * the mean value per ``(metric, protocol)``; with a group also under
      ``metric:group`` (KnowEdit's ``portability:Reasoning``);
    * ``locality_accuracy`` (teacher-forced, generation): accuracy against the
      dataset's answer, apart from ``locality`` (agreement with the model before the edit);
    * ``<metric>_magnitude`` (probability): CounterFact's EM, PM, NM;
    * ``<metric>_contains`` (generation): the answer-contained rate beside the exact-match one;
    * ``<metric>_exact`` (generation, with a judge): exact match, beside the judge's verdict, which is
      then the value of ``<metric>`` (and of ``locality_accuracy``);
    * ``multihop`` (generation): 1.0 when *any* multi-hop question is answered (MQuAKE);
      ``multihop_original`` the same against the answer before the edits;
    * ``sentiment`` (generation): the share of answers that lean the edit's way
      (ConvSent), ``sentiment:<positive|negative>`` by the sentiment asked for,
      and ``sentiment_score`` the mean VADER compound turned toward it; under
      probability, whether the wanted references are likelier than the others;
    * ``ripple:<criterion>`` (generation): accuracy over the executed tests (a
      test of several queries passes when any, ``OR``, or all, ``AND``, are
      answered), and ``ripple_executed:<criterion>`` the fraction of tests executed.
    """
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    anyof: dict[tuple[str, str], list[float]] = defaultdict(list)
    tests: dict[tuple[str, str, str], list[ProbeResult]] = defaultdict(list)

    def add(metric: str, protocol: str, value: float | None, group: str = "") -> None:
        if value is None:
            return
        groups[(metric, protocol)].append(value)
        if group:
            groups[(f"{metric}:{group}", protocol)].append(value)

    for probe in probes:
        m, p, extra = probe.metric, probe.protocol, probe.extra
        if m == "multihop":
            name = "multihop" if probe.group != "original" else "multihop_original"
            anyof[(name, p)].append(probe.value)
            anyof[(f"{name}_contains", p)].append(extra.get("contains", 0.0))
            if "exact" in extra:   # judged: the value is the verdict, exact match is kept apart
                anyof[(f"{name}_exact", p)].append(extra["exact"])
            continue
        if m == "ripple":
            tests[(probe.group, p, extra.get("test") or f"probe {len(tests)}")].append(probe)
            continue
        add(m, p, probe.value, probe.group)
        if m == "locality" and "accuracy" in extra:
            add("locality_accuracy", p, extra["accuracy"], probe.group)
        if p == "probability" and "magnitude" in extra:
            add(f"{m}_magnitude", p, extra["magnitude"])
        if p == "generation" and "contains" in extra:
            add(f"{m}_contains", p, extra["contains"], probe.group)
        if p == "generation" and "exact" in extra:
            add(f"{m}_exact", p, extra["exact"], probe.group)
        if m == "sentiment" and "score" in extra:
            add("sentiment_score", p, extra["score"])
    for (group, p, _test), queries in tests.items():
        executed = [q for q in queries if q.value is not None]  # a test's queries share its conditions
        groups[(f"ripple_executed:{group}", p)].append(1.0 if executed else 0.0)
        if executed:
            combine = max if queries[0].extra.get("test_condition", "OR") == "OR" else min
            add("ripple", p, combine(q.value for q in executed), group)
            groups[(f"ripple_contains:{group}", p)].append(combine(q.extra.get("contains", 0.0) for q in executed))
            if "exact" in executed[0].extra:
                groups[(f"ripple_exact:{group}", p)].append(combine(q.extra.get("exact", 0.0) for q in executed))
    out = {key: sum(vals) / len(vals) for key, vals in groups.items()}
    out.update({key: max(vals) for key, vals in anyof.items() if vals})
    return out


def harmonic_mean(values: Sequence[float]) -> float:
    """The harmonic mean (0.0 when any value is 0): CounterFact's Score S of ES, PS and NS."""
    if any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


@dataclass
class CaseMeasurement:
    """Everything measured for one edit case at one moment (before or after an edit)."""

    case_id: str
    probes: list[ProbeResult]
    generations: list[Generation]
    fluency: float | None = None          # protocol "generation"
    #: Text the model read before each prompt (``prompt -> context``), for methods that edit by
    #: context (IKE); empty when the prompts were read alone.
    contexts: dict[str, str] = field(default_factory=dict)

    def scores(self) -> dict[tuple[str, str], float]:
        """Mean value per ``(metric, protocol)`` (see :func:`case_scores`), plus ``("fluency", "generation")``."""
        out = case_scores(self.probes)
        if self.fluency is not None:
            out[("fluency", "generation")] = self.fluency
        return out

    def says(self, answer: str) -> bool:
        """Whether the greedy generation from the edit prompt begins with ``answer``.

        This is what a user sees: "does the model now *say* the target?"  (A
        teacher-forced accuracy of 1.0 implies it for the same tokenization.)
        """
        return bool(self.generations) and starts_with_answer(self.generations[0].text, answer)

    def to_dict(self) -> dict:
        """Plain JSON-ready data (scores listed as ``{"metric", "protocol", "value"}`` rows)."""
        data = asdict(self)
        data["scores"] = [
            {"metric": m, "protocol": p, "value": v} for (m, p), v in sorted(self.scores().items())
        ]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> CaseMeasurement:
        """Rebuild a measurement from :meth:`to_dict` output (e.g. a stored pre-edit reference)."""
        return cls(
            case_id=str(data["case_id"]),
            probes=[ProbeResult(**p) for p in data.get("probes", [])],
            generations=[Generation(**g) for g in data.get("generations", [])],
            fluency=data.get("fluency"),
            contexts=dict(data.get("contexts", {})),
        )


def mean_scores(measurements: Sequence[CaseMeasurement]) -> dict[tuple[str, str], float]:
    """Mean over cases of each case's ``(metric, protocol)`` score (a case without the key is skipped)."""
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for m in measurements:
        for key, value in m.scores().items():
            groups[key].append(value)
    return {key: sum(vals) / len(vals) for key, vals in groups.items()}


class _Reference:
    """One case's pre-edit probe results, found by the probe they measured (``None`` stands for "pre-edit")."""

    def __init__(self, case_id: str, probes: Sequence[ProbeResult]) -> None:
        self.case_id = case_id
        self.probes = {(r.metric, r.protocol, r.prompt, r.answer): r for r in probes}

    def of(self, metric: str, protocol: str, probe: Probe) -> ProbeResult:
        """The same probe's result before the edit; a reference without it is an error naming the probe."""
        found = self.probes.get((metric, protocol, probe.prompt, probe.answer))
        if found is None:
            raise ValueError(f"case {self.case_id!r}: the reference has no probe {probe.prompt!r} -> {probe.answer!r}")
        return found


# --- one scoring function per protocol ---------------------------------------------------------------------------

def score_teacher_forced(metric: str, probe: Probe, read: TFResult, before: _Reference | None) -> ProbeResult:
    """A probe under ``teacher_forced``, from the reading of ``probe.prompt + probe.answer``.

    ``reliability``, ``generalization``, ``portability``: the fraction of answer
    tokens that are the argmax (``extra``: the answer's mean NLL and token ids).
    ``locality``: the fraction of answer positions whose argmax is the one
    before the edit (1.0 in the pre-edit measurement, ``before`` None); the
    accuracy against the written answer is kept in ``extra["accuracy"]``.
    """
    if metric != "locality":
        extra = {"nll": read.nll, "answer_ids": read.answer_ids}
        return ProbeResult(metric, "teacher_forced", probe.prompt, probe.answer, read.accuracy, read.predicted, extra, probe.group)
    extra = {"accuracy": read.accuracy, "answer_ids": read.answer_ids}
    if before is None:
        value = 1.0  # before the edit, the model agrees with itself
    else:
        earlier = before.of(metric, "teacher_forced", probe)
        same = sum(a == b for a, b in zip(read.predicted, earlier.predicted))
        value = same / len(read.predicted)
        extra["reference_predicted"] = earlier.predicted
    return ProbeResult(metric, "teacher_forced", probe.prompt, probe.answer, value, read.predicted, extra, probe.group)


def score_probability(metric: str, probe: Probe, case: EditCase, first: TFResult, second: TFResult) -> ProbeResult:
    """A probe under ``probability``: CounterFact's comparison of two answers' mean per-token NLL.

    For reliability and generalization ``first`` reads the target and
    ``second`` the ground truth (ES, PS: the target is now more likely); for
    locality ``first`` reads the probe's true answer and ``second`` the new
    target (NS: the true answer stays above it).  The magnitude is in ``extra``.
    """
    value, extra = probability_test(first, second)
    extra["ground_truth"] = case.ground_truth
    if metric == "locality":
        extra["compared_with"] = case.target
    return ProbeResult(metric, "probability", probe.prompt, probe.answer, value, None, extra, probe.group)


def score_generation(metric: str, probe: Probe, generated: str, before: _Reference | None,
                     condition_answers: Sequence[str] = (), stops: Sequence[str] = ANSWER_STOPS,
                     verdict: Verdict | None = None) -> ProbeResult:
    """A probe under ``generation``, from the model's greedy ``generated`` continuation of the question.

    The answer (:func:`~keditlab.evaluate.answers.cut_answer`, with the stop
    rules ``stops``) is scored by exact match against the probe's answer and
    aliases (``contains`` beside it), or, given the judge's ``verdict`` on it,
    by that verdict (exact match then kept as ``exact``, the verdict with its
    prompt and reply as ``judge``).  ``locality``: whether the answer is the one
    before the edit (1.0 pre-edit, ``before`` None); its ``accuracy`` against
    the dataset's answer is the verdict, or ``contains``.  A RippleEdits query
    with conditions or a test: in the pre-edit measurement its
    ``condition_answers`` (the unedited model's answers to
    ``probe.conditions``, judged by the rules) decide whether it is executed;
    after the edit the reference says so; an unexecuted query has no value.
    """
    said = cut_answer(generated, stops)
    expected = probe.answers()
    extra: dict[str, Any] = {"answer": said, "generated": generated, "expected": list(expected),
                             "contains": float(contains_answer(said, expected))}
    value: float | None = float(exact_match(said, expected))
    if verdict is not None:
        extra["exact"], extra["judge"] = value, verdict.record()
        value = verdict.value
    if metric == "locality":
        extra["accuracy"] = extra["contains"] if verdict is None else verdict.value
        if before is None:
            value = 1.0  # before the edit, the model agrees with itself
        else:
            earlier = before.of(metric, "generation", probe)
            value = float(normalize(said) == normalize(earlier.extra["answer"]))
            extra["reference_answer"] = earlier.extra["answer"]
    elif probe.conditions or probe.test:
        if probe.test:
            extra["test"], extra["test_condition"] = probe.test, probe.test_condition
        if before is None:
            passed = [contains_answer(cut_answer(a, stops), c.answers()) for a, c in zip(condition_answers, probe.conditions)]
            extra["conditions_passed"] = passed
            extra["executed"] = all(passed) if probe.condition_mode == "AND" else any(passed)
        else:
            extra["executed"] = bool(before.of(metric, "generation", probe).extra.get("executed", True))
        if not extra["executed"]:
            value = None
    return ProbeResult(metric, "generation", probe.prompt, probe.answer, value, None, extra, probe.group)


def score_sentiment(protocol: str, probe: Probe, generated: str = "", readings: Sequence[TFResult] = (),
                    stops: Sequence[str] = ANSWER_STOPS) -> ProbeResult:
    """A ConvSent question (kind ``sentiment``, :mod:`keditlab.evaluate.sentiment`): does the answer take the edit's side?

    ``probe.group`` names the sentiment the edit asks for.  Under
    ``generation`` the greedy answer, cut by the stop rules ``stops``, is
    scored by VADER (``extra``: the answer, its compound turned toward the
    wanted sentiment as ``score``);
    under ``probability`` ``readings`` are the question read with each of
    ``probe.answers()`` (the wanted references), then each of ``probe.contrast``.
    """
    if protocol == "generation":
        said = cut_answer(generated, stops)
        value, score = leaning(said, probe.group)
        extra: dict[str, Any] = {"answer": said, "generated": generated, "score": score}
    else:
        count = len(probe.answers())
        value, extra = references_test(readings[:count], readings[count:])
    return ProbeResult("sentiment", protocol, probe.prompt, probe.answer, value, None, extra, probe.group)


def score_neighbourhood_kl(probe: Probe, read: TFResult, before: _Reference | None) -> ProbeResult:
    """A locality probe's neighbourhood KL (:mod:`keditlab.evaluate.divergence`), from the teacher-forced reading.

    Before the edit the value is 0.0 (the model is its own reference) and
    ``extra`` keeps the distribution to compare with: the top token ids and
    their log-probabilities.  After it, ``read.top`` holds the edited
    model's log-probabilities of those same tokens.
    """
    ids, logprobs = read.top
    if before is None:
        return ProbeResult("neighbourhood_kl", "teacher_forced", probe.prompt, probe.answer, 0.0, None,
                           {"top_ids": ids, "top_logprobs": logprobs}, probe.group)
    earlier = before.of("neighbourhood_kl", "teacher_forced", probe).extra
    value = coarse_kl(earlier["top_logprobs"], logprobs)
    return ProbeResult("neighbourhood_kl", "teacher_forced", probe.prompt, probe.answer, value, None,
                       {"top_mass_before": sum(math.exp(v) for v in earlier["top_logprobs"]),
                        "top_mass_after": sum(math.exp(v) for v in logprobs)}, probe.group)


# --- measure: plan the probes, run the model once, score each probe under its protocol ---------------------------

@dataclass(frozen=True)
class _Planned:
    """One probe to score under one protocol, and where its inputs are: indices into the batched work."""

    metric: str
    protocol: str
    probe: Probe
    inputs: tuple[int, ...]   # teacher_forced, probability: pairs; generation: the question, then its conditions


class _Work:
    """The distinct inputs one measurement feeds the model, each computed once, in the order first asked for.

    ``read(prompt)`` is what the model reads for a prompt: its context
    (``context(prompt)``, computed once per prompt; empty by default), then
    the prompt.  ``pair`` registers a teacher-forced ``(prompt, answer)``
    reading and ``question`` a greedy answer; both return the input's index.
    """

    def __init__(self, context: Callable[[str], str] | None) -> None:
        self.context = context or (lambda prompt: "")
        self.framed: dict[str, str] = {}
        self.pairs: dict[tuple[str, str], int] = {}
        self.questions: dict[str, int] = {}
        self.distributions: dict[int, list[int] | None] = {}   # pair -> the tokens whose probabilities are read

    def read(self, prompt: str) -> str:
        if prompt not in self.framed:
            self.framed[prompt] = self.context(prompt)
        return self.framed[prompt] + prompt

    def pair(self, prompt: str, answer: str) -> int:
        return self.pairs.setdefault((self.read(prompt), answer), len(self.pairs))

    def question(self, prompt: str) -> int:
        return self.questions.setdefault(self.read(prompt), len(self.questions))


def _check(settings: EvalSpec, cases: Sequence[EditCase], reference: Sequence[CaseMeasurement] | None) -> None:
    unknown = set(settings.metrics) - set(METRIC_NAMES)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; known: {', '.join(METRIC_NAMES)}")
    unknown = set(settings.protocols) - set(PROTOCOLS)
    if unknown:
        raise ValueError(f"unknown protocols {sorted(unknown)}; known: {', '.join(PROTOCOLS)}")
    if reference is not None and len(reference) != len(cases):
        raise ValueError(f"reference has {len(reference)} measurements for {len(cases)} cases")


def _plan(case: EditCase, settings: EvalSpec, work: _Work, before: _Reference | None) -> list[_Planned]:
    """Every (metric, protocol, probe) of ``case`` the settings ask for, its inputs registered with ``work``.

    A protocol is used for a metric where :data:`~keditlab.vocabulary.METRIC_PROTOCOLS`
    allows it and the case has what it needs (``probability``: a ground truth);
    multi-hop and ripple questions are asked under ``generation`` only, their
    condition queries only of the unedited model; ConvSent's sentiment
    questions under ``generation`` and ``probability`` (their references).
    ``neighbourhood_kl`` reads each locality probe's next-token distribution:
    its top tokens before the edit (``before`` None), those same tokens after.
    """
    pre_edit = before is None
    wanted, protocols = set(settings.metrics), set(settings.protocols)
    edit = Probe("reliability", case.prompt, case.target, case.aliases)
    rephrases = [Probe("rephrase", p, case.target, case.aliases) for p in case.rephrase]
    scored: list[tuple[str, Probe]] = []
    if "reliability" in wanted:
        scored.append(("reliability", edit))
    if "generalization" in wanted:
        scored += [("generalization", p) for p in rephrases]
    if "portability" in wanted:
        scored += [("portability", p) for p in case.portability]
    if "locality" in wanted:
        scored += [("locality", p) for p in case.locality]
    plan: list[_Planned] = []
    for metric, probe in scored:
        if "teacher_forced" in protocols:
            plan.append(_Planned(metric, "teacher_forced", probe, (work.pair(probe.prompt, probe.answer),)))
        if "generation" in protocols:
            plan.append(_Planned(metric, "generation", probe, (work.question(probe.prompt),)))
        if "probability" in protocols and case.ground_truth is not None and "probability" in METRIC_PROTOCOLS[metric]:
            if metric == "locality":  # CounterFact's NS: the true answer stays above the new target
                pairs = (work.pair(probe.prompt, probe.answer), work.pair(probe.prompt, case.target))
            else:
                pairs = (work.pair(probe.prompt, case.target), work.pair(probe.prompt, case.ground_truth))
            plan.append(_Planned(metric, "probability", probe, pairs))
    if "generation" in protocols:
        for probe in case.questions:
            conditions = tuple(work.question(c.prompt) for c in probe.conditions) if pre_edit else ()
            plan.append(_Planned(probe.kind, "generation", probe, (work.question(probe.prompt), *conditions)))
    if "neighbourhood_kl" in wanted and "teacher_forced" in protocols:
        for probe in case.locality:
            index = work.pair(probe.prompt, probe.answer)
            work.distributions[index] = None if pre_edit else \
                before.of("neighbourhood_kl", "teacher_forced", probe).extra["top_ids"]
            plan.append(_Planned("neighbourhood_kl", "teacher_forced", probe, (index,)))
    if "probability" in protocols:   # ConvSent: the wanted references against the others
        for probe in case.questions:
            if probe.kind == "sentiment" and probe.contrast:
                pairs = tuple(work.pair(probe.prompt, answer) for answer in (*probe.answers(), *probe.contrast))
                plan.append(_Planned("sentiment", "probability", probe, pairs))
    return plan


def _generation_prompts(case: EditCase, settings: EvalSpec, text: bool = True) -> list[str]:
    """The prompts generated from: the edit prompt (the text users read, unless ``text`` is False), and it and
    the rephrases when fluency is asked."""
    if "fluency" in settings.metrics:
        return [case.prompt, *case.rephrase]
    return [case.prompt] if text else []


#: The metrics whose generation value compares an answer with the expected one: what a judge judges.
JUDGED_METRICS = ("reliability", "generalization", "portability", "locality", "multihop", "ripple")


def _judge_question(planned: _Planned, answers: Sequence[str], stops: Sequence[str],
                    judge: Judge | None) -> JudgeQuestion | None:
    """What ``judge`` is asked about the planned probe's answer (None: no judge, or not a probe it judges)."""
    if judge is None or planned.protocol != "generation" or planned.metric not in JUDGED_METRICS:
        return None
    probe = planned.probe
    return JudgeQuestion(judge.question_of(probe.prompt), probe.answers(), cut_answer(answers[planned.inputs[0]], stops))


def _judge_for(settings: EvalSpec, plans: Sequence[Sequence[_Planned]], model: Any) -> Judge | None:
    """The judge ``settings.judge`` names, opened here for a caller that passed none; None for the rules, or
    when no answer is to be judged.  (The runner opens and checks it once per run instead.)"""
    if settings.judge.kind == "rule" or not any(p.protocol == "generation" for plan in plans for p in plan):
        return None
    from keditlab.models.sampling import device_of

    return open_judge(settings.judge, device=str(device_of(model)), batch_size=settings.batch_size)


def _score(planned: _Planned, case: EditCase, tf: Sequence[TFResult], answers: Sequence[str],
           before: _Reference | None, stops: Sequence[str] = ANSWER_STOPS, verdict: Verdict | None = None) -> ProbeResult:
    """The planned probe scored by its protocol's function, from the batched teacher-forced readings and answers
    (and, under ``generation``, the stop rules and the judge's verdict on its answer, if judged)."""
    metric, probe, inputs = planned.metric, planned.probe, planned.inputs
    if metric == "neighbourhood_kl":
        return score_neighbourhood_kl(probe, tf[inputs[0]], before)
    if metric == "sentiment":
        return score_sentiment(planned.protocol, probe, answers[inputs[0]] if planned.protocol == "generation" else "",
                               [tf[k] for k in inputs] if planned.protocol == "probability" else (), stops)
    if planned.protocol == "teacher_forced":
        return score_teacher_forced(metric, probe, tf[inputs[0]], before)
    if planned.protocol == "probability":
        return score_probability(metric, probe, case, tf[inputs[0]], tf[inputs[1]])
    return score_generation(metric, probe, answers[inputs[0]], before, [answers[k] for k in inputs[1:]], stops, verdict)


def _progress(total: int, shown: bool, cases: int) -> Any:
    """A tqdm bar over ``total`` sequences that appears only when measuring takes more than two seconds; or a stand-in."""
    if not shown:
        return contextlib.nullcontext(_Silent())
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"measuring {cases} case{'s' if cases != 1 else ''}", unit="seq", delay=2.0, leave=False)


class _Silent:
    """What a progress bar is when progress is off: it counts nothing."""

    def update(self, n: int = 1) -> None:
        pass


def measure(
    model: Any,
    tokenizer: Any,
    cases: Sequence[EditCase],
    settings: EvalSpec = EvalSpec(),
    reference: Sequence[CaseMeasurement] | None = None,
    context: Callable[[str], str] | None = None,
    progress: bool = False,
    text: bool = True,
    judge: Judge | None = None,
) -> list[CaseMeasurement]:
    """Measure every case; one :class:`CaseMeasurement` per case, in order.

    ``reference=None`` means this is the pre-edit measurement (locality is 1.0
    by definition, and RippleEdits' condition queries are asked).  Otherwise
    ``reference[i]`` is case ``i``'s pre-edit measurement, whose locality
    predictions and answers the new ones are compared with.

    ``settings.protocols`` picks the protocols; a protocol is used for a case
    only where it applies (``probability`` needs a ground truth; multi-hop and
    ripple questions are asked under ``generation`` only).

    ``context``, for an edit made by what the model reads rather than by its
    weights (IKE, :attr:`~keditlab.methods.EditHandle.context`): the text placed
    before each prompt, given the prompt.  Every probe and every generation is
    then run on ``context(prompt) + prompt``; results keep the bare prompt, and
    each measurement records the contexts it used.

    ``progress=True`` shows a ``tqdm.auto`` bar (in a terminal or a notebook)
    that advances with each batch of sequences read or generated, once
    measuring has taken more than two seconds; ``False`` (the default) is silent.

    ``text=False`` leaves out the greedy generation from the edit prompt (the
    before/after text) when fluency does not need it: a sequential run's
    intermediate measurements, whose text nobody reads and which raise no
    warnings, skip most of their cost (measuring 998 ZsRE cases on Gemma 3 270M
    took 16 minutes, 12 of them for that generation).

    ``judge``: the opened judge of ``settings.judge``
    (:func:`keditlab.evaluate.judge.open_judge`), to open it once for many
    measurements; None opens it here when ``settings.judge`` names one (a
    judge model is then loaded for this call alone).  Answers are cut by the
    stop rules ``settings.stop``.

    Four steps: plan every probe of every case (:func:`_plan`), run the model
    once over all of them (one batched teacher-forced pass, batched answers,
    batched generations), ask the judge about every distinct answer at once
    (when there is one), then score each probe with its protocol's function:
    :func:`score_teacher_forced`, :func:`score_probability`, :func:`score_generation`.
    """
    _check(settings, cases, reference)
    work = _Work(context)
    befores = [None if reference is None else _Reference(case.case_id, reference[i].probes) for i, case in enumerate(cases)]
    plans = [_plan(case, settings, work, before) for case, before in zip(cases, befores)]
    shown = [_generation_prompts(case, settings, text) for case in cases]
    texts = [work.read(p) for prompts in shown for p in prompts]
    asked = [frame(prompt, settings.context) for prompt in work.questions]
    with _progress(len(work.pairs) + len(asked) + len(texts), progress, len(cases)) as bar:
        tf = teacher_forced(model, tokenizer, list(work.pairs), batch_size=settings.batch_size, done=bar.update,
                            distributions=work.distributions)
        stops = {} if tuple(settings.stop) == ANSWER_STOPS else {"stops": settings.stop}   # the default needs no argument
        answers = generate_answers(model, tokenizer, asked, settings.answer_tokens, settings.batch_size, done=bar.update,
                                   **stops)
        generated = iter(greedy_generate(model, tokenizer, texts, settings.max_new_tokens, settings.batch_size,
                                         done=bar.update))

    judge = judge if judge is not None else _judge_for(settings, plans, model)
    questions = [[_judge_question(planned, answers, settings.stop, judge) for planned in plan] for plan in plans]
    verdicts = judge.judge([q for row in questions for q in row if q is not None]) if judge is not None else {}

    out: list[CaseMeasurement] = []
    for i, (case, plan, before) in enumerate(zip(cases, plans, befores)):
        probes = [_score(planned, case, tf, answers, before, settings.stop, verdicts.get(question))
                  for planned, question in zip(plan, questions[i])]
        gens = [Generation(prompt, next(generated)) for prompt in shown[i]]
        flu = fluency_of([g.text for g in gens]) if "fluency" in settings.metrics else None
        used = {p.prompt: work.framed[p.prompt] for p in probes} | {g.prompt: work.framed[g.prompt] for g in gens}
        out.append(CaseMeasurement(case.case_id, probes, gens, flu, {p: c for p, c in used.items() if c}))
    return out
