"""``edits: {records, format, limit, offset}``: edits read from a benchmark file, and its errors.

Uses the real shared benchmark files (skipped cleanly, through the
``shared_datasets`` fixture, where they are absent).  Nothing here loads a model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from keditlab.data import DATASETS
from keditlab.data.records import counterfact_cases, zsre_cases
from keditlab.spec import EditsFile, SpecValidationError, load_spec, parse_spec, spec_from_dict, validate_dict, validate_file
from keditlab.spec.schema import load_schema

ZSRE = Path("zsre") / "zsre_mend_train-1k.json"
COUNTERFACT = Path("counterfact") / "counterfact_500.json"


def write_spec(folder: Path, edits: str, name: str = "spec.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"keditlab: 1\nmethod: rome\nedits:\n{edits}", encoding="utf-8")
    return path


def only_error(path: Path):
    errors = validate_file(path)
    assert len(errors) == 1, "\n".join(map(str, errors))
    return errors[0]


def test_format_choices_are_the_readers():
    formats = load_schema()["$defs"]["edits-file"]["properties"]["format"]["enum"]
    assert formats == list(DATASETS)


def test_zsre_records_resolve_to_the_readers_cases(shared_datasets, tmp_path):
    path = write_spec(tmp_path, f"  records: {shared_datasets / ZSRE}\n  format: zsre\n  limit: 25\n  offset: 10\n")
    spec = load_spec(path)
    expected = zsre_cases(shared_datasets / ZSRE, limit=25, offset=10)
    assert len(spec.edits) == 25
    assert spec.edits == tuple(expected)
    raw = json.loads((shared_datasets / ZSRE).read_text(encoding="utf-8"))
    first = spec.edits[0]
    assert (first.prompt, first.subject, first.target) == (raw[10]["src"], raw[10]["subject"], raw[10]["alt"])
    assert spec.edits[-1].prompt == raw[34]["src"]
    assert first.rephrase == (raw[10]["rephrase"],) and first.locality[0].answer == raw[10]["loc_ans"]
    assert spec.edits_from == EditsFile(str(shared_datasets / ZSRE), "zsre", 25, 10)
    assert spec.edits_origin() == {"from": "records", "records": str(shared_datasets / ZSRE), "format": "zsre",
                                   "limit": 25, "offset": 10, "sample": None, "on_bad_record": "stop", "skipped": [],
                                   "count": 25}


def test_without_limit_every_record_is_read(shared_datasets, tmp_path):
    # Two records of the real file have an empty new answer (`alt: ""`, records 534 and 723): no edit can be made
    # toward it, so reading the whole file stops there unless the spec says to skip such records.
    error = only_error(write_spec(tmp_path, f"  records: {shared_datasets / ZSRE}\n  format: zsre\n"))
    assert (error.path, error.line) == ("edits.records", 4)
    assert "record 534 of" in error.message and "alt is an empty string" in error.message and "on_bad_record: skip" in error.fix
    spec = load_spec(write_spec(tmp_path, f"  records: {shared_datasets / ZSRE}\n  format: zsre\n  on_bad_record: skip\n"))
    assert len(spec.edits) == 998
    assert [message.split(": ")[1] for message in spec.edits_from.skipped] == ["record 534", "record 723"]
    assert spec.edits_from.limit is None and spec.edits_from.offset == 0
    assert [case.case_id for case in spec.edits[:3]] == ["0", "1", "2"]


def test_counterfact_records_resolve(shared_datasets, tmp_path):
    spec = load_spec(write_spec(tmp_path, f"  records: {shared_datasets / COUNTERFACT}\n  format: counterfact\n  limit: 5\n"))
    assert spec.edits == tuple(counterfact_cases(shared_datasets / COUNTERFACT, limit=5))
    raw = json.loads((shared_datasets / COUNTERFACT).read_text(encoding="utf-8"))[0]["requested_rewrite"]
    assert spec.edits[0].prompt == raw["prompt"].format(raw["subject"])
    assert (spec.edits[0].target, spec.edits[0].ground_truth) == (raw["target_new"]["str"], raw["target_true"]["str"])


def test_relative_path_is_read_from_the_spec_files_folder(shared_datasets, tmp_path):
    data = tmp_path / "benchmarks" / "zsre.json"
    data.parent.mkdir()
    data.write_text((shared_datasets / ZSRE).read_text(encoding="utf-8"), encoding="utf-8")
    path = write_spec(tmp_path / "specs" / "deep", "  records: ../../benchmarks/zsre.json\n  format: zsre\n  limit: 3\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cwd = os.getcwd()
    os.chdir(elsewhere)  # the current folder must not matter for a spec file
    try:
        spec = load_spec(path)
    finally:
        os.chdir(cwd)
    assert spec.edits_from.path == str(data)
    assert len(spec.edits) == 3


def test_resolved_spec_round_trips_with_an_absolute_path(shared_datasets, tmp_path):
    spec = load_spec(write_spec(tmp_path, f"  records: {shared_datasets / ZSRE}\n  format: zsre\n  limit: 4\n"))
    data = spec.to_spec_data()
    assert data["edits"] == {"dataset": "zsre", "path": str(shared_datasets / ZSRE), "limit": 4, "offset": 0,
                             "on_bad_record": "stop"}
    again = spec_from_dict(data, source=str(spec.source))
    assert again == spec


def test_a_dict_spec_reads_a_relative_path_from_the_current_folder(shared_datasets, monkeypatch):
    monkeypatch.chdir(shared_datasets)
    spec = spec_from_dict({"keditlab": 1, "edits": {"records": str(ZSRE), "format": "zsre", "limit": 2}})
    assert spec.edits_from.path == str(shared_datasets / ZSRE) and len(spec.edits) == 2


def test_the_window_read_is_described_for_titles(shared_datasets, tmp_path):
    spec = load_spec(write_spec(tmp_path, f"  records: {shared_datasets / ZSRE}\n  format: zsre\n  limit: 100\n  offset: 200\n"))
    assert spec.edits_from.describe(len(spec.edits)) == "records 200-299 of zsre_mend_train-1k.json, read as zsre"
    assert spec.edits_from.describe(1) == "record 200 of zsre_mend_train-1k.json, read as zsre"


# -- errors -------------------------------------------------------------------------------


def test_missing_file_names_both_paths_and_the_fix(tmp_path):
    path = write_spec(tmp_path / "specs", "  records: ../data/zsre.json\n  format: zsre\n")
    error = only_error(path)
    text = str(error)
    assert (error.path, error.line, error.column) == ("edits.records", 4, 12)
    assert "records file '../data/zsre.json' does not exist" in text
    assert f"looked for {tmp_path / 'data' / 'zsre.json'}" in text
    assert "Fix:" in text and f"read from the spec file's folder, {tmp_path / 'specs'}" in text


def test_missing_file_suggests_a_close_name(shared_datasets, tmp_path):
    error = only_error(write_spec(tmp_path, f"  records: {shared_datasets / 'zsre' / 'zsre_mend_train-1K.json'}\n  format: zsre\n"))
    assert "did you mean 'zsre_mend_train-1k.json'?" in error.fix


def test_a_folder_is_not_a_records_file(tmp_path):
    (tmp_path / "data").mkdir()
    error = only_error(write_spec(tmp_path, "  records: data\n  format: zsre\n"))
    assert error.path == "edits.records" and "is a folder" in error.message and "JSON file" in error.fix


def test_unknown_format_suggests_the_closest(tmp_path):
    (tmp_path / "x.json").write_text("[]", encoding="utf-8")
    error = only_error(write_spec(tmp_path, "  records: x.json\n  format: zsr\n"))
    assert (error.path, error.line) == ("edits.format", 5)
    assert "unknown dataset 'zsr' (did you mean 'zsre'?)" in error.message
    assert "write 'zsre'" in error.fix and "counterfact, zsre, mquake, knowedit, rippleedits, easyedit" in error.fix


def test_validate_reports_a_missing_file_and_a_bad_format_together_without_a_model(tmp_path):
    path = write_spec(tmp_path, "  records: nowhere.json\n  format: counterfactual\n  limit: 0\n")
    code = ("import sys; from keditlab.spec import validate_file; "
            f"errors = validate_file({str(path)!r}); print(len(errors)); "
            "[print(e) for e in errors]; "
            "assert not any(m.startswith(('torch', 'keditlab.models', 'keditlab.methods', 'keditlab.runner')) for m in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    lines = result.stdout.splitlines()
    assert lines[0] == "3", result.stdout
    assert "edits.records: records file 'nowhere.json' does not exist" in result.stdout
    assert "unknown dataset 'counterfactual' (did you mean 'counterfact'?)" in result.stdout
    assert "edits.limit: limit must be at least 1, got 0" in result.stdout


def test_unknown_key_and_missing_format(tmp_path):
    (tmp_path / "x.json").write_text("[]", encoding="utf-8")
    errors = validate_file(write_spec(tmp_path, "  records: x.json\n  ofset: 3\n"))
    text = "\n".join(map(str, errors))
    assert "unknown key 'ofset' (did you mean 'offset'?)" in text
    assert "edits read from a benchmark need `dataset`" in text


def test_unparsable_json_is_one_line_without_a_traceback(tmp_path):
    (tmp_path / "bad.json").write_text('[{"src": "a",\n', encoding="utf-8")
    path = write_spec(tmp_path, "  records: bad.json\n  format: zsre\n")
    error = only_error(path)
    assert (error.path, error.line) == ("edits.records", 4)
    assert "cannot read 'bad.json' as zsre records: it is not valid JSON" in error.message
    assert "line 2" in error.message and "\n" not in str(error)
    assert "JSON list of zsre records" in error.fix
    with pytest.raises(SpecValidationError) as raised:
        load_spec(path)
    assert raised.value.errors == [error]


def test_records_of_another_format_name_the_record_and_the_readers_fix(shared_datasets, tmp_path):
    error = only_error(write_spec(tmp_path, f"  records: {shared_datasets / ZSRE}\n  format: counterfact\n"))
    assert error.path == "edits.records"
    assert "as counterfact records: record 0 is not in CounterFact's ROME or flat format" in error.message
    assert "'requested_rewrite'" in error.message and error.message.count(str(shared_datasets)) == 1
    assert "edits.dataset picks the reader: zsre, mquake" in error.fix


def test_a_json_mapping_is_not_a_list_of_records(tmp_path):
    (tmp_path / "one.json").write_text('{"src": "a"}', encoding="utf-8")
    error = only_error(write_spec(tmp_path, "  records: one.json\n  format: zsre\n"))
    assert "expected a JSON list of records, found dict" in error.message


def test_offset_past_the_end_says_how_many_records_there_are(shared_datasets, tmp_path):
    error = only_error(write_spec(tmp_path, f"  records: {shared_datasets / ZSRE}\n  format: zsre\n  offset: 1000\n  limit: 5\n"))
    assert (error.path, error.line) == ("edits.offset", 6)
    assert "offset 1000 is past the end" in error.message and "which has 1000 records" in error.message
    assert "give an offset below 1000" in error.fix


def test_errors_of_a_dict_spec_name_the_field(tmp_path):
    errors = validate_dict({"keditlab": 1, "edits": {"records": str(tmp_path / "none.json"), "format": "zsre"}})
    assert [(e.path, e.line) for e in errors] == [("edits.records", None)]
    with pytest.raises(SpecValidationError, match="does not exist"):
        parse_spec(f"keditlab: 1\nedits: {{records: {tmp_path / 'none.json'}, format: zsre}}\n")


def test_stats_unrelated_reads_records_and_writes_back_in_the_spec_language(shared_datasets, tmp_path):
    zsre = shared_datasets / ZSRE
    path = write_spec(tmp_path, f"  records: {zsre}\n  format: zsre\n  limit: 5\n")
    path.write_text(path.read_text(encoding="utf-8")
                    + f"stats:\n  unrelated: {{dataset: zsre, path: {zsre}, offset: 900, limit: 20}}\n", encoding="utf-8")
    spec = load_spec(path)
    assert spec.stats.unrelated == EditsFile(str(zsre), "zsre", 20, 900)
    data = spec.to_spec_data()
    assert data["stats"]["unrelated"] == {"dataset": "zsre", "path": str(zsre), "limit": 20, "offset": 900, "on_bad_record": "stop"}
    assert validate_dict(data) == [] and spec_from_dict(data).stats == spec.stats


def test_stats_unrelated_with_a_missing_file_is_an_error_on_its_line(tmp_path):
    path = write_spec(tmp_path, "  - {prompt: a b, subject: a, target: c}\n")
    path.write_text(path.read_text(encoding="utf-8") + "stats:\n  unrelated: {dataset: zsre, path: nowhere.json}\n", encoding="utf-8")
    error = only_error(path)
    assert error.path == "stats.unrelated.path" and "nowhere.json" in error.message and error.line == 6, error


def test_unrelated_pairs_leave_out_every_question_the_run_measures(shared_datasets, tmp_path):
    from keditlab.runner.run import unrelated_pairs

    zsre = shared_datasets / ZSRE
    raw = json.loads(zsre.read_text(encoding="utf-8"))
    path = write_spec(tmp_path, f"  records: {zsre}\n  format: zsre\n  limit: 3\n")
    path.write_text(path.read_text(encoding="utf-8") + f"stats:\n  unrelated: {{dataset: zsre, path: {zsre}, limit: 6}}\n",
                    encoding="utf-8")
    spec = load_spec(path)
    pairs = unrelated_pairs(spec, spec.edits)
    assert pairs == tuple((r["loc"], r["loc_ans"]) for r in raw[3:6])   # records 0-2 are the run's own: their probes are measured
    assert unrelated_pairs(load_spec(write_spec(tmp_path / "plain", f"  records: {zsre}\n  format: zsre\n  limit: 3\n")), ()) == ()
