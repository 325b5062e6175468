"""Benchmark records as :class:`~keditlab.vocabulary.EditCase` lists.

Each reader turns one published record format into edit cases with their
probes, so a benchmark file can be run like a spec's inline edits:

``counterfact``
    ROME's CounterFact format (Meng et al., 2022): ``requested_rewrite`` with a
    ``{}`` prompt template, ``paraphrase_prompts`` (generalization) and
    ``neighborhood_prompts`` (locality, answered with the *true* object).
``easyedit``
    The request format of the field's reference toolkit: ``prompt``,
    ``subject``, ``target_new``, ``ground_truth``, ``rephrase_prompt`` and
    ``locality`` / ``portability`` dicts of ``{prompt, ground_truth}`` probes
    (the ten edits of ``shared/datasets/reference/`` use it).
``zsre``
    ZsRE question-answering edits in MEND's format: ``src``, ``alt``,
    ``answers``, ``rephrase``, ``loc``/``loc_ans`` and, in the portability
    file, ``portability``.

``mquake``, ``knowedit``, ``rippleedits``
    One module each (:mod:`keditlab.data.mquake`, :mod:`keditlab.data.knowedit`,
    :mod:`keditlab.data.rippleedits`): several edits per case with multi-hop
    questions; KnowEdit's named portability and locality sub-keys; test
    queries with their condition queries.

:data:`DATASETS` registers each with its public source, pinned to a commit
and a sha256 where one is known, and :data:`PUBLISHED` lists further pinned
files; :func:`dataset_cases` reads a local file or the checked, cached
download (:mod:`keditlab.data.download`: pooch, and huggingface_hub for the
Hub), and :func:`file_provenance` says what a run manifest records of a file.
Readers only read: no torch; only the download touches the network.  This
package builds on the ground vocabulary (:mod:`keditlab.vocabulary`) alone and
never imports :mod:`keditlab.spec`; the spec language imports it, when a spec
reads its edits from a benchmark file (:mod:`keditlab.spec.edits_file`).
"""

from keditlab.data.datasets import (DATASETS, PUBLISHED, Dataset, dataset_cases, dataset_file, file_provenance,
                                    get_dataset)
from keditlab.data.download import ChecksumMismatchError, DatasetUnavailableError
from keditlab.data.knowedit import knowedit_cases
from keditlab.data.mquake import mquake_cases
from keditlab.data.records import RecordFormatError, counterfact_cases, easyedit_cases, read_cases, zsre_cases
from keditlab.data.rippleedits import rippleedits_cases

__all__ = ["DATASETS", "PUBLISHED", "ChecksumMismatchError", "Dataset", "DatasetUnavailableError", "RecordFormatError",
           "counterfact_cases", "dataset_cases", "dataset_file", "easyedit_cases", "file_provenance", "get_dataset",
           "knowedit_cases", "mquake_cases", "read_cases", "rippleedits_cases", "zsre_cases"]
