"""The benchmark registry: a dataset's name, its reader and its public source.

``edits: {dataset: NAME, path: FILE, limit, offset, sample: {n, seed}, on_bad_record}``
in a spec reads a benchmark through :func:`dataset_cases`.  With ``path``
the local file is read; without it, the dataset's public file is downloaded
once into the cache (:mod:`keditlab.data.download`).  ``easyedit`` (the
reference toolkit's request format) has no public file of its own and needs
a ``path``.

``edits: {dataset: NAME, file: NAME/FILE}`` names one of the
:data:`PUBLISHED` files instead: a benchmark file pinned to the commit of the
public repository it was taken from, with its size and sha256.  It is read
from ``$KEDITLAB_DATASETS/NAME/FILE`` when that folder holds it (a local
mirror of the published files, laid out as their names say: the tests point
it at ``../shared/datasets``), else from the cache, else downloaded into the
cache once and checked against its sha256.  So a spec naming a published
file runs on any machine, the same bytes everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keditlab.data.download import cached_download, datasets_cache
from keditlab.data.knowedit import knowedit_cases
from keditlab.data.mquake import mquake_cases
from keditlab.data.records import RecordFormatError, counterfact_cases, easyedit_cases, zsre_cases
from keditlab.data.rippleedits import rippleedits_cases
from keditlab.vocabulary import did_you_mean
from keditlab.vocabulary import EditCase


@dataclass(frozen=True)
class Dataset:
    """One benchmark: its reader, its public source (``url``, None: a local path is needed) and a line about it."""

    name: str
    reader: Callable[..., list[EditCase]]
    url: str | None
    summary: str

    @property
    def cached_name(self) -> str:
        """The file's name in the cache: ``<dataset>/<file name of the source>``."""
        return f"{self.name}/{(self.url or '').rsplit('/', 1)[-1]}"


DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("counterfact", counterfact_cases, "https://rome.baulab.info/data/dsets/counterfact.json",
            "CounterFact (Meng et al., 2022), ROME's format or the reference toolkit's flat one"),
    Dataset("zsre", zsre_cases, "https://rome.baulab.info/data/dsets/zsre_mem_eval.json",
            "ZsRE question edits in MEND's format, with portability where the file has it"),
    Dataset("mquake", mquake_cases,
            "https://raw.githubusercontent.com/princeton-nlp/MQuAKE/main/datasets/MQuAKE-CF-3k-v2.json",
            "MQuAKE (Zhong et al., 2023): one to four edits per case and multi-hop questions"),
    Dataset("knowedit", knowedit_cases,
            "https://huggingface.co/datasets/zjunlp/KnowEdit/resolve/main/benchmark/wiki_recent/recent_test.json",
            "KnowEdit (Zhang et al., 2024): WikiData_recent, WikiData_counterfact, ZsRE and WikiBio files"),
    Dataset("rippleedits", rippleedits_cases,
            "https://raw.githubusercontent.com/edenbiran/RippleEdits/main/data/benchmark/popular.json",
            "RippleEdits (Cohen et al., 2024): test queries per criterion with their condition queries"),
    Dataset("easyedit", easyedit_cases, None,
            "the reference toolkit's request format (prompt, subject, target_new, locality/portability dicts)"),
)}


@dataclass(frozen=True)
class PublishedFile:
    """A benchmark file pinned to its public origin: the file at one commit, its size and sha256.

    ``name`` is where it lives in a datasets folder (``zsre/zsre_mend_train-1k.json``)
    and what a spec writes as ``file:``; ``dataset`` is the reader that reads it
    (``knowns``: ROME's facts for causal tracing, ``trace: {file: ...}``).
    """

    name: str
    dataset: str
    url: str
    sha256: str
    size: int
    records: int
    summary: str


def _raw(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


_KNOWLEDGE_SPREAD = ("Jometeorie/KnowledgeSpread", "d1a8d1ed5367e66010d4d9b081ab388b46c2438c")

#: The published files the shipped specs use, each pinned to the commit it was taken from (the
#: provenance of each, and its licence, is in the repository of the benchmark files).  The size and
#: sha256 are those of the file's git blob at that commit, the bytes the URL serves; a local copy is
#: read as it is (a copy with CRLF line ends, or one that keeps only some records, reads too).
PUBLISHED: dict[str, PublishedFile] = {f.name: f for f in (
    PublishedFile("counterfact/counterfact_500.json", "counterfact",
                  _raw("furonglegend/Met", "9a33baa807b2fb0b9bbe72712df82b4fb675c692", "data/counterfact_500.json"),
                  "99a455fe1b99dc332ec1fa921e69fd9297606e9c51d4f108522782f6ad125803", 1_023_024, 500,
                  "CounterFact in ROME's format (Meng et al., 2022)"),
    PublishedFile("counterfact/easyedit/counterfact-val.json", "counterfact",
                  _raw(*_KNOWLEDGE_SPREAD, "data/counterfact/counterfact-val.json"),
                  "4feb68cc1f85dcf3b285252a28f2b2193ff69971947619356236953be60ecd1f", 741_112, 1_919,
                  "CounterFact's validation split in the reference toolkit's flat format"),
    PublishedFile("counterfact/easyedit/counterfact-edit.json", "counterfact",
                  _raw(*_KNOWLEDGE_SPREAD, "data/counterfact/counterfact-edit.json"),
                  "20c225e6299b3c5b2c569bd9103aa212806e0d1e6e0c307de5c379773979b967", 3_850_773, 10_000,
                  "CounterFact's edit split in the reference toolkit's flat format"),
    PublishedFile("zsre/zsre_mend_train-1k.json", "zsre",
                  _raw(*_KNOWLEDGE_SPREAD, "data/zsre/zsre_mend_train-1k.json"),
                  "09dbb446f4afa1e500e051806430d286ef260fa6dd89e3590a9756f8b060a229", 524_937, 1_000,
                  "ZsRE train records in MEND's format"),
    PublishedFile("zsre/zsre_mend_eval_portability_gpt4.json", "zsre",
                  _raw("JasonForJoy/Model-Editing-Hurt", "82614b0414cfe6284ba0b136174f00716a4fe531",
                       "edited-data/zsre_mend_eval_portability_gpt4.json"),
                  "0cf155da229b2eccae19fcfe5f7a09523363d357f5f15508d1521f495ad5ecd9", 842_861, 1_037,
                  "ZsRE eval records in MEND's format, each with a one-hop portability question"),
    PublishedFile("mquake/akew/MQuAKE-CF.json", "mquake",
                  _raw("BobXWu/AKEW", "272a10544eef91f912326599e4d0e15ca0df429b", "datasets/MQuAKE-CF.json"),
                  "8469d4a0b8a4ff4168de987576e7ecea4754202627cd3ab3181339ffc411ddc5", 3_183_842, 354,
                  "MQuAKE-CF cases (Zhong et al., 2023), as AKEW ships them"),
    PublishedFile("knowns/known_1000.json", "knowns",
                  _raw("kmeng01/rome", "f772b607179061bf046c2e79f0c87eac5422006c", "dsets/compiled/known_1000.json"),
                  "61daca55318bb5260c1e62e133debef9102c7b278bbc7b19dd2ac655543f333a", 343_229, 1_209,
                  "ROME's known facts, for causal tracing (Meng et al., 2022)"),
)}


def local_datasets() -> Path | None:
    """``$KEDITLAB_DATASETS``: a folder of local copies of the published files, laid out by their names."""
    folder = os.environ.get("KEDITLAB_DATASETS")
    return Path(folder).expanduser() if folder else None


def published_file(name: str) -> Path:
    """The published file ``name``: the local copy, else the cached one, else downloaded (checked) into the cache.

    Inside :func:`keditlab.data.download.deferred_downloads` (validation)
    nothing is downloaded: the path the file will have is returned.
    """
    if name not in PUBLISHED:
        raise RecordFormatError(f"unknown published file {name!r}{did_you_mean(name, list(PUBLISHED))}; "
                                f"published files: {', '.join(PUBLISHED)}")
    folder = local_datasets()
    if folder is not None and (folder / name).is_file():
        return folder / name
    pinned = PUBLISHED[name]
    return cached_download(pinned.url, name, pinned.dataset, sha256=pinned.sha256, size=pinned.size)


def published_copy(name: str) -> Path | None:
    """Where the published file ``name`` already is on this machine (local folder or cache), or None."""
    for folder in (local_datasets(), datasets_cache()):
        if folder is not None and (folder / name).is_file():
            return folder / name
    return None


class UnknownDatasetError(RecordFormatError):
    """A dataset name that is not in :data:`DATASETS`."""


def get_dataset(name: str) -> Dataset:
    """The registered dataset ``name``; an unknown name is an error with a did-you-mean."""
    if name not in DATASETS:
        raise UnknownDatasetError(f"unknown dataset {name!r}{did_you_mean(name, list(DATASETS))}; "
                                  f"known datasets: {', '.join(DATASETS)}")
    return DATASETS[name]


def dataset_file(name: str, path: str | Path | None = None, file: str | None = None) -> Path:
    """The file to read for dataset ``name``: ``path`` when given, else the published ``file``, else its public file."""
    dataset = get_dataset(name)
    if path is not None:
        return Path(path)
    if file is not None:
        return published_file(file)
    if dataset.url is None:
        raise RecordFormatError(f"dataset {name!r} has no public file to download. Fix: give its file as `path:`.")
    return cached_download(dataset.url, dataset.cached_name, name)


def dataset_cases(name: str, path: str | Path | None = None, limit: int | None = None, offset: int = 0,
                  sample: dict[str, int] | None = None, on_bad_record: str = "stop",
                  skipped: list[str] | None = None, **options: Any) -> list[EditCase]:
    """Edit cases of dataset ``name`` read from ``path`` (or its downloaded public file).

    ``limit``/``offset`` pick a window of records, ``sample`` (``{n, seed}``)
    draws from that window, ``on_bad_record`` is ``stop`` or ``skip`` (the
    messages of skipped records are appended to ``skipped``).
    """
    file = dataset_file(name, path)
    return get_dataset(name).reader(file, limit=limit, offset=offset, sample=sample, on_bad_record=on_bad_record,
                                    skipped=skipped, **options)
