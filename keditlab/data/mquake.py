"""MQuAKE (Zhong et al., EMNLP 2023): several edits per case, judged by multi-hop questions.

A record rewrites one to four facts (``requested_rewrite``, each in
CounterFact's shape plus a single-hop ``question``) and asks three
paraphrases of one multi-hop question (``questions``) whose answer changes
because of the edits: ``new_answer`` (with ``new_answer_alias``) after them,
``answer`` (``answer_alias``) before.  The paper's multi-hop accuracy counts a
case as correct when *any* of its questions is answered, under generation.

Each record becomes one :class:`~keditlab.vocabulary.EditCase`: the first
rewrite is the case's edit, the others are its ``joint`` edits (applied with
it); each rewrite's single-hop question is its rephrase; the multi-hop
questions are ``multihop`` probes answered with the new answer and aliases,
and the old answer is kept as the probe group's ``original`` probes so the
table can show both ("did the answer move, and where to").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keditlab.data.records import _case_id, _cases, _fill
from keditlab.vocabulary import EditCase, Probe, shown_field


def _rewrite(rewrite: dict[str, Any], case_id: str, at: str) -> EditCase:
    """One rewrite (``requested_rewrite[k]``, found at ``at``) as an edit; its single-hop question is its rephrase."""
    question = rewrite.get("question")
    return EditCase(
        prompt=_fill(rewrite["prompt"], rewrite["subject"], f"{at}.prompt"),
        subject=rewrite["subject"],
        target=rewrite["target_new"]["str"],
        ground_truth=rewrite["target_true"]["str"],
        rephrase=(question,) if question is not None else (),
        case_id=case_id,
    )


def _list(record: dict[str, Any], key: str) -> list[Any]:
    """``record[key]``, which must be a list (a text would be read letter by letter); absent or null: empty."""
    value = record.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{key} is a {type(value).__name__}, not a list")
    return value


def mquake_cases(path: str | Path, limit: int | None = None, offset: int = 0, **window: Any) -> list[EditCase]:
    """Edit cases from a MQuAKE file: the first rewrite, the others as joint edits, and the multi-hop questions."""

    def build(index: int, record: dict[str, Any]) -> EditCase:
        case_id = _case_id(record, index)
        rewrites = record["requested_rewrite"]
        if not isinstance(rewrites, list) or not rewrites:
            raise ValueError("requested_rewrite: a non-empty list of rewrites")
        edits = [_rewrite(r, f"{case_id}.{k}" if k else case_id, f"requested_rewrite[{k}]") for k, r in enumerate(rewrites)]
        questions = record["questions"]
        if not isinstance(questions, list):
            raise ValueError(f"questions is a {type(questions).__name__}, not a list of questions")
        new, old = tuple(_list(record, "new_answer_alias")), tuple(_list(record, "answer_alias"))
        probes = tuple(Probe("multihop", q, record["new_answer"], new, "new") for q in questions) + tuple(
            Probe("multihop", q, record["answer"], old, "original") for q in questions)
        first = edits[0]
        return EditCase(first.prompt, first.subject, first.target, first.ground_truth, first.rephrase,
                        case_id=case_id, questions=probes, joint=tuple(edits[1:]))

    return _cases(path, limit, offset, build, "MQuAKE's format",
                  "give requested_rewrite (a list), questions, new_answer and answer, as in princeton-nlp/MQuAKE.",
                  spell=_field, **window)


#: Where each field of an edit is in a rewrite of ``requested_rewrite``.
_REWRITE_FIELDS = {"prompt": "prompt", "subject": "subject", "target": "target_new.str",
                   "ground_truth": "target_true.str", "rephrase": "question"}


def _field(where: tuple[Any, ...], case: EditCase, record: dict[str, Any]) -> str:
    """Where a case field is in a MQuAKE record (the case's own edit is ``requested_rewrite[0]``, joint edit k is k + 1)."""
    match where:
        case ("joint", k, name, *_) if name in _REWRITE_FIELDS:
            return f"requested_rewrite[{k + 1}].{_REWRITE_FIELDS[name]}"
        case (name, *_) if name in _REWRITE_FIELDS:
            return f"requested_rewrite[0].{_REWRITE_FIELDS[name]}"
        case ("questions", k, leaf, *rest):
            asked = len(record["questions"])   # the new answer's probes first, then the original answer's
            new = k < asked
            match leaf, rest:
                case "prompt", _:
                    return f"questions[{k % asked}]"
                case "answer", _:
                    return "new_answer" if new else "answer"
                case "aliases", [j]:
                    return f"{'new_answer_alias' if new else 'answer_alias'}[{j}]"
    return shown_field(where)
