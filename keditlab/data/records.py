"""Readers from benchmark record formats to edit cases (see :mod:`keditlab.data`)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from keditlab.vocabulary import EditCase, Probe


class RecordFormatError(ValueError):
    """A benchmark file does not have the format its reader expects."""


def _load_list(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"benchmark file {path} does not exist")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise RecordFormatError(f"{path}: expected a JSON list of records, found {type(data).__name__}")
    return data


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
           skipped: list[str] | None = None) -> list[EditCase]:
    """``build(index, record)`` for the selected records (:func:`select`); a malformed record is named with ``fix``.

    ``on_bad_record="skip"`` leaves a malformed record out instead of raising,
    and appends its message to ``skipped`` (when given).
    """
    if on_bad_record not in ("stop", "skip"):
        raise ValueError(f"on_bad_record must be 'stop' or 'skip', got {on_bad_record!r}")
    records = _load_list(path)
    cases = []
    for index in select(len(records), limit, offset, sample):
        try:
            record = records[index]
            if not isinstance(record, dict):
                raise TypeError(f"a {type(record).__name__} where a JSON object was expected")
            cases.append(build(index, record))
        except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
            message = f"{path}: record {index} is not in {form} (missing or malformed {exc}). Fix: {fix}"
            if on_bad_record == "stop":
                raise RecordFormatError(message + " (or set `on_bad_record: skip` to leave such records out)") from None
            if skipped is not None:
                skipped.append(message)
    return cases


def counterfact_cases(path: str | Path, limit: int | None = None, offset: int = 0, neighbours: int | None = None,
                      **window: Any) -> list[EditCase]:
    """Edit cases from a CounterFact file, in ROME's format or the reference toolkit's flat one.

    ROME's format (``requested_rewrite``): the edit prompt is ``requested_rewrite.prompt`` with the subject filled in,
    the target ``target_new.str`` and the ground truth ``target_true.str``.
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
        if "requested_rewrite" not in record and "target_new" in record:
            return _counterfact_flat(index, record)
        rewrite = record["requested_rewrite"]
        truth = rewrite["target_true"]["str"]
        return EditCase(
            prompt=rewrite["prompt"].format(rewrite["subject"]),
            subject=rewrite["subject"],
            target=rewrite["target_new"]["str"],
            ground_truth=truth,
            rephrase=tuple(record.get("paraphrase_prompts", [])),
            locality=tuple(Probe("locality", p, truth) for p in record.get("neighborhood_prompts", [])[:neighbours]),
            case_id=str(record.get("case_id", index)),
        )

    return _cases(path, limit, offset, build, "CounterFact's ROME or flat format",
                  "give requested_rewrite (ROME) or prompt, subject, target_new (flat), or read the file as another dataset.", **window)


def _counterfact_flat(index: int, record: dict[str, Any]) -> EditCase:
    """One record of the reference toolkit's flat CounterFact split."""
    truth = record.get("ground_truth")
    rephrase = record.get("rephrase_prompt") or []
    locality = ()
    if record.get("locality_prompt"):
        locality = (Probe("locality", record["locality_prompt"], str(record["locality_ground_truth"])),)
    return EditCase(
        prompt=record["prompt"], subject=record["subject"], target=str(record["target_new"]),
        ground_truth=None if truth is None else str(truth),
        rephrase=tuple([rephrase] if isinstance(rephrase, str) else rephrase),
        locality=locality, case_id=str(record.get("case_id", index)),
    )


def easyedit_cases(path: str | Path, limit: int | None = None, offset: int = 0, **window: Any) -> list[EditCase]:
    """Edit cases from records in the reference toolkit's request format.

    ``locality`` and ``portability`` are dicts of named probes, each
    ``{"prompt": ..., "ground_truth": ...}`` (a list of prompts and answers is
    accepted too).  A ``case_id`` field is used when present, else the index.
    """

    def build(index: int, record: dict[str, Any]) -> EditCase:
        rephrase = record.get("rephrase_prompt") or []
        return EditCase(
            prompt=record["prompt"],
            subject=record["subject"],
            target=record["target_new"],
            ground_truth=record.get("ground_truth"),
            rephrase=tuple([rephrase] if isinstance(rephrase, str) else rephrase),
            locality=_named_probes("locality", record.get("locality")),
            portability=_named_probes("portability", record.get("portability")),
            case_id=str(record.get("case_id", index)),
        )

    return _cases(path, limit, offset, build, "the request format", "give prompt, subject and target_new, or use the counterfact reader.", **window)


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
        answers = record.get("answers") or []
        port = record.get("portability") or {}
        portability = (Probe("portability", port["New Question"], str(port["New Answer"])),) if port.get("New Question") else ()
        return EditCase(
            prompt=record["src"],
            subject=record["subject"],
            target=record["alt"],
            ground_truth=str(answers[0]) if answers else None,
            rephrase=(record["rephrase"],) if record.get("rephrase") else (),
            locality=(Probe("locality", record["loc"], record["loc_ans"]),) if record.get("loc") else (),
            portability=portability,
            case_id=str(record.get("case_id", index)),
        )

    return _cases(path, limit, offset, build, "ZsRE's MEND format", "give src, subject and alt, or use the easyedit reader for flat records.", **window)


def _named_probes(kind: str, groups: dict[str, Any] | None) -> tuple[Probe, ...]:
    probes = []
    for group in (groups or {}).values():
        prompts, answers = group["prompt"], group["ground_truth"]
        if isinstance(prompts, str):
            prompts, answers = [prompts], [answers]
        for prompt, answer in zip(prompts, answers):
            answer = answer[0] if isinstance(answer, list) else answer
            probes.append(Probe(kind, prompt, str(answer)))
    return tuple(probes)


READERS: dict[str, Callable[..., list[EditCase]]] = {"counterfact": counterfact_cases, "easyedit": easyedit_cases, "zsre": zsre_cases}


def read_cases(fmt: str, path: str | Path, **options: Any) -> list[EditCase]:
    """Edit cases from ``path`` read as ``fmt`` (one of :data:`READERS`)."""
    if fmt not in READERS:
        raise RecordFormatError(f"unknown record format {fmt!r}; known formats: {', '.join(sorted(READERS))}")
    return READERS[fmt](path, **options)
