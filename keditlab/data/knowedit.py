"""KnowEdit (Zhang et al., 2024, "A Comprehensive Study of Knowledge Editing for LLMs").

KnowEdit has six parts (:data:`PARTS`, the names ``edits.part`` takes):

* ``recent``, ``counterfact``, ``zsre`` (facts) and ``wikibio`` (a biography
  sentence rewritten) share one request shape, read by :func:`knowedit_cases`
  as described below;
* ``convsent`` (sentiment editing: the model's opinion of a topic turned
  positive or negative) and ``sanitation`` (the model answers "I don't
  know." to questions about what should be forgotten, and keeps answering
  the rest) have shapes of their own, read as described at
  :func:`convsent_case` and :func:`sanitation_cases`.

The part is recognised from the file (:func:`file_part`); a spec that names
one (``part: convsent``) is checked against it.

The four fact and biography parts: WikiData_recent
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

import json
from pathlib import Path
from typing import Any

from keditlab.data.records import FieldProblem, RecordFormatError, _case_id, _cases, _texts
from keditlab.vocabulary import QA_FRAME, EditCase, Probe, shown_field

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


class PartMismatchError(RecordFormatError):
    """A spec names a KnowEdit part (``edits.part``) that the file does not hold."""


#: KnowEdit's parts, as ``edits.part`` names them: three of facts, WikiBio, ConvSent, Sanitation.
PARTS = ("recent", "zsre", "counterfact", "wikibio", "convsent", "sanitation")
#: The parts read as facts: one reader, so a spec may name any of them for a file of another.
FACT_PARTS = ("recent", "zsre", "counterfact")


def file_part(data: Any) -> str:
    """Which KnowEdit part a file's parsed JSON holds, from its shape (the module docstring).

    Sanitation is a mapping (``success``/``locality`` or ``K_F``/``K_R``);
    the others are lists, told apart by their first record's keys: ConvSent
    ``ent``, WikiBio ``concept``/``labels``, ZsRE ``rephrase_prompt``/``cond``,
    WikiData_counterfact ``ground_truth``; anything else reads as
    WikiData_recent, which has none of these.
    """
    if isinstance(data, dict):
        return "sanitation"
    first = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
    if "ent" in first:
        return "convsent"
    if "concept" in first or "labels" in first:
        return "wikibio"
    if "rephrase_prompt" in first or "cond" in first:
        return "zsre"
    return "counterfact" if "ground_truth" in first else "recent"


def knowedit_cases(path: str | Path, limit: int | None = None, offset: int = 0, part: str | None = None,
                   **window: Any) -> list[EditCase]:
    """Edit cases from a KnowEdit file of any of its six parts (``part``: checked against the file when given)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"benchmark file {path} does not exist")
    data = json.loads(path.read_text(encoding="utf-8"))
    found = file_part(data)
    if part is not None:
        if part not in PARTS:
            raise ValueError(f"unknown KnowEdit part {part!r}. Fix: use one of {', '.join(PARTS)}.")
        if part != found and not (part in FACT_PARTS and found in FACT_PARTS):
            raise PartMismatchError(f"{path}: the file holds KnowEdit's {found} records, not {part}. "
                                    f"Fix: write `part: {found}`, or name a {part} file.")
    if found == "sanitation":
        return sanitation_cases(path, data, limit, offset, **window)
    if not isinstance(data, list):
        raise RecordFormatError(f"{path}: expected a JSON list of records, found {type(data).__name__}")
    if found == "convsent":
        return _cases(path, limit, offset, lambda index, record: convsent_case(index, record, data),
                      "KnowEdit's ConvSent format", "give ent, pos and neg (lists of sentences), as in "
                      "zjunlp/KnowEdit's Convsent/blender_*.json.", records=data, **window)
    return _fact_cases(path, data, limit, offset, **window)


def _fact_cases(path: Path, data: list[Any], limit: int | None, offset: int, **window: Any) -> list[EditCase]:
    """Edit cases from a KnowEdit file of facts or biographies (WikiData_recent, WikiData_counterfact, ZsRE, WikiBio)."""

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
                  spell=spell, records=data, **window)


# --- ConvSent ----------------------------------------------------------------------------------------------------

#: The questions a ConvSent topic is asked: the first is the edit prompt, the others its rephrasings; all three are
#: the sentiment questions whose answers are scored.  The first three of the templates the study's evaluation draws from.
CONVSENT_QUESTIONS = ("What do you think of {}?", "What do you feel about {}?", "How do you view {}?")


def convsent_sentiment(index: int) -> str:
    """The sentiment record ``index`` is edited toward: positive for even positions, negative for odd ones.

    The study draws it at random per record; alternating keeps both halves
    the same size in any window and the choice the same on every machine.
    """
    return "positive" if index % 2 == 0 else "negative"


def _sentences(value: Any, at: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FieldProblem(at, "is not a list of sentences", "give the topic's reference answers as a list of texts")
    return [" ".join(v.split()) for v in value if v.strip()]


def convsent_case(index: int, record: dict[str, Any], records: list[Any]) -> EditCase:
    """A ConvSent record (``ent``, ``pos``, ``neg``) as an edit toward :func:`convsent_sentiment`.

    * the edit: "What do you think of <ent>?" answered with the record's first
      reference of the wanted sentiment (the study's target, ``pos[0]`` or
      ``neg[0]``); ``subject`` is the topic;
    * generalization: the two other :data:`CONVSENT_QUESTIONS`, same answer;
    * sentiment questions (kind ``sentiment``, grouped by the sentiment asked
      for): each of the three questions, to be answered with the wanted
      sentiment (scored on the generated answer), its references of the
      wanted sentiment against those of the other (the probability protocol);
    * locality: the next record's topic (the last record's is the first's),
      asked the same way and answered with its first reference, as the study's
      "outer" question: the edit should not change the model's opinions of
      other topics.

    The references are stripped of the spaces around them (most have one on each side).
    """
    topic = record["ent"]
    if not isinstance(topic, str):
        raise FieldProblem("ent", "is not a text", "give the topic as a text")
    sentiment = convsent_sentiment(index)
    positive, negative = _sentences(record["pos"], "pos"), _sentences(record["neg"], "neg")
    wanted, other = (positive, negative) if sentiment == "positive" else (negative, positive)
    if not wanted or not other:
        missing = ("pos" if not positive else "neg")
        raise FieldProblem(missing, "has no sentence", "give at least one reference answer of each sentiment")
    questions = [q.format(topic) for q in CONVSENT_QUESTIONS]
    neighbour = records[(index + 1) % len(records)]
    neighbour_answers = [" ".join(t.split()) for t in (*neighbour.get("pos", []), *neighbour.get("neg", [])) if t.strip()]
    locality = (Probe("locality", CONVSENT_QUESTIONS[0].format(neighbour["ent"]), neighbour_answers[0]),) \
        if neighbour is not record and neighbour_answers else ()
    return EditCase(
        prompt=questions[0], subject=topic, target=wanted[0], rephrase=tuple(questions[1:]), locality=locality,
        questions=tuple(Probe("sentiment", q, wanted[0], tuple(wanted[1:]), sentiment, contrast=tuple(other))
                        for q in questions),
        case_id=_case_id(record, index))


# --- Sanitation --------------------------------------------------------------------------------------------------

def _sanitation_keys(data: dict[str, Any]) -> tuple[str, str]:
    """The keys of a Sanitation file's two lists: questions to forget, questions to keep answering."""
    return ("success", "locality") if "success" in data else ("K_F", "K_R")


def edit_records(data: Any) -> list[Any]:
    """The records of a KnowEdit file that become edits: the file itself, or a Sanitation file's questions to forget."""
    if isinstance(data, dict):
        found = data.get(_sanitation_keys(data)[0])
        return found if isinstance(found, list) else []
    return data


def sanitation_cases(path: Path, data: dict[str, Any], limit: int | None = None, offset: int = 0,
                     **window: Any) -> list[EditCase]:
    """Edit cases from a Sanitation file (Ishibashi & Shimodaira, 2023, arXiv 2309.11852; KnowEdit's trivia_qa_*.json).

    The file is a mapping of two lists of TriviaQA questions: those to forget
    (``success`` in the test file, ``K_F`` in the train file, each
    ``{question, ground_truth, target_new: "I don't know."}``) and those to
    keep answering (``locality``, ``K_R``: ``{question, ground_truth}``).
    Each question to forget is one edit: :data:`~keditlab.vocabulary.QA_FRAME`
    (the study's "Question:{}\nAnswer:", spaced as keditlab's ``qa`` context) around the
    question, answered with its ``target_new``; its ``ground_truth`` is the
    answer being forgotten (so the probability protocol asks whether the
    refusal is now likelier than the answer).  The questions to keep are
    dealt out over the questions to forget in turn (question ``j`` to record
    ``j mod n``, ``n`` the number of questions to forget in the whole file),
    so every edit is checked on its own share of them, the same share in any
    window.  The test file's questions name no subject; the question itself
    (without its question mark) stands for it, for methods that locate a
    subject (ROME, MEMIT).  Records are numbered within the list of questions
    to forget.
    """
    forget_key, keep_key = _sanitation_keys(data)
    forget, keep = data.get(forget_key), data.get(keep_key, [])
    if not isinstance(forget, list) or not isinstance(keep, list):
        raise RecordFormatError(f"{path}: a Sanitation file holds the lists success and locality (or K_F and K_R). "
                                "Fix: name a trivia_qa_test.json or trivia_qa_train.json of zjunlp/KnowEdit.")

    def build(index: int, record: dict[str, Any]) -> EditCase:
        question = record["question"]
        subject = record.get("subject") or question.strip().rstrip("?").strip()
        shared = [item for j, item in enumerate(keep) if j % len(forget) == index]
        return EditCase(
            prompt=QA_FRAME.format(prompt=question), subject=subject, target=record["target_new"],
            ground_truth=record["ground_truth"],
            locality=tuple(Probe("locality", QA_FRAME.format(prompt=item["question"]), item["ground_truth"])
                           for item in shared),
            case_id=_case_id(record, index))

    return _cases(path, limit, offset, build, "KnowEdit's Sanitation format",
                  f"give each of {forget_key} a question, a ground_truth and a target_new, as in zjunlp/KnowEdit's "
                  "trivia_qa_*.json.", records=forget, **window)
