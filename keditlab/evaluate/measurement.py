"""From edit cases to metric values, each tagged with the protocol that produced it.

The metrics follow the KnowEdit / CounterFact conventions.  For an
:class:`~keditlab.spec.types.EditCase` (prompt, subject, target, ground truth,
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
queries the unedited model answered.  Under ``probability`` a locality probe
is CounterFact's NS (the true answer stays above the new target), and every
comparison carries its magnitude (EM, PM, NM); :func:`case_scores` lists
every key.

Values from different protocols answer different questions, so they are never
averaged together: :meth:`CaseMeasurement.scores` keys every mean by
``(metric, protocol)``.

Speed: every teacher-forced sequence of every case (including the target and
ground-truth sequences of the probability protocol) goes into one
:func:`~keditlab.evaluate.teacher_forced.teacher_forced` call, so the model
runs ``ceil(n / batch_size)`` forward passes in all; identical
``(prompt, answer)`` pairs are computed once.  All generations are batched in
one :func:`~keditlab.evaluate.generation.greedy_generate` call.  The greedy
generation from the edit prompt is always produced (users want to see the
before/after text); rephrase generations and the fluency value only when
``fluency`` is requested.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from keditlab.evaluate.fluency import fluency as fluency_of
from keditlab.evaluate.answers import contains_answer, cut_answer, exact_match, frame, generate_answers, normalize
from keditlab.evaluate.generation import greedy_generate, starts_with_answer
from keditlab.evaluate.probability import probability_test
from keditlab.evaluate.teacher_forced import TFResult, teacher_forced
from keditlab.spec.types import METRIC_NAMES, PROTOCOLS, EditCase, EvalSpec, Probe


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
    * ``multihop`` (generation): 1.0 when *any* multi-hop question is answered (MQuAKE);
      ``multihop_original`` the same against the answer before the edits;
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
    for (group, p, _test), queries in tests.items():
        executed = [q for q in queries if q.value is not None]  # a test's queries share its conditions
        groups[(f"ripple_executed:{group}", p)].append(1.0 if executed else 0.0)
        if executed:
            combine = max if queries[0].extra.get("test_condition", "OR") == "OR" else min
            add("ripple", p, combine(q.value for q in executed), group)
            groups[(f"ripple_contains:{group}", p)].append(combine(q.extra.get("contains", 0.0) for q in executed))
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


def _locality_key(prompt: str, answer: str) -> tuple[str, str]:
    return (prompt, answer)


def measure(
    model: Any,
    tokenizer: Any,
    cases: Sequence[EditCase],
    settings: EvalSpec = EvalSpec(),
    reference: Sequence[CaseMeasurement] | None = None,
    context: Callable[[str], str] | None = None,
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
    """
    frame_of = context or (lambda prompt: "")
    framed: dict[str, str] = {}

    def read(prompt: str) -> str:
        """What the model reads for ``prompt``: its context (computed once per prompt), then the prompt."""
        if prompt not in framed:
            framed[prompt] = frame_of(prompt)
        return framed[prompt] + prompt

    wanted = set(settings.metrics)
    unknown = wanted - set(METRIC_NAMES)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; known: {', '.join(METRIC_NAMES)}")
    protocols = set(settings.protocols)
    unknown = protocols - set(PROTOCOLS)
    if unknown:
        raise ValueError(f"unknown protocols {sorted(unknown)}; known: {', '.join(PROTOCOLS)}")
    if reference is not None and len(reference) != len(cases):
        raise ValueError(f"reference has {len(reference)} measurements for {len(cases)} cases")

    # 1. Plan: every (metric, protocol, prompt, answer) probe, the teacher-forced pairs and answers they need.
    pair_index: dict[tuple[str, str], int] = {}
    ask_index: dict[str, int] = {}

    def need(prompt: str, answer: str) -> int:
        return pair_index.setdefault((read(prompt), answer), len(pair_index))

    def ask(prompt: str) -> int:
        return ask_index.setdefault(read(prompt), len(ask_index))

    Plan = tuple  # (metric, protocol, probe, ids)
    plans: list[list[Plan]] = []
    for case in cases:
        plan: list[Plan] = []
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
        for metric, probe in scored:
            if "teacher_forced" in protocols:
                plan.append((metric, "teacher_forced", probe, (need(probe.prompt, probe.answer),)))
            if "generation" in protocols:
                plan.append((metric, "generation", probe, (ask(probe.prompt),)))
            if "probability" in protocols and case.ground_truth is not None and metric != "portability":
                if metric == "locality":  # CounterFact's NS: the true answer stays above the new target
                    ids = (need(probe.prompt, probe.answer), need(probe.prompt, case.target))
                else:
                    ids = (need(probe.prompt, case.target), need(probe.prompt, case.ground_truth))
                plan.append((metric, "probability", probe, ids))
        if "generation" in protocols:
            for probe in case.questions:
                conditions = tuple(ask(c.prompt) for c in probe.conditions) if reference is None else ()
                plan.append((probe.kind, "generation", probe, (ask(probe.prompt), *conditions)))
        plans.append(plan)

    # 2. Run: one batched teacher-forced pass over all distinct pairs, batched answers, batched generations.
    pairs = list(pair_index)
    tf: list[TFResult] = teacher_forced(model, tokenizer, pairs, batch_size=settings.batch_size)
    asked = [frame(prompt, settings.context) for prompt in ask_index]
    raw = generate_answers(model, tokenizer, asked, settings.answer_tokens, settings.batch_size)
    answers = [cut_answer(text) for text in raw]

    gen_prompts: list[list[str]] = []
    for case in cases:
        prompts = [case.prompt]
        if "fluency" in wanted:
            prompts += list(case.rephrase)
        gen_prompts.append(prompts)
    flat = [read(p) for prompts in gen_prompts for p in prompts]
    texts = greedy_generate(model, tokenizer, flat, settings.max_new_tokens, settings.batch_size)

    # 3. Assemble.
    out: list[CaseMeasurement] = []
    cursor = 0
    for i, (case, plan) in enumerate(zip(cases, plans)):
        ref: dict[tuple[str, str, str, str], ProbeResult] = {}
        if reference is not None:
            for r in reference[i].probes:
                ref[(r.metric, r.protocol, r.prompt, r.answer)] = r
        probes: list[ProbeResult] = []
        for metric, protocol, probe, ids in plan:
            prompt, answer = probe.prompt, probe.answer
            if protocol == "probability":
                value, extra = probability_test(tf[ids[0]], tf[ids[1]])
                extra["ground_truth"] = case.ground_truth
                if metric == "locality":
                    extra["compared_with"] = case.target
                probes.append(ProbeResult(metric, protocol, prompt, answer, value, None, extra, probe.group))
            elif protocol == "generation":
                said = answers[ids[0]]
                expected = probe.answers()
                extra = {"answer": said, "generated": raw[ids[0]], "expected": list(expected),
                         "contains": float(contains_answer(said, expected))}
                value: float | None = float(exact_match(said, expected))
                before = ref.get((metric, protocol, prompt, answer))
                if metric == "locality":
                    extra["accuracy"] = extra["contains"]
                    if reference is None:
                        value = 1.0  # before the edit, the model agrees with itself
                    else:
                        _require(before, case, prompt, answer)
                        value = float(normalize(said) == normalize(before.extra["answer"]))
                        extra["reference_answer"] = before.extra["answer"]
                elif probe.conditions or probe.test:
                    if probe.test:
                        extra["test"], extra["test_condition"] = probe.test, probe.test_condition
                    if reference is None:
                        passed = [contains_answer(answers[k], c.answers()) for k, c in zip(ids[1:], probe.conditions)]
                        extra["conditions_passed"] = passed
                        extra["executed"] = all(passed) if probe.condition_mode == "AND" else any(passed)
                    else:
                        _require(before, case, prompt, answer)
                        extra["executed"] = bool(before.extra.get("executed", True))
                    if not extra["executed"]:
                        value = None
                probes.append(ProbeResult(metric, protocol, prompt, answer, value, None, extra, probe.group))
            elif metric == "locality":
                first = tf[ids[0]]
                extra = {"accuracy": first.accuracy, "answer_ids": first.answer_ids}
                if reference is None:
                    value = 1.0  # before the edit, the model agrees with itself
                else:
                    before = ref.get((metric, protocol, prompt, answer))
                    _require(before, case, prompt, answer)
                    same = sum(a == b for a, b in zip(first.predicted, before.predicted))
                    value = same / len(first.predicted)
                    extra["reference_predicted"] = before.predicted
                probes.append(ProbeResult(metric, protocol, prompt, answer, value, first.predicted, extra, probe.group))
            else:
                first = tf[ids[0]]
                extra = {"nll": first.nll, "answer_ids": first.answer_ids}
                probes.append(ProbeResult(metric, protocol, prompt, answer, first.accuracy, first.predicted, extra, probe.group))
        n = len(gen_prompts[i])
        gens = [Generation(p, t) for p, t in zip(gen_prompts[i], texts[cursor : cursor + n])]
        cursor += n
        flu = fluency_of([g.text for g in gens]) if "fluency" in wanted else None
        used = {p.prompt: framed[p.prompt] for p in probes} | {g.prompt: framed[g.prompt] for g in gens}
        out.append(CaseMeasurement(case.case_id, probes, gens, flu, {p: c for p, c in used.items() if c}))
    return out


def _require(before: ProbeResult | None, case: EditCase, prompt: str, answer: str) -> None:
    if before is None:
        raise ValueError(f"case {case.case_id!r}: the reference has no probe {prompt!r} -> {answer!r}")
