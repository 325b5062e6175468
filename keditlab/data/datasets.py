"""The benchmark registry: a dataset's name, its reader and its public source.

``edits: {dataset: NAME, path: FILE, limit, offset, sample: {n, seed}, on_bad_record}``
in a spec reads a benchmark through :func:`dataset_cases`.  With ``path``
the local file is read; without it, the dataset's public file is downloaded
once into the cache (:mod:`keditlab.data.download`).  ``easyedit`` (the
reference toolkit's request format) has no public file of its own and needs
a ``path``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keditlab.data.download import cached_download
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


class UnknownDatasetError(RecordFormatError):
    """A dataset name that is not in :data:`DATASETS`."""


def get_dataset(name: str) -> Dataset:
    """The registered dataset ``name``; an unknown name is an error with a did-you-mean."""
    if name not in DATASETS:
        raise UnknownDatasetError(f"unknown dataset {name!r}{did_you_mean(name, list(DATASETS))}; "
                                  f"known datasets: {', '.join(DATASETS)}")
    return DATASETS[name]


def dataset_file(name: str, path: str | Path | None = None) -> Path:
    """The file to read for dataset ``name``: ``path`` when given, else the cached (downloaded) public file."""
    dataset = get_dataset(name)
    if path is not None:
        return Path(path)
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
