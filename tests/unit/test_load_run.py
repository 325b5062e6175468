"""``keditlab.load_run``: the one reader of a run folder, for the command line, the notebook and the dashboards."""

from __future__ import annotations

import json

import pytest

import keditlab
from keditlab.runner import Run
from keditlab.runner.summary import MethodTally, build_summary
from keditlab.widgets import data


def saved(folder, manifest=True, summary=True, cases=True):
    tally = MethodTally("rome")
    tally.add({("reliability", "teacher_forced"): 0.0}, {("reliability", "teacher_forced"): 1.0}, 2.0, 1.0)
    folder.mkdir()
    if summary:
        (folder / "summary.json").write_text(json.dumps(build_summary("saved", "smollm2-135m", 1, {"rome": tally})))
    if cases:
        (folder / "cases.jsonl").write_text(json.dumps({"method": "rome", "case_id": "eiffel", "point": 0}) + "\n")
    if manifest:
        (folder / "manifest.json").write_text(json.dumps({"status": "complete" if summary else "running", "spec": {}}))
    return folder


def test_load_run_reopens_a_saved_run_as_the_run_object(tmp_path):
    run = keditlab.load_run(saved(tmp_path / "run"))
    assert isinstance(run, Run) and run.path == tmp_path / "run"
    assert run.metric("rome", "reliability") == 1.0
    assert run.title == "saved on smollm2-135m: 1 edits"
    assert run.cases == [{"method": "rome", "case_id": "eiffel", "point": 0}]
    assert Run.load(tmp_path / "run").summary == run.summary  # the older spelling reads the same way
    assert "FileNotFoundError" in keditlab.load_run.__doc__ and "no model" in " ".join(keditlab.load_run.__doc__.split())


def test_the_dashboards_read_runs_through_the_same_reader(tmp_path):
    folder = saved(tmp_path / "run", manifest=False)  # a folder without its manifest still has a table
    run = data.records_of(folder)
    assert isinstance(run, Run) and run.manifest == {}
    assert data.records_of(run) is run
    assert not hasattr(data, "RunRecords")


def test_a_folder_that_does_not_exist_is_named_with_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        keditlab.load_run(tmp_path / "nothing")
    assert "is not a keditlab run folder: no such folder" in str(info.value)
    assert "Fix: pass the folder a run wrote" in str(info.value)


def test_a_folder_missing_a_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        keditlab.load_run(saved(tmp_path / "run", cases=False))
    assert "not a complete keditlab run folder: missing cases.jsonl. Fix:" in str(info.value)
    with pytest.raises(FileNotFoundError, match="missing summary.json, cases.jsonl. Fix: .*not its parent"):
        keditlab.load_run(tmp_path)


def test_a_run_that_did_not_finish_opens_with_what_it_recorded(tmp_path):
    """Killed outright (status running, no summary): a partial table from its records, and how to continue it.
    tests/unit/test_run_modes.py checks the partial means against a real killed run."""
    run = keditlab.load_run(saved(tmp_path / "run", summary=False, cases=False))
    assert run.status == "running" and run.cases == [] and run.summary["measured"] == 0
    assert "PARTIAL RUN (no summary: killed outright, or still going on)" in str(run)
    assert f"Continue it with: keditlab run --resume {tmp_path / 'run'}" in str(run)
