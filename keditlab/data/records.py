"""Readers from benchmark record formats to edit cases (see :mod:`keditlab.data`), and what they share.

Every reader builds an :class:`~keditlab.vocabulary.EditCase` from each
selected record and hands it to :func:`_cases`, which holds every case to the
rules a spec's inline edits follow (:func:`keditlab.vocabulary.case_problems`:
non-empty texts, the subject inside the prompt, ...) and keeps case ids unique
among the records read.  A record that breaks a rule is a
:class:`BadRecordError` naming the file, the record's index, the field as the
file spells it (``record 17: target_new is an empty string``) and a fix; with
``on_bad_record="skip"`` it is left out and its message listed instead.

So the readers convert nothing on the quiet: a value is passed on as the
record holds it, and a number, a list or a null where a text belongs is
reported (``str(42)`` would edit toward the text "42", ``str(None)`` toward
"None").  The one conversion kept is a whole-number ``case_id``, written in
digits, as every published CounterFact and MQuAKE file numbers its cases.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from keditlab.vocabulary import EditCase, Probe, case_problems, shown_field

#: Where a case field is in a record, as the record's format spells it:
#: ``spell(where, case, record)`` for the case's field path ``where`` (a
#: :class:`~keditlab.vocabulary.CaseProblem`'s ``where``, e.g. ``("target",)``).
Spelling = Callable[[tuple[Any, ...], EditCase, dict[str, Any]], str]

#: The hint added to a message when the reader was told to stop at a bad record.
SKIP_HINT = " (or set `on_bad_record: skip` to leave such records out)"


class RecordFormatError(ValueError):
    """A benchmark file does not have the format its reader expects."""


class RecordProblem(NamedTuple):
    """One thing wrong with a record: its field as the file spells it, what is wrong, the fix."""

    field: str
    problem: str
    fix: str


class BadRecordError(RecordFormatError):
    """A record read as its format says, whose case breaks a rule of edit cases, or repeats a case id.

    ``path`` and ``index`` say which record; ``problems`` what is wrong with it
    (:class:`RecordProblem`, fields as the file spells them).  The message is
    one line: ``FILE: record 17: target_new is an empty string. Fix: ...``.
    """

    def __init__(self, path: str | Path, index: int, problems: list[RecordProblem], hint: str = "") -> None:
        self.path, self.index, self.problems = Path(path), index, tuple(problems)
        super().__init__(f"{path}: record {index}: {self.problem}. Fix: {self.fix}{hint}")

    @property
    def problem(self) -> str:
        """What is wrong, every problem of the record: ``target_new is an empty string; loc_ans is null, ...``."""
        return "; ".join(f"{p.field} {p.problem}" for p in self.problems)

    @property
    def fix(self) -> str:
        """How to fix it: each distinct fix once, in the order of the problems."""
        return "; ".join(dict.fromkeys(p.fix for p in self.problems))


class FieldProblem(ValueError):
    """Raised by a reader for a value its case cannot show the check: the record is bad, named like the check's problems.

    The case check sees only the built case, where ``ground_truth=None`` means
    "no ground truth".  So a null *inside* a list of answers (ZsRE's
    ``answers: [null]``, KnowEdit's ``ground_truth: [[null]]``) must be refused
    by the reader, or it would pass as a record without a ground truth.
    """

    def __init__(self, field: str, problem: str, fix: str) -> None:
        super().__init__(f"{field} {problem}")
        self.record_problem = RecordProblem(field, problem, fix)


def _load_list(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"benchmark file {path} does not exist")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise RecordFormatError(f"{path}: expected a JSON list of records, found {type(data).__name__}")
    return data


def _case_id(record: dict[str, Any], index: int) -> Any:
    """The record's ``case_id`` as a text: a whole number in digits; absent, the record's position.

    Any other value (null, a list, ...) is passed on as it is, for the case
    check to report.
    """
    value = record.get("case_id", index)
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _texts(value: Any) -> tuple[Any, ...]:
    """A field that holds one text or a list of them (a rephrase), as a tuple; absent (None): empty.

    Nothing is dropped: an empty text stays, for the case check to report.
    """
    if value is None:
        return ()
    return tuple(value) if isinstance(value, list) else (value,)


def _plain_field(where: tuple[Any, ...], case: EditCase, record: dict[str, Any]) -> str:
    """The spelling of a format whose records use the case's own field names."""
    return shown_field(where)


def select(count: int, limit: int | None = None, offset: int = 0, sample: dict[str, int] | None = None) -> list[int]:
    """The record indices a spec's window names: ``offset .. offset+limit``, then ``sample`` of them.

    ``sample`` is ``{"n": N, "seed": S}``: N indices drawn without replacement
    from the window by ``random.Random(S)`` (all of them when the window is
    smaller), kept in file order, so the same seed always gives the same cases.
    """
    end = None if limit is None else offset + limit
    window = list(range(count))[offset:end]
    if sample is not None:
        n = min(int(sample["n"]), len(window))
        window = sorted(random.Random(int(sample.get("seed", 0))).sample(window, n))
    return window


def _cases(path: str | Path, limit: int | None, offset: int, build: Callable[[int, dict[str, Any]], EditCase],
           form: str, fix: str, sample: dict[str, int] | None = None, on_bad_record: str = "stop",
           skipped: list[str] | None = None, spell: Spelling = _plain_field,
           records: list[Any] | None = None) -> list[EditCase]:
    """``build(index, record)`` for the selected records (:func:`select`), each case checked; a bad record is named.

    ``records``: the file's records when the reader has read them already (a
    file that is not a plain list, such as KnowEdit's Sanitation); by default
    the file is read as a JSON list.

    A record is bad when ``build`` cannot read it (a field missing or of the
    wrong shape: the message says it is not in ``form`` and gives ``fix``),
    when its case breaks a rule of :func:`~keditlab.vocabulary.case_problems`
    (named with ``spell``, the format's spelling of the case's fields), or
    when its case id is the id of a record read before it (case ids key the
    run's per-case results).  ``on_bad_record="stop"`` raises the first as a
    :class:`RecordFormatError`; ``"skip"`` leaves each bad record out and
    appends its message to ``skipped`` (when given).
    """
    if on_bad_record not in ("stop", "skip"):
        raise ValueError(f"on_bad_record must be 'stop' or 'skip', got {on_bad_record!r}")
    hint = SKIP_HINT if on_bad_record == "stop" else ""
    records = _load_list(path) if records is None else records
    cases: list[EditCase] = []
    first_with_id: dict[str, int] = {}   # case id -> the index of the record that has it
    for index in select(len(records), limit, offset, sample):
        record = records[index]
        error: RecordFormatError
        try:
            if not isinstance(record, dict):
                raise TypeError(f"a {type(record).__name__} where a JSON object was expected")
            case = build(index, record)
        except FieldProblem as exc:  # a value the reader refused itself (see FieldProblem)
            error = BadRecordError(path, index, [exc.record_problem], hint)
        except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
            error = RecordFormatError(
                f"{path}: record {index} is not in {form} (missing or malformed {exc}). Fix: {fix}{hint}")
        else:
            # one record field can stand for several case fields (CounterFact's target_true.str is the ground truth
            # and every neighbour's answer): each problem is said once, with the fix it came with first
            said: dict[tuple[str, str], RecordProblem] = {}
            for found in case_problems(case):
                field = spell(found.where, case, record)
                said.setdefault((field, found.problem), RecordProblem(field, found.problem, found.fix))
            problems = list(said.values())
            if not problems and case.case_id in first_with_id:
                problems = [RecordProblem(spell(("case_id",), case, record),
                                          f"'{case.case_id}' is the case id of record {first_with_id[case.case_id]} too; "
                                          "case ids name the run's per-case results, so they must differ",
                                          "give each record its own case_id, or select a window that holds one of the two")]
            if not problems:
                first_with_id[case.case_id] = index
                cases.append(case)
                continue
            error = BadRecordError(path, index, problems, hint)
        if on_bad_record == "stop":
            raise error from None
        if skipped is not None:
            skipped.append(str(error))
    return cases


def counterfact_cases(path: str | Path, limit: int | None = None, offset: int = 0, neighbours: int | None = None,
                      **window: Any) -> list[EditCase]:
    """Edit cases from a CounterFact file, in ROME's format or the reference toolkit's flat one.

    ROME's format (``requested_rewrite``): the edit prompt is ``requested_rewrite.prompt`` with the subject filled in
    at its ``{}``, the target ``target_new.str`` and the ground truth ``target_true.str``.
    Rephrases are the ``paraphrase_prompts``; locality probes are the first
    ``neighbours`` (default: all) ``neighborhood_prompts``, answered with the
    true object, as in the paper.  ``case_id`` is the record's ``case_id``.

    The flat format of the reference toolkit's CounterFact split
    (``prompt``, ``subject``, ``target_new``, ``ground_truth``,
    ``rephrase_prompt``, ``locality_prompt``, ``locality_ground_truth``) is
    recognised per record and read into the same fields.  ``window``:
    ``sample``, ``on_bad_record`` and ``skipped`` of :func:`_cases`.
    """

    def build(index: int, record: dict[str, Any]) -> EditCase:
        if _is_flat(record):
            return _counterfact_flat(index, record)
        rewrite = record["requested_rewrite"]
        truth = rewrite["target_true"]["str"]
        neighbourhood = _texts(record.get("neighborhood_prompts"))[:neighbours]
        return EditCase(
            prompt=_fill(rewrite["prompt"], rewrite["subject"], "requested_rewrite.prompt"),
            subject=rewrite["subject"],
            target=rewrite["target_new"]["str"],
            ground_truth=truth,
            rephrase=_texts(record.get("paraphrase_prompts")),
            locality=tuple(Probe("locality", p, truth) for p in neighbourhood),
            case_id=_case_id(record, index),
        )

    def spell(where: tuple[Any, ...], case: EditCase, record: dict[str, Any]) -> str:
        if _is_flat(record):
            return _flat_field(where, case, record)
        match where:
            case ("prompt",):
                return "requested_rewrite.prompt"
            case ("subject",):
                return "requested_rewrite.subject"
            case ("target",):
                return "requested_rewrite.target_new.str"
            case ("ground_truth",) | ("locality", _, "answer"):
                return "requested_rewrite.target_true.str"
            case ("rephrase", k):
                return f"paraphrase_prompts[{k}]"
            case ("locality", k, "prompt"):
                return f"neighborhood_prompts[{k}]"
        return shown_field(where)

    return _cases(path, limit, offset, build, "CounterFact's ROME or flat format",
                  "give requested_rewrite (ROME) or prompt, subject, target_new (flat), or read the file as another dataset.",
                  spell=spell, **window)


def _is_flat(record: dict[str, Any]) -> bool:
    """A CounterFact record in the reference toolkit's flat format rather than ROME's."""
    return "requested_rewrite" not in record and "target_new" in record


def _fill(template: Any, subject: Any, field: str) -> Any:
    """A ROME-style prompt template with the subject written at its ``{}`` (``"{} is in"`` → ``"Paris is in"``).

    A template that is not a text, or is empty, is returned as it is, for the
    case check to name; one with no ``{}`` cannot take the subject.
    """
    if not isinstance(template, str) or not template.strip():
        return template
    if "{}" not in template:
        raise ValueError(f"{field} {template!r} has no {{}} where the subject goes")
    return template.format(subject)


def _counterfact_flat(index: int, record: dict[str, Any]) -> EditCase:
    """One record of the reference toolkit's flat CounterFact split."""
    locality = ()
    if record.get("locality_prompt") is not None:
        locality = (Probe("locality", record["locality_prompt"], record["locality_ground_truth"]),)
    return EditCase(
        prompt=record["prompt"], subject=record["subject"], target=record["target_new"],
        ground_truth=record.get("ground_truth"),
        rephrase=_texts(record.get("rephrase_prompt")),
        locality=locality, case_id=_case_id(record, index),
    )


def _flat_field(where: tuple[Any, ...], case: EditCase, record: dict[str, Any]) -> str:
    """Where a case field is in a flat record (CounterFact's flat split and the reference toolkit's requests)."""
    match where:
        case ("target",):
            return "target_new"
        case ("rephrase", k):
            return "rephrase_prompt" if isinstance(record.get("rephrase_prompt"), str) else f"rephrase_prompt[{k}]"
        case (("locality" | "portability") as kind, k, ("prompt" | "answer") as leaf) if isinstance(record.get(kind), dict):
            prompt_at, answer_at = _named_items(kind, record[kind])[k][2:]
            return prompt_at if leaf == "prompt" else answer_at
        case ("locality", 0, "prompt"):
            return "locality_prompt"
        case ("locality", 0, "answer"):
            return "locality_ground_truth"
    return shown_field(where)


def easyedit_cases(path: str | Path, limit: int | None = None, offset: int = 0, **window: Any) -> list[EditCase]:
    """Edit cases from records in the reference toolkit's request format.

    ``locality`` and ``portability`` are dicts of named probes, each
    ``{"prompt": ..., "ground_truth": ...}`` (parallel lists of prompts and
    answers are accepted too; see :func:`_named_items`).  A ``case_id`` field
    is used when present, else the index.
    """

    def build(index: int, record: dict[str, Any]) -> EditCase:
        return EditCase(
            prompt=record["prompt"],
            subject=record["subject"],
            target=record["target_new"],
            ground_truth=record.get("ground_truth"),
            rephrase=_texts(record.get("rephrase_prompt")),
            locality=_named_probes("locality", record.get("locality")),
            portability=_named_probes("portability", record.get("portability")),
            case_id=_case_id(record, index),
        )

    return _cases(path, limit, offset, build, "the request format",
                  "give prompt, subject and target_new, or use the counterfact reader.", spell=_flat_field, **window)


def zsre_cases(path: str | Path, limit: int | None = None, offset: int = 0, **window: Any) -> list[EditCase]:
    """Edit cases from a ZsRE file in MEND's format (Mitchell et al., 2022; De Cao et al., 2021).

    Each record is a question-answering edit: the question ``src`` is the edit
    prompt, ``alt`` the new answer, ``answers[0]`` the ground truth and
    ``rephrase`` a paraphrased question (generalization).  Locality is the
    unrelated Natural Questions probe ``loc`` (its ``"nq question: "`` label
    kept, as in the published evaluations) answered with ``loc_ans``.  Where
    the record carries ``portability`` (the ``..._portability_gpt4`` file of
    ``shared/datasets/zsre``), its ``New Question``/``New Answer`` pair is a
    portability probe.
    """

    def build(index: int, record: dict[str, Any]) -> EditCase:
        answers = record.get("answers")
        if answers is not None and not isinstance(answers, list):
            raise FieldProblem("answers", f"is {'a text' if isinstance(answers, str) else 'not a list'}, not a list of answers",
                               'write it as a list, e.g. ["Paris"] (its first answer is the ground truth)')
        if answers and answers[0] is None:   # read as "no ground truth", it would pass unseen
            raise FieldProblem("answers[0]", "is null, not a string",
                               "write the answer the model gives before the edit, or make answers an empty list")
        port = record.get("portability") or {}
        if not isinstance(port, dict):
            raise ValueError(f"portability is a {type(port).__name__}, not a mapping with 'New Question' and 'New Answer'")
        portability = ()
        if "New Question" in port or "New Answer" in port:
            portability = (Probe("portability", port["New Question"], port["New Answer"]),)
        return EditCase(
            prompt=record["src"],
            subject=record["subject"],
            target=record["alt"],
            ground_truth=answers[0] if answers else None,
            rephrase=_texts(record.get("rephrase")),
            locality=(Probe("locality", record["loc"], record["loc_ans"]),) if record.get("loc") is not None else (),
            portability=portability,
            case_id=_case_id(record, index),
        )

    def spell(where: tuple[Any, ...], case: EditCase, record: dict[str, Any]) -> str:
        match where:
            case ("prompt",):
                return "src"
            case ("target",):
                return "alt"
            case ("ground_truth",):
                return "answers[0]"
            case ("rephrase", _):
                return "rephrase"
            case ("locality", _, "prompt"):
                return "loc"
            case ("locality", _, "answer"):
                return "loc_ans"
            case ("portability", _, "prompt"):
                return "portability['New Question']"
            case ("portability", _, "answer"):
                return "portability['New Answer']"
        return shown_field(where)

    return _cases(path, limit, offset, build, "ZsRE's MEND format",
                  "give src, subject and alt, or use the easyedit reader for flat records.", spell=spell, **window)


def _named_items(kind: str, groups: Any) -> list[tuple[Any, Any, str, str]]:
    """The probes of a dict of named probes: ``(prompt, answer, where the prompt is, where the answer is)`` each.

    A group is ``{"prompt": P, "ground_truth": A}`` with one prompt, or with
    parallel lists of prompts and answers (as many of each).  An answer that
    is a list is its first item.  ``None`` (the key absent) has no probes.
    """
    if groups is None:
        return []
    if not isinstance(groups, dict):
        raise ValueError(f"{kind} is a {type(groups).__name__}, not a mapping of named probes")
    items = []
    for name, group in groups.items():
        at = f"{kind}.{name}"
        if not isinstance(group, dict):
            raise ValueError(f"{at} is a {type(group).__name__}, not a mapping {{prompt, ground_truth}} "
                             "(a list of them is KnowEdit's shape: read the file as knowedit)")
        prompts, answers = group["prompt"], group["ground_truth"]
        if isinstance(prompts, list):
            if not isinstance(answers, list) or len(answers) != len(prompts):
                count = len(answers) if isinstance(answers, list) else "not a list of"
                raise ValueError(f"{at} has {len(prompts)} prompts but {count} answers: give one answer per prompt")
            pairs = [(p, a, f"{at}.prompt[{i}]", f"{at}.ground_truth[{i}]") for i, (p, a) in enumerate(zip(prompts, answers))]
        else:
            pairs = [(prompts, answers, f"{at}.prompt", f"{at}.ground_truth")]
        for prompt, answer, prompt_at, answer_at in pairs:
            if isinstance(answer, list):   # a list of answers: the first is the one measured
                if not answer:
                    raise ValueError(f"{answer_at} is an empty list of answers")
                answer, answer_at = answer[0], f"{answer_at}[0]"
            items.append((prompt, answer, prompt_at, answer_at))
    return items


def _named_probes(kind: str, groups: Any) -> tuple[Probe, ...]:
    return tuple(Probe(kind, prompt, answer) for prompt, answer, _, _ in _named_items(kind, groups))


READERS: dict[str, Callable[..., list[EditCase]]] = {"counterfact": counterfact_cases, "easyedit": easyedit_cases, "zsre": zsre_cases}


def read_cases(fmt: str, path: str | Path, **options: Any) -> list[EditCase]:
    """Edit cases from ``path`` read as ``fmt`` (one of :data:`READERS`)."""
    if fmt not in READERS:
        raise RecordFormatError(f"unknown record format {fmt!r}; known formats: {', '.join(sorted(READERS))}")
    return READERS[fmt](path, **options)
