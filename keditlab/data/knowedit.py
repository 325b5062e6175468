"""KnowEdit (Zhang et al., 2024, "A Comprehensive Study of Knowledge Editing for LLMs").

KnowEdit reorganises four benchmarks in one request shape: WikiData_recent
(``recent_*.json``), WikiData_counterfact (``*_cf.json``), ZsRE
(``ZsRE-test-all.json``) and WikiBio (``wikibio-*.json``).  A record has
``subject``, ``prompt`` and ``target_new`` (WikiBio: ``concept``, ``text``
and ``labels``), maybe ``ground_truth`` and a rephrase (``rephrase`` or
``rephrase_prompt``), and dicts of named probe lists:

* ``portability``: ``Reasoning``, ``Subject_Aliasing``, ``Logical_Generalization``;
* ``locality``: ``Relation_Specificity``, ``Forgetfulness``;

each item ``{"prompt": ..., "ground_truth": ...}`` where the ground truth is
a text, a list of texts, or a list of lists (one per answer, its aliases).
Every probe keeps its sub-key as its ``group`` and is reported under that
name (``portability:Reasoning``) besides the kind's overall mean.

KnowEdit writes "no ground truth" three ways: the key absent (WikiData_recent
is knowledge insertion), an empty text or list (one WikiData_counterfact
record), or ``"<|endoftext|>"``.  All three are read as no ground truth, as
the KnowEdit evaluation reads them; any other value must be a text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keditlab.data.records import FieldProblem, _case_id, _cases, _texts
from keditlab.vocabulary import EditCase, Probe, shown_field

#: How KnowEdit writes that a record has no ground truth (see the module docstring).
NO_GROUND_TRUTH = (None, "", [], "<|endoftext|>")


def _answers(value: Any) -> tuple[Any, tuple[Any, ...]]:
    """``(answer, aliases)`` from a text, a list of texts or a list of lists of texts (one per answer, its aliases).

    The first text found is the answer, the rest its aliases.  Each is passed
    on as the file holds it (a number or a null stays one, for the case check
    to report); an empty list has no answer at all and is refused here.
    """
    flat: list[Any] = []

    def walk(v: Any) -> None:
        if isinstance(v, list):
            for item in v:
                walk(item)
        else:
            flat.append(v)

    walk(value)
    if not flat:
        raise ValueError("ground_truth: an empty list of answers")
    return flat[0], tuple(dict.fromkeys(flat[1:]))


def _group_items(kind: str, groups: Any) -> list[tuple[Probe, str, str]]:
    """The probes of a record's ``portability`` or ``locality``, each with where its prompt and its answer are.

    Each sub-key (``Reasoning``, ``Relation_Specificity``, ...) holds an item
    ``{prompt, ground_truth}`` or a list of them; an item may hold parallel
    lists of prompts and answers (the reference toolkit's form).
    """
    if groups is None:
        return []
    if not isinstance(groups, dict):
        raise ValueError(f"{kind} is a {type(groups).__name__}, not a mapping of named probe lists")
    found = []
    for name, items in groups.items():
        many = isinstance(items, list)
        for i, item in enumerate(items if many else [items]):
            at = f"{kind}.{name}[{i}]" if many else f"{kind}.{name}"
            prompts, truths = item["prompt"], item["ground_truth"]
            if isinstance(prompts, list):  # the reference toolkit's parallel lists
                if not isinstance(truths, list) or len(truths) != len(prompts):
                    raise ValueError(f"{at} has {len(prompts)} prompts but not as many answers: give one answer per prompt")
                pairs = [(p, t, f"{at}.prompt[{j}]", f"{at}.ground_truth[{j}]") for j, (p, t) in enumerate(zip(prompts, truths))]
            else:
                pairs = [(prompts, truths, f"{at}.prompt", f"{at}.ground_truth")]
            for prompt, truth, prompt_at, truth_at in pairs:
                answer, aliases = _answers(truth)
                found.append((Probe(kind, prompt, answer, aliases, str(name)), prompt_at, truth_at))
    return found


def _groups(kind: str, groups: Any) -> tuple[Probe, ...]:
    return tuple(probe for probe, _, _ in _group_items(kind, groups))


def _first(record: dict[str, Any], *keys: str) -> str:
    """The first of ``keys`` the record has (KnowEdit's WikiBio spells ``prompt`` as ``text``, ...)."""
    return next((key for key in keys if key in record), keys[0])


def knowedit_cases(path: str | Path, limit: int | None = None, offset: int = 0, **window: Any) -> list[EditCase]:
    """Edit cases from a KnowEdit file (WikiData_recent, WikiData_counterfact, ZsRE or WikiBio)."""

    def build(index: int, record: dict[str, Any]) -> EditCase:
        truth = record.get("ground_truth")
        if truth not in NO_GROUND_TRUTH:
            truth = _answers(truth)[0]
            if truth is None:   # a null inside the list would read as "no ground truth"
                raise FieldProblem("ground_truth", "holds null, not a string",
                                   "write the answer the model gives before the edit, or leave ground_truth out")
        else:
            truth = None
        rephrase = record.get(_first(record, "rephrase", "rephrase_prompt"))
        return EditCase(
            prompt=record[_first(record, "prompt", "text")],
            subject=record[_first(record, "subject", "concept")],
            target=_answers(record[_first(record, "target_new", "labels")])[0],
            ground_truth=truth,
            rephrase=_texts(rephrase),
            locality=_groups("locality", record.get("locality")),
            portability=_groups("portability", record.get("portability")),
            case_id=_case_id(record, index),
        )

    def spell(where: tuple[Any, ...], case: EditCase, record: dict[str, Any]) -> str:
        match where:
            case ("prompt",):
                return _first(record, "prompt", "text")
            case ("subject",):
                return _first(record, "subject", "concept")
            case ("target",):
                return _first(record, "target_new", "labels")
            case ("rephrase", k):
                key = _first(record, "rephrase", "rephrase_prompt")
                return key if isinstance(record.get(key), str) else f"{key}[{k}]"
            case (("locality" | "portability") as kind, k, leaf, *_):
                _, prompt_at, truth_at = _group_items(kind, record.get(kind))[k]
                return {"prompt": prompt_at, "answer": truth_at}.get(leaf, f"{truth_at} (an alias)")
        return shown_field(where)

    return _cases(path, limit, offset, build, "KnowEdit's format",
                  "give subject, prompt and target_new (WikiBio: concept, text, labels), as in zjunlp/KnowEdit.",
                  spell=spell, **window)
