"""Benchmark records as :class:`~keditlab.spec.types.EditCase` lists.

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

Readers only read: no torch, no network.  (Downloading benchmarks and the
``edits: {dataset: ...}`` spec syntax build on these.)
"""

from keditlab.data.records import RecordFormatError, counterfact_cases, easyedit_cases, read_cases, zsre_cases

__all__ = ["RecordFormatError", "counterfact_cases", "easyedit_cases", "read_cases", "zsre_cases"]
