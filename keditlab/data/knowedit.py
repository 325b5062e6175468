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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keditlab.data.records import _cases
from keditlab.vocabulary import EditCase, Probe


def _answers(value: Any) -> tuple[str, tuple[str, ...]]:
    """``(answer, aliases)`` from a text, a list of texts or a list of lists of texts."""
    flat: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, list):
            for item in v:
                walk(item)
        elif v is not None and str(v).strip():
            flat.append(str(v))

    walk(value)
    if not flat:
        raise ValueError("ground_truth: an empty answer")
    return flat[0], tuple(dict.fromkeys(flat[1:]))


def _groups(kind: str, groups: Any) -> tuple[Probe, ...]:
    probes = []
    for name, items in (groups or {}).items():
        for item in items if isinstance(items, list) else [items]:
            prompts = item["prompt"]
            truths = item["ground_truth"]
            if isinstance(prompts, list):  # the reference toolkit's parallel lists
                pairs = list(zip(prompts, truths))
            else:
                pairs = [(prompts, truths)]
            for prompt, truth in pairs:
                answer, aliases = _answers(truth)
                probes.append(Probe(kind, str(prompt), answer, aliases, str(name)))
    return tuple(probes)


def knowedit_cases(path: str | Path, limit: int | None = None, offset: int = 0, **window: Any) -> list[EditCase]:
    """Edit cases from a KnowEdit file (WikiData_recent, WikiData_counterfact, ZsRE or WikiBio)."""

    def build(index: int, record: dict[str, Any]) -> EditCase:
        prompt = record["prompt"] if "prompt" in record else record["text"]
        target = record["target_new"] if "target_new" in record else record["labels"]
        subject = record["subject"] if "subject" in record else record["concept"]
        truth = record.get("ground_truth")
        rephrase = record.get("rephrase") or record.get("rephrase_prompt") or []
        return EditCase(
            prompt=str(prompt), subject=str(subject), target=_answers(target)[0],
            ground_truth=None if truth in (None, "", []) or truth == "<|endoftext|>" else _answers(truth)[0],
            rephrase=tuple([rephrase] if isinstance(rephrase, str) else rephrase),
            locality=_groups("locality", record.get("locality")),
            portability=_groups("portability", record.get("portability")),
            case_id=str(record.get("case_id", index)),
        )

    return _cases(path, limit, offset, build, "KnowEdit's format",
                  "give subject, prompt and target_new (WikiBio: concept, text, labels), as in zjunlp/KnowEdit.", **window)
