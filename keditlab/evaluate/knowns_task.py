"""``knowns``: an lm-evaluation-harness task over ROME's known facts, run offline from a local file.

General ability (``evaluate: {general: {tasks: [knowns]}}``, :mod:`keditlab.evaluate.general`)
asks whether editing a few facts damaged what else the model knows.  The
facts here are ROME's ``known_1000.json`` (Meng et al., 2022): 1,209 records
``{subject, attribute, prompt, relation_id, ...}`` such as "Vinson Massif is
located in the continent of" → "Antarctica", facts GPT-2 XL was found to
know.  The file is found by the spec layer (a local copy, keditlab's cache,
or the pinned public file downloaded once), never fetched from the Hub by the
harness: this module is handed its path.

How a fact is scored
--------------------

The task is **multiple choice**, the harness's own ``multiple_choice`` type:
each prompt is read with four continuations, the true attribute and three
other attributes *of the same relation* (so "Vinson Massif is located in the
continent of" is read with " Antarctica", " Africa", " Asia", " Europe"),
and the fact counts as known when the true attribute has the highest
log-likelihood (the harness's ``acc``).  The distractors are chosen without
randomness: the next three distinct attributes of the relation, in the order
the file first names them, counted on from the fact's own attribute (wrapping
round).  The choices are shown to the harness in alphabetical order, so the
right one is not always first.  A relation with only one attribute in the file
(one fact, P190) has nothing to choose between, and its records are left out;
a relation with fewer than four attributes gives fewer choices.

Why not ask for the attribute as the greedy continuation?  The embedded model
(SmolLM2-135M-Instruct) continues 20% of the first 100 prompts with their
attribute (22% of the first 200), so a damaged model has little to lose and
the figure is mostly noise; it picks the true attribute among the four for
67% of the first 100 (72% of the first 200), against 25% by chance.  A score
that starts well above chance and can fall is what shows the cost of an edit:
noise of half the weights' spread in every MLP output takes it to 28%
(docs/protocols.md, General ability, has the figures).

The config is a Python dict with ``custom_dataset`` (the harness calls it to
get the documents), which the harness's ``TaskManager`` accepts in place of a
task name; :func:`knowns_task_config` builds it.  :func:`knowns_docs` is the
same documents as plain dicts, for tests and readers.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

#: The task's version in the harness's results (``metadata.version``): raised when the documents or scoring change.
KNOWNS_VERSION = 1.0
#: How many continuations each fact is read with: its attribute and this many minus one others of its relation.
KNOWNS_CHOICES = 4


class KnownsFileError(ValueError):
    """The knowns file cannot be read as ROME's ``known_1000.json`` format."""


def read_knowns(path: str | Path) -> list[dict[str, Any]]:
    """The records of a file in ROME's ``known_1000.json`` format, each checked for ``prompt``, ``attribute``, ``relation_id``."""
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KnownsFileError(f"the knowns file {path} does not exist. Fix: give the path of ROME's known_1000.json as "
                              "`evaluate.general.knowns_file`, or leave it out to use the published file") from None
    except json.JSONDecodeError as exc:
        raise KnownsFileError(f"{path} is not JSON ({exc.msg} at line {exc.lineno}); expected ROME's known_1000.json "
                              "format (a list of {subject, attribute, prompt, relation_id, ...})") from None
    if not isinstance(records, list) or not records:
        raise KnownsFileError(f"{path}: expected a non-empty JSON list of records like ROME's known_1000.json")
    for index, record in enumerate(records):
        missing = [key for key in ("prompt", "attribute", "relation_id")
                   if not isinstance(record, dict) or not isinstance(record.get(key), str) or not record[key].strip()]
        if missing:
            raise KnownsFileError(f"{path}: record {index} has no {', '.join(missing)} (each record of ROME's "
                                  "known_1000.json format has a prompt, its attribute and a relation_id)")
    return records


def distractors(records: list[dict[str, Any]], index: int, count: int = KNOWNS_CHOICES - 1) -> list[str]:
    """Up to ``count`` other attributes of record ``index``'s relation: the next distinct ones in file order, wrapping round."""
    record = records[index]
    attributes: list[str] = []
    for other in records:
        if other["relation_id"] == record["relation_id"] and other["attribute"] not in attributes:
            attributes.append(other["attribute"])
    start = attributes.index(record["attribute"])
    return [attributes[(start + k) % len(attributes)] for k in range(1, min(count, len(attributes) - 1) + 1)]


def knowns_docs(path: str | Path) -> list[dict[str, Any]]:
    """The task's documents: each record with ``choices`` (alphabetical) and ``gold`` (the attribute's index in them).

    Records whose relation has no other attribute are left out (nothing to
    choose between).  Every value is a plain type, as the harness's dataset
    needs (``known_id`` is kept when the record has it, to trace a document
    back to its record).
    """
    records = read_knowns(path)
    docs = []
    for index, record in enumerate(records):
        others = distractors(records, index)
        if not others:
            continue
        choices = sorted([record["attribute"], *others], key=lambda text: (text.casefold(), text))
        docs.append({"known_id": int(record.get("known_id", index)), "subject": str(record.get("subject", "")),
                     "relation_id": record["relation_id"], "prompt": record["prompt"], "attribute": record["attribute"],
                     "choices": choices, "gold": choices.index(record["attribute"])})
    return docs


def _dataset(path: str, **_harness_metadata: Any) -> Any:
    """The documents as the harness reads them: a ``datasets.DatasetDict`` with one ``test`` split.

    The harness calls a task's ``custom_dataset`` with the task's metadata as
    keyword arguments; they say nothing this task needs.
    """
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(knowns_docs(path))})


def knowns_task_config(path: str | Path) -> dict[str, Any]:
    """The harness's config for the ``knowns`` task over the file at ``path`` (read when the harness builds the task).

    ``doc_to_text``, ``doc_to_choice`` and ``doc_to_target`` name fields of the
    documents; the harness puts ``target_delimiter`` (one space) between the
    prompt and each choice, so " Antarctica" is scored after the prompt, as
    keditlab's own protocols read an answer.
    """
    return {
        "task": "knowns",
        "custom_dataset": partial(_dataset, str(path)),
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "prompt",
        "doc_to_choice": "choices",
        "doc_to_target": "gold",
        "target_delimiter": " ",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": KNOWNS_VERSION},
    }
