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
from keditlab.evaluate.generation import greedy_generate, starts_with_answer
from keditlab.evaluate.probability import probability_test
from keditlab.evaluate.teacher_forced import TFResult, teacher_forced
from keditlab.spec.types import METRIC_NAMES, EditCase, EvalSpec

#: The protocols a value can come from.
PROTOCOLS = ("teacher_forced", "probability", "generation")


@dataclass
class ProbeResult:
    """One probe's value under one protocol."""

    metric: str            # reliability | generalization | locality | portability
    protocol: str          # teacher_forced | probability
    prompt: str
    answer: str
    value: float
    predicted: list[int] | None = None   # argmax ids at the answer positions (teacher_forced)
    extra: dict = field(default_factory=dict)


@dataclass
class Generation:
    """A greedy generation: the prompt and its continuation (prompt not included)."""

    prompt: str
    text: str


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
        """Mean value per ``(metric, protocol)`` over this case's probes, plus ``("fluency", "generation")``."""
        groups: dict[tuple[str, str], list[float]] = defaultdict(list)
        for probe in self.probes:
            groups[(probe.metric, probe.protocol)].append(probe.value)
        out = {key: sum(vals) / len(vals) for key, vals in groups.items()}
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
    by definition).  Otherwise ``reference[i]`` is case ``i``'s pre-edit
    measurement, whose locality ``predicted`` ids the new predictions are
    compared with.

    ``context``, for an edit made by what the model reads rather than by its
    weights (IKE, :attr:`~keditlab.methods.EditHandle.context`): the text placed
    before each prompt, given the prompt.  Every probe and every generation is
    then run on ``context(prompt) + prompt``; results keep the bare prompt, and
    each measurement records the contexts it used.
    """
    frame = context or (lambda prompt: "")
    framed: dict[str, str] = {}

    def read(prompt: str) -> str:
        """What the model reads for ``prompt``: its context (computed once per prompt), then the prompt."""
        if prompt not in framed:
            framed[prompt] = frame(prompt)
        return framed[prompt] + prompt

    wanted = set(settings.metrics)
    unknown = wanted - set(METRIC_NAMES)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; known: {', '.join(METRIC_NAMES)}")
    if reference is not None and len(reference) != len(cases):
        raise ValueError(f"reference has {len(reference)} measurements for {len(cases)} cases")

    # 1. Plan: every (metric, protocol, prompt, answer) probe, and the pairs they need.
    pair_index: dict[tuple[str, str], int] = {}

    def need(prompt: str, answer: str) -> int:
        return pair_index.setdefault((read(prompt), answer), len(pair_index))

    plans: list[list[tuple[str, str, str, str, tuple[int, ...]]]] = []
    for case in cases:
        plan = []
        rephrases = list(case.rephrase)
        if "reliability" in wanted:
            plan.append(("reliability", "teacher_forced", case.prompt, case.target, (need(case.prompt, case.target),)))
        if "generalization" in wanted:
            for p in rephrases:
                plan.append(("generalization", "teacher_forced", p, case.target, (need(p, case.target),)))
        if "portability" in wanted:
            for probe in case.portability:
                plan.append(("portability", "teacher_forced", probe.prompt, probe.answer, (need(probe.prompt, probe.answer),)))
        if "locality" in wanted:
            for probe in case.locality:
                plan.append(("locality", "teacher_forced", probe.prompt, probe.answer, (need(probe.prompt, probe.answer),)))
        if case.ground_truth is not None:
            prob_prompts = []
            if "reliability" in wanted:
                prob_prompts.append(("reliability", case.prompt))
            if "generalization" in wanted:
                prob_prompts += [("generalization", p) for p in rephrases]
            for metric, p in prob_prompts:
                ids = (need(p, case.target), need(p, case.ground_truth))
                plan.append((metric, "probability", p, case.target, ids))
        plans.append(plan)

    # 2. Run: one batched teacher-forced pass over all distinct pairs, one batched generation.
    pairs = list(pair_index)
    tf: list[TFResult] = teacher_forced(model, tokenizer, pairs, batch_size=settings.batch_size)

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
        ref_loc: dict[tuple[str, str], list[int]] = {}
        if reference is not None:
            for r in reference[i].probes:
                if r.metric == "locality" and r.protocol == "teacher_forced" and r.predicted is not None:
                    ref_loc[_locality_key(r.prompt, r.answer)] = r.predicted
        probes: list[ProbeResult] = []
        for metric, protocol, prompt, answer, ids in plan:
            first = tf[ids[0]]
            if protocol == "probability":
                value, extra = probability_test(first, tf[ids[1]])
                extra["ground_truth"] = case.ground_truth
                probes.append(ProbeResult(metric, protocol, prompt, answer, value, None, extra))
            elif metric == "locality":
                extra: dict[str, Any] = {"accuracy": first.accuracy, "answer_ids": first.answer_ids}
                if reference is None:
                    value = 1.0  # before the edit, the model agrees with itself
                else:
                    key = _locality_key(prompt, answer)
                    if key not in ref_loc:
                        raise ValueError(
                            f"case {case.case_id!r}: the reference has no locality probe {prompt!r} -> {answer!r}"
                        )
                    before = ref_loc[key]
                    same = sum(a == b for a, b in zip(first.predicted, before))
                    value = same / len(first.predicted)
                    extra["reference_predicted"] = before
                probes.append(ProbeResult(metric, protocol, prompt, answer, value, first.predicted, extra))
            else:
                extra = {"nll": first.nll, "answer_ids": first.answer_ids}
                probes.append(ProbeResult(metric, protocol, prompt, answer, first.accuracy, first.predicted, extra))
        n = len(gen_prompts[i])
        gens = [Generation(p, t) for p, t in zip(gen_prompts[i], texts[cursor : cursor + n])]
        cursor += n
        flu = fluency_of([g.text for g in gens]) if "fluency" in wanted else None
        used = {p.prompt: framed[p.prompt] for p in probes} | {g.prompt: framed[g.prompt] for g in gens}
        out.append(CaseMeasurement(case.case_id, probes, gens, flu, {p: c for p, c in used.items() if c}))
    return out
