"""The ``sweep:`` section: the grid it expands to, its labels and exclusions, and its errors (with coordinates)."""

from __future__ import annotations

import textwrap

import pytest

from keditlab.spec import SpecValidationError, load_sweep, parse_spec, parse_sweep, validate_text
from keditlab.spec.sweep import parse_key, value_label
from tests.conftest import only_spec_error, spec_errors

BASE = """\
keditlab: 1
name: grid
model: smollm2-135m
edits:
  - {prompt: "The Eiffel Tower is in", subject: "Eiffel Tower", target: Rome}
"""


def sweep(text: str):
    return parse_sweep(BASE + textwrap.dedent(text), "grid.yaml")


def test_the_grid_is_the_product_in_the_order_written_less_the_exclusions():
    grid = sweep("""\
        sweep:
          method: [rome, {name: ft-m, label: ft-m-5, steps: 5}, memit]
          run.seed: [0, 1]
          exclude:
            - {method: ft-m-5, run.seed: 1}
            - {method: [rome, memit], run.seed: 0}
        """)
    assert [cell.label for cell in grid.cells] == ["method=rome, run.seed=1", "method=ft-m-5, run.seed=0",
                                                   "method=memit, run.seed=1"]
    assert grid.grid.excluded == 3 and len(grid) == 3
    assert [cell.index for cell in grid.cells] == [0, 1, 2]
    specs = dict(zip((cell.label for cell in grid.cells), grid.specs))
    assert specs["method=ft-m-5, run.seed=0"].methods[0].params == {"steps": 5}
    assert specs["method=rome, run.seed=1"].run.seed == 1
    assert all(spec.name == "grid" for spec in grid.specs)
    assert grid.cells[1].slug == "001-ft-m-5-0"


def test_a_setting_path_reaches_inside_a_method_written_as_a_name_and_every_section():
    grid = sweep("""\
        method: rome
        evaluate: [reliability]
        sweep:
          method.layer: [2, 4]
          evaluate.max_new_tokens: [4]
          edits[0].target: [Rome, Berlin]
        """)
    assert [(s.methods[0].name, s.methods[0].params["layer"], s.evaluate.max_new_tokens, s.edits[0].target)
            for s in grid.specs] == [("rome", 2, 4, "Rome"), ("rome", 2, 4, "Berlin"), ("rome", 4, 4, "Rome"),
                                     ("rome", 4, 4, "Berlin")]
    assert grid.specs[0].evaluate.metrics == ("reliability",)


def test_edit_sources_are_labelled_by_dataset_and_told_apart_by_file(shared_datasets):
    grid = sweep("""\
        sweep:
          edits:
            - {dataset: counterfact, file: counterfact/counterfact_500.json, limit: 2}
            - {dataset: counterfact, file: counterfact/easyedit/counterfact-val.json, limit: 2}
            - {dataset: zsre, file: zsre/zsre_mend_train-1k.json, limit: 2}
        """)
    assert [label for cell in grid.cells for _, label in cell.coords] == [
        "counterfact:counterfact_500", "counterfact:counterfact-val", "zsre"]
    assert [len(spec.edits) for spec in grid.specs] == [2, 2, 2]


def test_labels_and_keys():
    assert value_label({"name": "rome", "layer": 3}) == "rome"
    assert value_label({"name": "rome", "label": "rome-3"}) == "rome-3"
    assert value_label([{"name": "rome"}, "ft-m"]) == "rome+ft-m"
    assert value_label(True) == "true" and value_label(0.5) == "0.5"
    assert value_label("/models/gemma-3-270m/") == "gemma-3-270m" and value_label("Qwen/Qwen3-0.6B") == "Qwen3-0.6B"
    assert parse_key("method[1].layers") == ("method", 1, "layers")
    assert parse_key("run..seed") is None and parse_key("run.seed[x]") is None


def test_an_invalid_cell_is_named_by_its_coordinates_at_the_line_of_the_value_that_makes_it():
    text = BASE + textwrap.dedent("""\
        sweep:
          method: [rome, ft-m]
          run.mode: [single, batch]
          run.seed: [0, 1]
        """)
    error = only_spec_error(text)
    assert (error.line, error.path) == (7, "method")            # rome's line in the sweep
    assert error.message.startswith("in the 2 cells with method=rome, run.mode=batch (of 8): ")
    assert "line 8" in error.message and "cannot apply several edits in one call" in error.message


def test_an_error_every_cell_shares_is_reported_once_without_coordinates():
    text = BASE.replace("subject: \"Eiffel Tower\"", "subject: \"Big Ben\"") + "sweep:\n  run.seed: [0, 1, 2]\n"
    error = only_spec_error(text)
    assert error.line == 5 and error.message.startswith("subject 'Big Ben' does not occur in the prompt")


def test_a_typo_in_a_swept_path_gets_did_you_mean_at_the_sweep_key():
    error = only_spec_error(BASE + "sweep:\n  run.seed: [0, 1]\n  modle: [a]\n")
    assert str(error).startswith("bad.yaml:8:3: sweep.modle: `modle` is not a section of a spec (did you mean 'model'?)")
    # a well-formed section's paths are checked in its cells, by the schema, at the sweep's key
    text = "\n".join(map(str, spec_errors(BASE + "sweep:\n  run.sead: [0, 1]\n  method.layers: [[3]]\n")))
    assert "bad.yaml:7:3: run.sead: unknown key 'sead' (did you mean 'seed'?)" in text
    assert "bad.yaml:8:3: method.layers: unknown setting 'layers' for method 'rome' (did you mean 'layer'?)" in text


@pytest.mark.parametrize("section, message", [
    ("sweep: [rome]", "must map spec paths to lists of values"),
    ("sweep:\n  method: rome", "the values of `method` must be a non-empty list"),
    ("sweep:\n  method: []", "the values of `method` must be a non-empty list"),
    ("sweep:\n  method: [rome, rome]", "takes this value twice"),
    ("sweep:\n  name: [a, b]", "`name` cannot be swept"),
    ("sweep:\n  run seed: [1]", "is not a spec path"),
    ("sweep:\n  method: [rome, ft-m]\n  method.layer: [1]", "`method.layer` lies inside `method`"),
    ("sweep:\n  method: [rome, ft-m]\n  exclude: [{methd: rome}]", "`methd` is not swept (did you mean 'method'?)"),
    ("sweep:\n  method: [rome, ft-m]\n  exclude: [{method: rom}]", "`method` never takes 'rom' (did you mean 'rome'?)"),
    ("sweep:\n  method: [rome]\n  exclude: [{method: rome}]", "`exclude` leaves none of the 1 cells"),
    ("sweep:\n  exclude: []", "names no spec path to vary"),
    ("method: [rome, ft-m]\nsweep:\n  method.layer: [1]", "`method` is a list of 2 here"),
])
def test_a_malformed_sweep_section_says_what_and_how_to_fix(section, message):
    errors = spec_errors(BASE + section + "\n")
    assert errors and any(message in str(e) for e in errors), "\n".join(map(str, errors))
    assert all(e.line is not None and e.fix for e in errors), "\n".join(map(str, errors))


def test_a_sweep_is_refused_where_one_run_is_meant_and_a_plain_spec_is_a_sweep_of_one_cell(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(BASE + "sweep:\n  run.seed: [0, 1]\n", encoding="utf-8")
    assert validate_text(path.read_text(), "grid.yaml") == []
    with pytest.raises(SpecValidationError, match=r"a sweep of 2 cells, not one run.*keditlab sweep"):
        parse_spec(path.read_text(), str(path))
    assert len(load_sweep(path)) == 2
    one = parse_sweep(BASE, "one.yaml")
    assert len(one) == 1 and one.cells[0].coords == () and one.specs[0].name == "grid"


def test_a_bundle_sets_several_paths_together_as_one_coordinate():
    text = BASE + textwrap.dedent("""\
        sweep:
          method: [rome, ft-m]
          part:
            - {label: short, evaluate: {metrics: [reliability]}, run.seed: 3}
            - {evaluate: {metrics: [reliability, locality], max_new_tokens: 4}}
        """)
    grid = parse_sweep(text, "grid.yaml")
    assert [cell.label for cell in grid.cells] == ["method=rome, part=short", "method=rome, part=metrics=reliability+locality,max_new_tokens=4",
                                                   "method=ft-m, part=short", "method=ft-m, part=metrics=reliability+locality,max_new_tokens=4"]
    assert [(s.evaluate.metrics, s.run.seed) for s in grid.specs[:2]] == [(("reliability",), 3),
                                                                        (("reliability", "locality"), 0)]
    # an error inside a bundle's value is placed at its line; a key that is no spec path is named with did-you-mean
    error = only_spec_error(text.replace("max_new_tokens: 4", "max_new_tokens: -4"))
    assert error.line == 10 and error.path == "evaluate.max_new_tokens"
    assert error.message.startswith("in the 2 cells with part=") and error.fix
    error = only_spec_error(text.replace("run.seed: 3", "evalute.protocols: [generation]"))
    assert error.line == 9 and "`evalute.protocols` is not a spec path a sweep can set (did you mean 'evaluate'?)" in error.message
    error = only_spec_error(text + "  run.seed: [1, 2]\n")
    assert "`run.seed` sets `run.seed`, inside `run.seed`, which `part` also sets" in error.message


def test_a_published_file_out_of_reach_is_tried_once_for_all_the_cells_that_read_it(monkeypatch, tmp_path):
    from keditlab.data import download

    monkeypatch.setenv("KEDITLAB_CACHE", str(tmp_path))
    monkeypatch.delenv("KEDITLAB_DATASETS", raising=False)
    calls = []

    def offline(url, folder, filename):
        calls.append(url)
        raise OSError("no network")

    monkeypatch.setattr(download, "fetch_url", offline)
    monkeypatch.setattr(download, "fetch_hub", lambda file, folder: offline(file, folder, ""))
    text = BASE.split("edits:")[0] + textwrap.dedent("""\
        edits: {dataset: counterfact, file: counterfact/counterfact_500.json, limit: 2}
        sweep:
          method: [rome, ft-m]
          run.seed: [0, 1, 2]
        """)
    with pytest.raises(SpecValidationError) as caught:
        parse_sweep(text, "grid.yaml")
    assert len(calls) == 1 and len(caught.value.errors) == 1
    assert "could not be downloaded" in str(caught.value.errors[0]) and "in the" not in caught.value.errors[0].message
