"""RippleEdits (Cohen et al., TACL 2024, "Evaluating the Ripple Effects of Knowledge Editing").

A record is one edit (``edit.prompt`` is the new fact as a sentence,
``"The name of the country of citizenship of Leonardo DiCaprio is Syria."``,
and ``edit.original_fact`` the old one, absent in the ``recent`` split) and,
per criterion, a list of tests::

    {"test_queries": [{"prompt": ..., "answers": [{"value": ..., "aliases": [...]}], "target_ids": [...], ...}],
     "test_condition": "OR" | "AND",
     "condition_queries": [...same shape...]}

The criteria are ``Logical_Generalization``, ``Compositionality_I``,
``Compositionality_II``, ``Subject_Aliasing`` (the edit should ripple into
these) and ``Relation_Specificity``, ``Forgetfulness`` (what should hold
still).  A test is *executed* only when the unedited model answers its
condition queries (facts the test builds on); accuracy per criterion is over
executed tests, and the executed fraction is reported beside it.  (Each
test counts once: with ``test_condition: OR`` it passes when any of its
queries is answered, with ``AND`` when all are, as in the paper.)

Each test query becomes a ``ripple`` probe whose ``group`` is its criterion,
its conditions the test's condition queries.  The edit's target is the label
of ``edit.target_id`` among the queries' answers (the file holds ids, not
labels, for the edit itself); the prompt is the edit sentence without it;
the subject is ``edit.subject`` when the record has one, else the words
after the prompt's last `` of `` (RippleEdits' templates read "The name of
the <relation> of <subject> is").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keditlab.data.records import _case_id, _cases
from keditlab.vocabulary import EditCase, Probe, shown_field

CRITERIA = ("Logical_Generalization", "Compositionality_I", "Compositionality_II", "Subject_Aliasing",
            "Relation_Specificity", "Forgetfulness")
#: Spellings found in published copies of the files.
_SPELLINGS = {"Relation_Specifity": "Relation_Specificity"}


def _query_probes(query: dict[str, Any], group: str, conditions: tuple[Probe, ...] = (), mode: str = "AND",
                  test: str = "", test_condition: str = "OR") -> list[Probe]:
    prompt = query.get("prompt") or query.get("phrase")
    answers = query["answers"]
    if not prompt or not answers:
        raise ValueError("a query without prompt or answers")
    values = [a["value"] for a in answers]   # texts, passed on as they are: the case check reports any other value
    aliases = [x for a in answers for x in a.get("aliases") or ()]
    return [Probe("ripple", prompt, values[0], tuple(dict.fromkeys(values[1:] + aliases)), group, conditions, mode,
                  test, test_condition)]


def _label(record: dict[str, Any], target_id: str) -> str | None:
    """The label of entity ``target_id`` as some query of the record answers it."""
    for key in CRITERIA + tuple(_SPELLINGS):
        for test in record.get(key) or ():
            for query in test.get("test_queries", []) + test.get("condition_queries", []):
                for answer, tid in zip(query.get("answers") or (), query.get("target_ids") or ()):
                    if tid == target_id:
                        return answer["value"]
    return None


def _split(sentence: str, label: str) -> str:
    """The prompt of a fact sentence ending in ``label`` (and maybe a full stop)."""
    if not isinstance(sentence, str):
        raise ValueError(f"edit.prompt is a {type(sentence).__name__}, not the sentence of the new fact")
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"the edit's target {label!r} is not a text")
    text = sentence.strip().removesuffix(".").rstrip()
    if not text.endswith(label):
        raise ValueError(f"edit.prompt {sentence!r} does not end with its target {label!r}")
    return text[: -len(label)].rstrip()


def rippleedits_cases(path: str | Path, limit: int | None = None, offset: int = 0, **window: Any) -> list[EditCase]:
    """Edit cases from a RippleEdits file: the edit and every criterion's test queries as ``ripple`` probes."""

    def build(index: int, record: dict[str, Any]) -> EditCase:
        edit = record["edit"]
        target = edit.get("target") or _label(record, edit["target_id"])
        if target is None:
            raise ValueError(f"edit.target_id {edit['target_id']!r}: no query of the record names its label")
        prompt = _split(edit["prompt"], target)
        truth = None
        original = edit.get("original_fact")
        if original:
            truth = original.get("target") or _label(record, original["target_id"])
            if truth is None and original.get("prompt", "").startswith(prompt):
                truth = original["prompt"][len(prompt):].strip().removesuffix(".").strip() or None
        subject = edit.get("subject") or prompt.rsplit(" of ", 1)[-1].removesuffix(" is").strip()
        if subject not in prompt:
            raise ValueError(f"edit.subject: cannot find the subject in {prompt!r}; add edit.subject")
        probes: list[Probe] = []
        for key, items in record.items():
            group = _SPELLINGS.get(key, key)
            if group not in CRITERIA:
                continue
            for number, test in enumerate(items or ()):
                conditions = tuple(p for q in test.get("condition_queries") or () for p in _query_probes(q, group))
                combine = str(test.get("test_condition") or "OR").upper()
                if combine not in ("OR", "AND"):
                    raise ValueError(f"{key}[{number}].test_condition is {test['test_condition']!r}; expected OR or AND")
                for query in test["test_queries"]:
                    probes += _query_probes(query, group, conditions, test=f"{group}/{number}", test_condition=combine)
        return EditCase(prompt=prompt, subject=subject, target=target, ground_truth=truth,
                        questions=tuple(probes), case_id=_case_id(record, index))

    return _cases(path, limit, offset, build, "RippleEdits' format",
                  "give edit {prompt, target_id} and criteria of {test_queries, condition_queries}, as in edenbiran/RippleEdits.",
                  spell=_field, **window)


def _field(where: tuple[Any, ...], case: EditCase, record: dict[str, Any]) -> str:
    """Where a case field is in a RippleEdits record: the edit's fields, or a query of a criterion's test."""
    edit = record.get("edit") or {}
    match where:
        case ("prompt",):
            return "edit.prompt"
        case ("subject",):
            return "edit.subject" if "subject" in edit else "the subject read from edit.prompt"
        case ("target",):
            return "edit.target" if "target" in edit else "the label of edit.target_id"
        case ("ground_truth",):
            return "edit.original_fact"
        case ("questions", k, *rest):
            probe = case.questions[k]
            # the probes of one test are its queries, in order: this one is the how-manieth of its test's
            number = sum(1 for p in case.questions[:k] if p.test == probe.test)
            at = f"{probe.test.replace('/', '[')}].test_queries[{number}]"
            match rest:
                case ["conditions", c, *leaf]:
                    at, rest = f"{probe.test.replace('/', '[')}].condition_queries[{c}]", leaf
            return at + {"prompt": ".prompt", "answer": ".answers[0].value"}.get(rest[0] if rest else "", ".answers (an alias)")
    return shown_field(where)
