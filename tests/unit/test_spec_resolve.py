"""A valid spec becomes a Spec with every default filled in, from YAML text, a file or a dict."""

from __future__ import annotations

import textwrap

import pytest

from keditlab.spec import (
    EvalSpec,
    MethodSpec,
    ModelSpec,
    Probe,
    RunSettings,
    SpecValidationError,
    StatsSpec,
    load_spec,
    parse_spec,
    spec_from_dict,
)
from keditlab.vocabulary import DEFAULT_METRICS

FULL = textwrap.dedent(
    """\
    keditlab: 1
    name: quickstart
    model: {name: smollm2-135m, dtype: float32, profile: {layers: model.layers, mlp_out_transposed: false}}
    method:
      - rome
      - {name: rome, label: rome-l5, layer: 5, v_steps: 20}
      - {name: ft-l, layers: [3, 4], norm_constraint: null}
    edits:
      - prompt: "The Eiffel Tower is located in the city of"
        subject: Eiffel Tower
        target: Rome
        ground_truth: Paris
        rephrase: ["The Eiffel Tower can be found in the city of"]
        locality:    [{prompt: "The capital of France is", answer: Paris}]
        portability: [{prompt: "The Eiffel Tower is located in the country of", answer: Italy}]
        id: eiffel
      - prompt: "The Louvre is in"
        subject: Louvre
        target: Berlin
        rephrase: "The Louvre can be found in"
        id: 7
    evaluate: {metrics: [reliability, locality], max_new_tokens: 8}
    stats: {samples: 1000}
    run: {seed: 3, device: cpu, out: runs/x}
    """
)

MINIMAL = "keditlab: 1\nedits:\n  - {prompt: The sky is, subject: sky, target: green}\n"


def test_full_spec_resolves():
    spec = parse_spec(FULL, "specs/full.yaml")
    assert spec.name == "quickstart"
    assert spec.model == ModelSpec("smollm2-135m", "float32", {"layers": "model.layers", "mlp_out_transposed": False})
    assert spec.methods == (
        MethodSpec("rome", {}, "rome"),
        MethodSpec("rome", {"layer": 5, "v_steps": 20}, "rome-l5"),
        MethodSpec("ft-l", {"layers": [3, 4], "norm_constraint": None}, "ft-l"),
    )
    eiffel, louvre = spec.edits
    assert eiffel.case_id == "eiffel" and louvre.case_id == "7"
    assert eiffel.ground_truth == "Paris" and louvre.ground_truth is None
    assert eiffel.rephrase == ("The Eiffel Tower can be found in the city of",)
    assert louvre.rephrase == ("The Louvre can be found in",)
    assert eiffel.locality == (Probe("locality", "The capital of France is", "Paris"),)
    assert eiffel.portability == (Probe("portability", "The Eiffel Tower is located in the country of", "Italy"),)
    assert [p.kind for p in eiffel.probes()] == ["rephrase", "locality", "portability"]
    assert spec.evaluate == EvalSpec(("reliability", "locality"), 8, 16)
    assert spec.stats == StatsSpec("model-samples", 1000, 64)
    assert spec.run == RunSettings(3, "cpu", "runs/x")
    assert spec.version == 1 and spec.source == "specs/full.yaml"


def test_defaults_are_filled_in(tmp_path):
    path = tmp_path / "my-experiment.yaml"
    path.write_text(MINIMAL)
    spec = load_spec(path)
    assert spec.name == "my-experiment"  # the file's stem
    assert spec.model == ModelSpec()
    assert spec.methods == (MethodSpec("rome"),)
    (case,) = spec.edits
    assert (case.case_id, case.rephrase, case.locality, case.portability) == ("0", (), (), ())
    assert spec.evaluate == EvalSpec() and spec.evaluate.metrics == DEFAULT_METRICS
    assert spec.stats == StatsSpec() and spec.run == RunSettings()
    assert spec.source == str(path)


def test_evaluate_as_list_and_model_as_string():
    spec = parse_spec(MINIMAL + "evaluate: [fluency]\nmodel: gpt2\nmethod: {name: ft-m}\n")
    assert spec.evaluate == EvalSpec(metrics=("fluency",))
    assert spec.model == ModelSpec(name="gpt2")
    assert spec.methods == (MethodSpec("ft-m", {}, "ft-m"),)
    assert spec.name == "spec"


def test_to_dict_is_json_ready():
    import json

    data = parse_spec(FULL).to_dict()
    assert data["keditlab"] == 1
    json.dumps(data)


def test_spec_from_dict_accepts_tuples_and_matches_yaml():
    import yaml

    data = yaml.safe_load(FULL)
    data["edits"] = tuple(data["edits"])
    assert spec_from_dict(data) == parse_spec(FULL, "<dict>")


def test_spec_from_dict_does_not_change_its_input():
    data = {"keditlab": 1, "edits": [{"prompt": "The sky is", "subject": "sky", "target": "green"}]}
    before = repr(data)
    spec_from_dict(data)
    assert repr(data) == before


def test_load_spec_raises_with_every_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("keditlab: 1\nmetod: rome\nedits: []\n")
    with pytest.raises(SpecValidationError) as info:
        load_spec(path)
    assert [e.line for e in info.value.errors] == [2, 3]


def test_layer_inside_range_is_fine():
    spec = parse_spec(MINIMAL + "method: {name: rome, layer: 29}\n", num_layers_of=lambda model: 30)
    assert spec.methods[0].params == {"layer": 29}


def test_yaml_merge_keys_work():
    text = MINIMAL + "method:\n  - &base {name: rome, v_steps: 5, label: a}\n  - {<<: *base, label: b}\n"
    spec = parse_spec(text)
    assert [m.params for m in spec.methods] == [{"v_steps": 5}, {"v_steps": 5}]
    assert [m.label for m in spec.methods] == ["a", "b"]


def _written_back(spec, tmp_path):
    """``spec.to_spec_data()`` saved as YAML, as a user would save it, and its path."""
    import yaml

    path = tmp_path / "resolved.yaml"
    path.write_text(yaml.safe_dump(spec.to_spec_data(), sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize("which", ["quickstart", "full", "minimal"])
def test_resolved_spec_is_valid_spec_language_and_resolves_to_the_same_spec(which, tmp_path):
    import dataclasses
    import json
    from pathlib import Path

    from keditlab.spec import validate_file

    if which == "quickstart":
        spec = load_spec(Path(__file__).resolve().parents[2] / "specs" / "quickstart.yaml")
    else:
        spec = parse_spec(FULL if which == "full" else MINIMAL, "specs/x.yaml")
    json.dumps(spec.to_spec_data())  # what the manifest stores
    path = _written_back(spec, tmp_path)
    assert validate_file(path, num_layers_of=lambda model: 30) == []
    again = load_spec(path)
    assert dataclasses.replace(again, source=spec.source) == spec


def test_resolved_spec_writes_every_default_in_spec_keys():
    data = parse_spec(MINIMAL).to_spec_data()
    assert data == {
        "keditlab": 1,
        "name": "spec",
        "model": {"name": "smollm2-135m", "dtype": "auto", "chat_template": "auto"},
        "method": [{"name": "rome", "label": "rome"}],
        "edits": [{"id": "0", "prompt": "The sky is", "subject": "sky", "target": "green",
                   "rephrase": [], "locality": [], "portability": []}],
        "evaluate": {"metrics": list(DEFAULT_METRICS), "max_new_tokens": 24, "batch_size": 16,
                     "protocols": ["teacher_forced", "probability", "generation"], "context": "bare", "answer_tokens": 50},
        "stats": {"corpus": "model-samples", "samples": "auto", "max_length": 64},
        "run": {"seed": 0, "device": "auto", "out": None, "mode": "single", "batch_size": 1},
    }
    full = parse_spec(FULL).to_spec_data()
    assert full["method"][2] == {"name": "ft-l", "label": "ft-l", "layers": [3, 4], "norm_constraint": None}
    assert full["edits"][0]["locality"] == [{"prompt": "The capital of France is", "answer": "Paris"}]
    assert full["edits"][1]["id"] == "7" and "ground_truth" not in full["edits"][1]
    assert full["model"]["profile"] == {"layers": "model.layers", "mlp_out_transposed": False}
