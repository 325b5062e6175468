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

from keditlab.data.records import _cases
from keditlab.vocabulary import EditCase, Probe


def _rewrite(rewrite: dict[str, Any], case_id: str) -> EditCase:
    question = rewrite.get("question")
    return EditCase(
        prompt=rewrite["prompt"].format(rewrite["subject"]),
        subject=rewrite["subject"],
        target=rewrite["target_new"]["str"],
        ground_truth=rewrite["target_true"]["str"],
        rephrase=(question,) if question else (),
        case_id=case_id,
    )


def mquake_cases(path: str | Path, limit: int | None = None, offset: int = 0, **window: Any) -> list[EditCase]:
    """Edit cases from a MQuAKE file: the first rewrite, the others as joint edits, and the multi-hop questions."""

    def build(index: int, record: dict[str, Any]) -> EditCase:
        case_id = str(record.get("case_id", index))
        rewrites = record["requested_rewrite"]
        if not isinstance(rewrites, list) or not rewrites:
            raise ValueError("requested_rewrite: a non-empty list of rewrites")
        edits = [_rewrite(r, f"{case_id}.{k}" if k else case_id) for k, r in enumerate(rewrites)]
        new = tuple(str(a) for a in record.get("new_answer_alias") or ())
        old = tuple(str(a) for a in record.get("answer_alias") or ())
        questions = tuple(Probe("multihop", q, str(record["new_answer"]), new, "new") for q in record["questions"]) + tuple(
            Probe("multihop", q, str(record["answer"]), old, "original") for q in record["questions"])
        first = edits[0]
        return EditCase(first.prompt, first.subject, first.target, first.ground_truth, first.rephrase,
                        case_id=case_id, questions=questions, joint=tuple(edits[1:]))

    return _cases(path, limit, offset, build, "MQuAKE's format",
                  "give requested_rewrite (a list), questions, new_answer and answer, as in princeton-nlp/MQuAKE.", **window)
