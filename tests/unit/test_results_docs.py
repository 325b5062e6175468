"""Every key a run writes (``cases.jsonl``, ``manifest.json``, ``summary.json``) is named in docs/results.md.

A tiny random Llama (with the embedded model's tokenizer) goes through the real
runner with ROME and FT-M, every metric and a local statistics corpus, so the
records hold every key the code writes; a key added without documentation
fails here.  The same run checks that the manifest's spec is valid spec language.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_tiny_model

DOCS = Path(__file__).resolve().parents[2] / "docs" / "results.md"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from transformers import AutoTokenizer

    from keditlab.models import LoadedModel, derive_profile
    from keditlab.models.embedded import ensure_embedded_cache
    from keditlab.runner import Run, run_spec
    from keditlab.spec import spec_from_dict

    tokenizer = AutoTokenizer.from_pretrained(ensure_embedded_cache())
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = make_tiny_model("llama", vocab_size=49152)
    root = tmp_path_factory.mktemp("results-docs")
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(
        f"Paragraph {i}: the city of Paris has museums, the river flows past bridges, and people walk in parks "
        f"while trains arrive from towns number {i * 7} and {i * 13}." for i in range(200)), encoding="utf-8")
    spec = spec_from_dict({
        "keditlab": 1,
        "name": "tiny",
        "method": [{"name": "rome", "v_steps": 2, "context_templates": 1}, {"name": "ft-m", "steps": 2},
                   {"name": "alphaedit", "v_steps": 2, "context_templates": 1, "layers": [0]}],
        "edits": [{
            "id": "eiffel", "prompt": "The Eiffel Tower is located in the city of", "subject": "Eiffel Tower",
            "target": "Rome", "ground_truth": "Paris", "rephrase": ["The Eiffel Tower can be found in"],
            "locality": [{"prompt": "The capital of Japan is", "answer": "Tokyo"}],
            "portability": [{"prompt": "The Eiffel Tower is in the country of", "answer": "Italy"}],
        }],
        "evaluate": {"max_new_tokens": 3},
        "stats": {"corpus": str(corpus), "samples": 2000, "max_length": 32},
    })
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KEDITLAB_CACHE", str(root / "cache"))
        run = run_spec(spec, root / "runs", loaded=LoadedModel(model, tokenizer, derive_profile(model)), log=lambda m: None)
    return spec, Run.load(run.path)


def field_names(value, data_keyed=frozenset(), skip=frozenset(), path=""):
    """The keys of every mapping in ``value``, except those that are data (labels, parameter names).

    ``data_keyed``: paths whose mapping is keyed by data (``methods``: labels); ``*``
    stands for such a key in deeper paths.  ``skip``: paths not descended into
    (documented elsewhere, e.g. the spec in docs/spec.md).
    """
    names = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if path in data_keyed:
                child = f"{path}.*"
            else:
                names.add(key)
                child = f"{path}.{key}" if path else key
            if child not in skip:
                names |= field_names(item, data_keyed, skip, child)
    elif isinstance(value, list):
        for item in value:
            names |= field_names(item, data_keyed, skip, path + "[]")
    return names


def undocumented(names):
    text = DOCS.read_text(encoding="utf-8")
    return sorted(n for n in names if not re.search(rf"[`\"]{re.escape(n)}[`\"]", text))


def test_every_cases_jsonl_key_is_documented(tiny_run):
    _, run = tiny_run
    assert {r["method"] for r in run.cases} == {"rome", "ft-m", "alphaedit"}
    names = set()
    for record in run.cases:
        names |= field_names(record, data_keyed={"changed_parameters"})
    assert {"reference_predicted", "nll_target", "target_nll", "key_effect", "warnings", "loss_first", "fluency"} <= names  # all paths ran
    assert undocumented(names) == [], "document these cases.jsonl keys in docs/results.md"


def test_every_manifest_key_is_documented(tiny_run):
    _, run = tiny_run
    names = field_names(run.manifest, data_keyed={"methods"}, skip={"spec", "versions", "methods.*.settings"})
    assert {"statistics", "loaded_from_cache", "mlp_out_transposed", "finished"} <= names
    assert undocumented(names) == [], "document these manifest.json keys in docs/results.md"


def test_every_summary_key_is_documented(tiny_run):
    _, run = tiny_run
    names = field_names(run.summary, data_keyed={"methods", "methods.*.metrics", "methods.*.metrics.*"},
                        skip={"methods.*.settings"})
    assert undocumented(names) == [], "document these summary.json keys in docs/results.md"


def test_manifest_spec_is_valid_spec_language(tiny_run, tmp_path):
    import dataclasses

    from keditlab.spec import load_spec

    spec, run = tiny_run
    assert run.manifest["format"] == "keditlab.manifest/2"
    path = tmp_path / "resolved.yaml"
    path.write_text(yaml.safe_dump(run.manifest["spec"], sort_keys=False), encoding="utf-8")
    assert dataclasses.replace(load_spec(path), source=spec.source) == spec


def test_a_run_of_edits_from_records_notes_the_file(shared_datasets, tmp_path):
    """The manifest says which file, window and how many edits; its spec reloads to the same spec."""
    import dataclasses

    from transformers import AutoTokenizer

    import hashlib

    from keditlab.data import file_provenance
    from keditlab.models import LoadedModel, derive_profile
    from keditlab.models.embedded import ensure_embedded_cache
    from keditlab.runner import Run, run_spec
    from keditlab.spec import load_spec, spec_from_dict

    records = shared_datasets / "zsre" / "zsre_mend_train-1k.json"
    tokenizer = AutoTokenizer.from_pretrained(ensure_embedded_cache())
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = make_tiny_model("llama", vocab_size=49152)
    spec = spec_from_dict({"keditlab": 1, "name": "tiny-zsre", "method": {"name": "ft-m", "steps": 1},
                           "edits": {"records": str(records), "format": "zsre", "limit": 2, "offset": 7},
                           "evaluate": {"metrics": ["reliability"]}})
    run = Run.load(run_spec(spec, tmp_path / "runs", loaded=LoadedModel(model, tokenizer, derive_profile(model)),
                            log=lambda m: None).path)
    provenance = file_provenance(records)  # its sha256, size, and the published file it is a local copy of
    assert provenance["sha256"] == hashlib.sha256(records.read_bytes()).hexdigest()
    assert run.manifest["edits"] == {"from": "records", "records": str(records), "format": "zsre", "limit": 2,
                                     "offset": 7, "sample": None, "on_bad_record": "stop", "skipped": [], "count": 2,
                                     **provenance}
    assert run.summary["edits_from"] == "records 7-8 of zsre_mend_train-1k.json, read as zsre"
    assert "2 edits (records 7-8 of zsre_mend_train-1k.json, read as zsre)" in str(run).splitlines()[0]
    assert [r["case_id"] for r in run.cases] == ["7", "8"]
    assert undocumented(field_names(run.manifest["edits"])) == []
    path = tmp_path / "resolved.yaml"
    path.write_text(yaml.safe_dump(run.manifest["spec"], sort_keys=False), encoding="utf-8")
    assert dataclasses.replace(load_spec(path), source=spec.source) == spec


def test_the_documented_format_is_the_written_one(tiny_run):
    _, run = tiny_run
    text = DOCS.read_text(encoding="utf-8")
    assert f"format `{run.manifest['format']}`" in text and f"format `{run.summary['format']}`" in text
    json.dumps(run.manifest)
