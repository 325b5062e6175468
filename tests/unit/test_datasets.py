"""Dataset adapters on their real files (shared benchmarks) or documented-format fixtures, downloads offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from keditlab.data import (DATASETS, DatasetUnavailableError, RecordFormatError, counterfact_cases, dataset_cases,
                           get_dataset, knowedit_cases, mquake_cases, rippleedits_cases)
from keditlab.data import download
from keditlab.spec import SpecValidationError, spec_from_dict

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_counterfact_flat_format_reads_like_the_rome_one(shared_datasets):
    path = shared_datasets / "counterfact" / "easyedit" / "counterfact-val.json"
    raw = json.loads(path.read_text())[0]
    case = counterfact_cases(path, limit=1)[0]
    assert (case.prompt, case.subject, case.target, case.ground_truth) == (
        raw["prompt"], raw["subject"], raw["target_new"], raw["ground_truth"])
    assert case.rephrase == (raw["rephrase_prompt"],)
    assert [(p.prompt, p.answer) for p in case.locality] == [(raw["locality_prompt"], raw["locality_ground_truth"])]
    assert case.case_id == str(raw["case_id"])


def test_zsre_portability_file_keeps_its_portability_probe(shared_datasets):
    path = shared_datasets / "zsre" / "zsre_mend_eval_portability_gpt4.json"
    raw = json.loads(path.read_text())[3]
    case = dataset_cases("zsre", path, limit=1, offset=3)[0]
    assert [(p.prompt, p.answer) for p in case.portability] == [
        (raw["portability"]["New Question"], str(raw["portability"]["New Answer"]))]


@pytest.mark.parametrize("name,edits", [("MQuAKE-hard.json", 4), ("akew/MQuAKE-CF.json", None)])
def test_mquake_case_holds_all_its_edits_and_multi_hop_questions(shared_datasets, name, edits):
    path = shared_datasets / "mquake" / name
    raw = json.loads(path.read_text())[0]
    case = mquake_cases(path, limit=1)[0]
    rewrites = raw["requested_rewrite"]
    assert edits is None or len(rewrites) == edits
    assert [r.target for r in case.requests()] == [r["target_new"]["str"] for r in rewrites]
    assert [r.prompt for r in case.requests()] == [r["prompt"].format(r["subject"]) for r in rewrites]
    assert case.joint[0].case_id == f"{raw['case_id']}.1" if len(rewrites) > 1 else case.joint == ()
    new = [q for q in case.questions if q.group == "new"]
    assert [q.prompt for q in new] == raw["questions"]
    assert {q.answer for q in new} == {raw["new_answer"]}
    assert new[0].answers() == tuple(dict.fromkeys([raw["new_answer"], *raw["new_answer_alias"]]))
    assert {q.answer for q in case.questions if q.group == "original"} == {raw["answer"]}


def test_knowedit_groups_are_kept_by_name():
    cases = knowedit_cases(FIXTURES / "knowedit_recent.json", limit=3)
    first, second, bio = cases
    assert [(p.kind, p.group, p.answer) for p in first.portability] == [
        ("portability", "Logical_Generalization", "Argentina"), ("portability", "Reasoning", "Argentina"),
        ("portability", "Subject_Aliasing", "Buenos Aires")]
    assert first.portability[0].aliases == ("Argentine Republic",)
    assert [(p.group, p.answer) for p in first.locality] == [("Relation_Specificity", "footballer"), ("Forgetfulness", "Rosario")]
    assert (second.ground_truth, second.rephrase) == ("Bigpoint", ("Tribal Wars was developed by",))
    assert (bio.subject, bio.prompt, bio.target) == ("Ada Lovelace", "Ada Lovelace was an English mathematician",
                                                     "best known for her work on the Analytical Engine.")


def test_rippleedits_edit_and_criteria_with_conditions():
    case = rippleedits_cases(FIXTURES / "rippleedits_popular.json", limit=1)[0]
    assert (case.prompt, case.subject, case.target, case.ground_truth) == (
        "The name of the country of citizenship of Leonardo DiCaprio is", "Leonardo DiCaprio", "Syria", "United States of America")
    groups = {p.group: p for p in case.questions}
    assert set(groups) == {"Relation_Specificity", "Logical_Generalization", "Compositionality_I", "Subject_Aliasing"}
    assert groups["Compositionality_I"].conditions[0].prompt == "The name of the capital city of Syria is"
    assert groups["Compositionality_I"].answers() == ("Damascus", "Dimashq")
    assert groups["Logical_Generalization"].conditions == ()


def test_rippleedits_queries_of_one_test_share_it_with_its_condition(tmp_path):
    record = json.loads((FIXTURES / "rippleedits_popular.json").read_text(encoding="utf-8"))[0]
    alias = record["Subject_Aliasing"][0]
    second = {**alias["test_queries"][0], "prompt": alias["test_queries"][0]["prompt"].replace("Leonardo DiCaprio", "Leo DiCaprio")}
    record["Subject_Aliasing"] = [{**alias, "test_queries": [alias["test_queries"][0], second]},
                                  {**alias, "test_condition": "AND"}]
    path = tmp_path / "ripple.json"
    path.write_text(json.dumps([record]), encoding="utf-8")
    probes = [p for p in rippleedits_cases(path)[0].questions if p.group == "Subject_Aliasing"]
    assert [(p.test, p.test_condition) for p in probes] == [
        ("Subject_Aliasing/0", "OR"), ("Subject_Aliasing/0", "OR"), ("Subject_Aliasing/1", "AND")]
    record["Subject_Aliasing"][1]["test_condition"] = "XOR"
    path.write_text(json.dumps([record]), encoding="utf-8")
    with pytest.raises(RecordFormatError, match=r"record 0.*Subject_Aliasing\[1\]\.test_condition is 'XOR'; expected OR or AND"):
        rippleedits_cases(path)


@pytest.mark.parametrize("reader,file,index", [(knowedit_cases, "knowedit_recent.json", 3),
                                               (rippleedits_cases, "rippleedits_popular.json", 1)])
def test_malformed_record_is_named_by_file_and_index_and_can_be_skipped(reader, file, index):
    path = FIXTURES / file
    with pytest.raises(RecordFormatError, match=rf"{file}: record {index} is not in .*on_bad_record: skip"):
        reader(path)
    skipped: list[str] = []
    cases = reader(path, on_bad_record="skip", skipped=skipped)
    assert len(cases) == index and len(skipped) == 1 and f"record {index}" in skipped[0]


def test_malformed_mquake_record(tmp_path, shared_datasets):
    records = json.loads((shared_datasets / "mquake" / "MQuAKE-hard.json").read_text())[:3]
    del records[2]["questions"]
    (tmp_path / "mq.json").write_text(json.dumps(records))
    with pytest.raises(RecordFormatError, match=r"mq.json: record 2 is not in MQuAKE's format \(missing or malformed 'questions'\)"):
        mquake_cases(tmp_path / "mq.json")


def test_sample_is_seeded_and_stays_in_file_order(shared_datasets):
    path = shared_datasets / "counterfact" / "counterfact_500.json"
    first = dataset_cases("counterfact", path, offset=100, sample={"n": 5, "seed": 3})
    again = dataset_cases("counterfact", path, offset=100, sample={"n": 5, "seed": 3})
    other = dataset_cases("counterfact", path, offset=100, sample={"n": 5, "seed": 4})
    everything = [c.case_id for c in counterfact_cases(path)]
    assert first == again and first != other
    positions = [everything.index(c.case_id) for c in first]
    assert positions == sorted(positions) and min(positions) >= 100


def test_unknown_dataset_has_a_did_you_mean():
    with pytest.raises(RecordFormatError, match=r"unknown dataset 'mquak' \(did you mean 'mquake'\?\)"):
        get_dataset("mquak")


def test_offline_download_names_the_source_and_path(monkeypatch, tmp_path):
    monkeypatch.setenv("KEDITLAB_CACHE", str(tmp_path))

    def offline(url, folder, filename):
        raise OSError("network is unreachable")

    monkeypatch.setattr(download, "fetch_url", offline)
    url = DATASETS["mquake"].url
    with pytest.raises(DatasetUnavailableError, match=rf"could not be downloaded from its source {url} .*`path:`"):
        dataset_cases("mquake", limit=1)
    assert not list((tmp_path / "datasets").rglob("*.part"))  # no half file left behind
    with pytest.raises(SpecValidationError, match=rf"edits.dataset: .*{url}.*path:"):
        spec_from_dict({"keditlab": 1, "edits": {"dataset": "mquake", "limit": 1}})


def test_download_is_cached_once(monkeypatch, tmp_path, shared_datasets):
    """The default file is fetched once, checked against its pin, then read from the cache."""
    import dataclasses
    import hashlib

    monkeypatch.setenv("KEDITLAB_CACHE", str(tmp_path))
    data = (shared_datasets / "mquake" / "MQuAKE-hard.json").read_bytes()  # stands in for the pinned file
    monkeypatch.setitem(DATASETS, "mquake", dataclasses.replace(DATASETS["mquake"], sha256=hashlib.sha256(data).hexdigest()))
    calls = []

    def fake(url, folder, filename):  # the downloader's contract: the file, written into folder
        calls.append(url)
        (folder / filename).write_bytes(data)
        return folder / filename

    monkeypatch.setattr(download, "fetch_url", fake)
    assert len(dataset_cases("mquake", limit=2)) == 2
    assert len(dataset_cases("mquake", limit=1)) == 1
    assert calls == [DATASETS["mquake"].url]
    assert (tmp_path / "datasets" / "mquake" / "MQuAKE-CF-3k-v2.json").read_bytes() == data


def test_spec_reads_a_dataset_with_the_new_and_the_old_spelling(shared_datasets):
    path = str(shared_datasets / "zsre" / "zsre_mend_train-1k.json")
    new = spec_from_dict({"keditlab": 1, "edits": {"dataset": "zsre", "path": path, "limit": 3}})
    old = spec_from_dict({"keditlab": 1, "edits": {"records": path, "format": "zsre", "limit": 3}})
    assert new.edits == old.edits and len(new.edits) == 3
    assert new.to_spec_data()["edits"]["dataset"] == "zsre"
    again = spec_from_dict(new.to_spec_data())
    assert again.edits == new.edits


def test_spec_skip_records_the_skipped_record():
    path = str(FIXTURES / "rippleedits_popular.json")
    with pytest.raises(SpecValidationError, match=r"record 1 is not in RippleEdits' format"):
        spec_from_dict({"keditlab": 1, "edits": {"dataset": "rippleedits", "path": path}})
    spec = spec_from_dict({"keditlab": 1, "edits": {"dataset": "rippleedits", "path": path, "on_bad_record": "skip"}})
    assert len(spec.edits) == 1 and len(spec.edits_from.skipped) == 1
    assert spec.edits_origin()["skipped"][0].endswith("add edit.subject.") or "record 1" in spec.edits_origin()["skipped"][0]


def test_every_dataset_has_a_reader_and_a_summary():
    assert set(DATASETS) == {"counterfact", "zsre", "mquake", "knowedit", "rippleedits", "easyedit"}
    assert all(d.summary and (d.url is None or d.url.startswith("https://")) for d in DATASETS.values())


def test_chat_template_with_a_qa_context_is_one_clear_error():
    from keditlab.spec import validate_dict

    errors = validate_dict({"keditlab": 1, "model": {"name": "smollm2-135m", "chat_template": "on"},
                            "edits": [{"prompt": "The sky is", "subject": "sky", "target": "green"}],
                            "evaluate": {"context": "qa"}})
    assert len(errors) == 1 and errors[0].path == "evaluate.context" and "chat_template: off" in errors[0].fix
