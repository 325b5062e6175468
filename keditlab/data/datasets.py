"""The benchmark registry: a dataset's name, its reader and its public source.

``edits: {dataset: NAME, path: FILE, limit, offset, sample: {n, seed}, on_bad_record}``
in a spec reads a benchmark through :func:`dataset_cases`.  With ``path``
the local file is read; without it, the dataset's public file is downloaded
once into the cache (:mod:`keditlab.data.download`) and checked against
the sha256 :data:`DATASETS` pins for it.  ``easyedit`` (the reference
toolkit's request format) has no public file of its own and needs a ``path``.

``edits: {dataset: NAME, file: NAME/FILE}`` names one of the
:data:`PUBLISHED` files instead: a benchmark file pinned to the commit of the
public repository it was taken from, with its size and sha256.  It is read
from ``$KEDITLAB_DATASETS/NAME/FILE`` when that folder holds it (a local
mirror of the published files, laid out as their names say: the tests point
it at ``../shared/datasets``), else from the cache, else downloaded into the
cache once and checked against its sha256.  So a spec naming a published
file runs on any machine, the same bytes everywhere.

Whichever way a file was found, :func:`file_provenance` says what a run
manifest records of it: its sha256 and size, and the pinned source it is a
copy of, when it is one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keditlab.data.download import cached_download, datasets_cache, sha256_of, url_revision
from keditlab.data.knowedit import knowedit_cases
from keditlab.data.mquake import mquake_cases
from keditlab.data.records import RecordFormatError, counterfact_cases, easyedit_cases, zsre_cases
from keditlab.data.rippleedits import rippleedits_cases
from keditlab.vocabulary import did_you_mean
from keditlab.vocabulary import EditCase


@dataclass(frozen=True)
class Dataset:
    """One benchmark: its reader, its public source and a line about it.

    ``url`` is the public file read when a spec gives no ``path`` (None: a
    local path is needed).  A GitHub or Hub URL names a commit rather than a
    branch wherever the commit is known, so the file cannot move under it;
    ``sha256`` and ``size`` are those of the file it serves, and a download
    must have that sha256 (``sha256`` None: the source has no pinned
    checksum, and a run records its file as unverified; ``size`` None: not
    known, only the progress bar misses it).
    """

    name: str
    reader: Callable[..., list[EditCase]]
    url: str | None
    summary: str
    sha256: str | None = None
    size: int | None = None

    @property
    def cached_name(self) -> str:
        """The file's name in the cache: ``<dataset>/<file name of the source>``."""
        return f"{self.name}/{(self.url or '').rsplit('/', 1)[-1]}"


#: The default public file of each dataset.  How each pin was established (none of these files could be
#: downloaded where this table was written, which has no network; docs/reliability.md says what is promised):
#:
#: * counterfact: rome.baulab.info is not versioned, so the file is pinned by its sha256 and size, which
#:   independent third-party records of this URL agree on (several projects' checks, one giving the size
#:   and 21,919 records).
#: * zsre: ROME's own loader (kmeng01/rome, dsets/zsre.py) reads ``zsre_mend_eval.json`` from this host
#:   (keditlab named ``zsre_mem_eval.json`` before, a file no source knows).  sha256 and size from two
#:   independent third-party records of this URL (19,086 records).
#: * mquake: the commit is the head of princeton-nlp/MQuAKE and the last commit that changed the file
#:   (2024-09-12, "update mquake-cf-3k-v2").  sha256 and size from two independent third-party records, one
#:   made at this commit, the other from ``main`` after it.
#: * knowedit: the Hub revision commit could not be established here, so the URL names ``main``; the file
#:   is pinned by its sha256, from a third-party hash lock whose other KnowEdit hashes match an independent
#:   download from this repository (also in ../shared/datasets/PROVENANCE.md).  Its size is not known.
#: * rippleedits: the commit is the head of edenbiran/RippleEdits (the files were last changed at
#:   8d73aea, 2024-02-20, no longer in Git LFS).  No record of the file's sha256 was found, so it has
#:   none: the download is said, and recorded, to be unverified.
DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("counterfact", counterfact_cases, "https://rome.baulab.info/data/dsets/counterfact.json",
            "CounterFact (Meng et al., 2022), ROME's format or the reference toolkit's flat one",
            sha256="d017056125178a13728594e66a801357a8db9ed7973a7425554bb4271de9fc6f", size=45_108_470),
    Dataset("zsre", zsre_cases, "https://rome.baulab.info/data/dsets/zsre_mend_eval.json",
            "ZsRE question edits in MEND's format, with portability where the file has it",
            sha256="8a371d512f8a6ab175db4ef672181d5c0e52da23298cb51e5a2eeea2f89aa9cd", size=8_091_864),
    Dataset("mquake", mquake_cases,
            "https://raw.githubusercontent.com/princeton-nlp/MQuAKE/fb43dadc2d8cd19d08ce81c63d957b59deb3f3cd/"
            "datasets/MQuAKE-CF-3k-v2.json",
            "MQuAKE (Zhong et al., 2023): one to four edits per case and multi-hop questions",
            sha256="f82091cbb668cef8f2537f79f1768af1840184450b347ff8c344336090ddc71e", size=15_383_628),
    Dataset("knowedit", knowedit_cases,
            "https://huggingface.co/datasets/zjunlp/KnowEdit/resolve/main/benchmark/wiki_recent/recent_test.json",
            "KnowEdit (Zhang et al., 2024): its six parts, WikiData_recent, WikiData_counterfact, ZsRE, WikiBio, "
            "ConvSent and Sanitation (`part`)",
            sha256="e5c4ce6de1e8e2d10d892164ad6f4cbd28c976ed509e29e78ae853b01de1797b"),
    Dataset("rippleedits", rippleedits_cases,
            "https://raw.githubusercontent.com/edenbiran/RippleEdits/54f3b88af4895a3aacb580ec63ce7ae857185040/"
            "data/benchmark/popular.json",
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
#: A GitHub copy of the Hugging Face dataset zjunlp/KnowEdit (MIT), its ``KnowEdit/benchmark`` folder byte for byte
#: (the Hub's own revision could not be pinned; ../shared/datasets/PROVENANCE.md, KnowEdit, names the checks).
_KNOWEDIT = ("5456es/Edit_Evaluation", "2a353b1145add57215809ff8a51742388b3e0c6e")


def _knowedit(name: str, source: str, sha256: str, size: int, records: int, summary: str) -> PublishedFile:
    return PublishedFile(f"knowedit/{name}", "knowedit", _raw(*_KNOWEDIT, f"KnowEdit/benchmark/{source}"), sha256, size,
                         records, f"KnowEdit (Zhang et al., 2024): {summary}")


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
    _knowedit("zsre/ZsRE-test-all.json", "ZsRE/ZsRE-test-all.json",
              "0e0214dda853a906ef02bef58c7ce2978af5a962e91fc4a10827e0125459905c", 1_519_289, 1_301, "ZsRE, test"),
    _knowedit("wiki_recent/recent_train.json", "wiki_recent/recent_train.json",
              "e918ad6fdf7dedb1bb06358ae478d054767a27afae11fff1c83a2b5c187359d3", 1_834_046, 570, "WikiData_recent, train"),
    _knowedit("wiki_counterfact/train_cf.json", "wiki_counterfact/train_cf.json",
              "0e535169a46e759245667c40041ed31b3c38daf1818ee29b304c12b5d77f23ea", 1_386_892, 1_427,
              "WikiData_counterfact, train"),
    _knowedit("wikibio/wikibio-test-all.json", "WikiBio/wikibio-test-all.json",
              "00933f69b47d8281d01f1f4b84f3f266b7482a65a7d74022e660a8a9ca2264a4", 309_858, 306, "WikiBio, test"),
    _knowedit("wikibio/wikibio-train-all.json", "WikiBio/wikibio-train-all.json",
              "6ee88049c1c6c00d6f81d2d942350b6ec78b45917d2ec8a3eec3eafa89c2e209", 454_217, 464, "WikiBio, train"),
    _knowedit("convsent/blender_test.json", "Convsent/blender_test.json",
              "bfdab01a2655f5b136e593bc0d1d440cea963a1883510da7b31178855db00804", 1_327_531, 800, "ConvSent, test"),
    _knowedit("convsent/blender_val.json", "Convsent/blender_val.json",
              "4c21b2d802ac70877c9356439f676ead4bd9eb767c2f34d582df4b5b200e3882", 1_325_161, 799, "ConvSent, validation"),
    _knowedit("sanitation/trivia_qa_test.json", "trivia/trivia_qa_test.json",
              "515f5e08e8ebc1a6274938a67dee34489d17f6177f2726ecb937064f1e9a79f7", 95_119, 80,
              "Sanitation, test (80 questions to forget, 453 to keep)"),
    _knowedit("sanitation/trivia_qa_train.json", "trivia/trivia_qa_train.json",
              "30ddde2c3410f93cf5a7f34fe6fcb0fd9f1d4fdfde3974c563c76c763ae109d3", 87_025, 80,
              "Sanitation, train (80 questions to forget, 453 to keep)"),
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


@dataclass(frozen=True)
class PinnedSource:
    """A file keditlab knows the public source of: its name in a datasets folder, URL and pinned sha256 (or None)."""

    name: str
    url: str
    sha256: str | None


def pinned_sources() -> list[PinnedSource]:
    """Every file keditlab downloads: the :data:`PUBLISHED` files and each dataset's default file."""
    published = [PinnedSource(f.name, f.url, f.sha256) for f in PUBLISHED.values()]
    defaults = [PinnedSource(d.cached_name, d.url, d.sha256) for d in DATASETS.values() if d.url is not None]
    return published + defaults


def file_provenance(path: str | Path) -> dict[str, Any] | None:
    """What a run manifest records of the benchmark file at ``path``; None when there is no such file.

    ``{"sha256", "bytes", "source"}``: the sha256 and size of the bytes read,
    and ``source``, the pinned file it is a copy of (``name``, ``url``,
    ``revision``: the commit or branch the URL names, null for a host without
    versions, ``pinned_sha256`` and ``verified``: whether the bytes are the
    pinned ones), or null for a file of no known source (a local file given by
    ``path``).  A file is a copy of a pinned one when it has its sha256, or
    when it sits under that file's name in the cache or in
    ``$KEDITLAB_DATASETS`` (then ``verified`` says whether it is the pinned
    file or another version, such as a local copy that keeps only some records).
    """
    path = Path(path)
    if not path.is_file():
        return None
    sha256 = sha256_of(path)
    sources = pinned_sources()
    source = next((s for s in sources if s.sha256 == sha256), None)
    if source is None:
        for folder in (datasets_cache(), local_datasets()):
            if folder is not None and path.absolute().is_relative_to(folder.absolute()):
                name = path.absolute().relative_to(folder.absolute()).as_posix()
                source = next((s for s in sources if s.name == name), None)
                if source is not None:
                    break
    described = None
    if source is not None:
        described = {"name": source.name, "url": source.url, "revision": url_revision(source.url),
                     "pinned_sha256": source.sha256, "verified": source.sha256 == sha256}
    return {"sha256": sha256, "bytes": path.stat().st_size, "source": described}


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
    return cached_download(dataset.url, dataset.cached_name, name, sha256=dataset.sha256, size=dataset.size)


def dataset_cases(name: str, path: str | Path | None = None, limit: int | None = None, offset: int = 0,
                  sample: dict[str, int] | None = None, on_bad_record: str = "stop",
                  skipped: list[str] | None = None, **options: Any) -> list[EditCase]:
    """Edit cases of dataset ``name`` read from ``path`` (or its downloaded public file).

    ``limit``/``offset`` pick a window of records, ``sample`` (``{n, seed}``)
    draws from that window, ``on_bad_record`` is ``stop`` or ``skip`` (the
    messages of skipped records are appended to ``skipped``).
    """
    file = dataset_file(name, path)
    if Path(file).is_file():
        sha256_of(Path(file))  # the bytes about to be read, hashed once: a run manifest records them (file_provenance)
    return get_dataset(name).reader(file, limit=limit, offset=offset, sample=sample, on_bad_record=on_bad_record,
                                    skipped=skipped, **options)
