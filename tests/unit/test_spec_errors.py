"""Bad specs: each must be reported with the right message, at the right line and column.

Every case is a small YAML text; the error expected is given by its field path,
1-based line and column (None: not checked), and fragments its message must contain.
"""

from __future__ import annotations

import textwrap

import pytest

from keditlab.spec import SpecValidationError, parse_spec, validate_file
from tests.conftest import only_spec_error, spec_errors

EDIT = """\
edits:
  - prompt: "The Eiffel Tower is located in the city of"
    subject: Eiffel Tower
    target: Rome
"""


def thirty_layers(model: str) -> int:
    return 30


errors_of, only_error = spec_errors, only_spec_error


# (id, yaml, path, line, column, fragments)
CASES = [
    (
        "yaml-syntax",
        'keditlab: 1\nedits:\n  - prompt: "unclosed\n    subject: x\n',
        "", 5, 1, ["YAML syntax error", "quoted scalar", "line 3, column 13"],
    ),
    (
        "yaml-unclosed-bracket",
        "keditlab: 1\nevaluate: [reliability, fluency\nedits: []\n",
        "", 3, 6, ["YAML syntax error", "flow sequence at line 2, column 11", "close the '['"],
    ),
    (
        "unknown-top-level-key",
        "keditlab: 1\nmetod: rome\n" + EDIT,
        "metod", 2, 1, ["unknown key 'metod'", "did you mean 'method'?", "Allowed keys here: keditlab, name, model, method"],
    ),
    (
        "unknown-key-in-edit",
        "keditlab: 1\n" + EDIT + "    subjet: Tower\n",
        "edits[0].subjet", 6, 5, ["unknown key 'subjet'", "did you mean 'subject'?", "ground_truth"],
    ),
    (
        "edits-not-a-list",
        'keditlab: 1\nedits: "abc"\n',
        "edits", 2, 8, ["expected a list or a mapping", "got the text 'abc'", "edits: {dataset: counterfact, path: abc}"],
    ),
    (
        "one-edit-as-a-mapping",  # the '- ' forgotten: the mapping is an edit, not a records file
        "keditlab: 1\nedits:\n  prompt: The sky is\n  subject: sky\n  target: green\n",
        "edits", 3, 3, ["expected a list, got a mapping", "one '- item' line per entry"],
    ),
    (
        "one-edit-as-a-mapping-with-a-typo",
        "keditlab: 1\nedits:\n  prompt: The sky is\n  subjet: sky\n  target: green\n",
        "edits", 3, 3, ["expected a list, got a mapping"],
    ),
    (
        "seed-not-an-integer",
        "keditlab: 1\nrun: {seed: zero}\n" + EDIT,
        "run.seed", 2, 13, ["expected a whole number, got the text 'zero'", "seed: 0"],
    ),
    (
        "missing-edits",
        "keditlab: 1\nmodel: smollm2-135m\n",
        "", 1, 1, ["missing required key 'edits'", "edits: ["],
    ),
    (
        "missing-version",
        "model: smollm2-135m\n" + EDIT,
        "", 1, 1, ["missing required key 'keditlab'", "add `keditlab: 1`"],
    ),
    (
        "wrong-version",
        "keditlab: 2\n" + EDIT,
        "keditlab", 1, 11, ["unsupported spec language version 2", "reads version 1", "keditlab: 1"],
    ),
    (
        "unknown-method",
        "keditlab: 1\nmethod: rom\n" + EDIT,
        "method", 2, 9, ["unknown editing method 'rom'", "did you mean 'rome'?", "ft-l, ft-m, grace, ike, kn, locft-bf, lora, memit, mend, r-rome, rome, serac, t-patcher, ultraedit, wise"],
    ),
    (
        "unknown-method-in-list",
        "keditlab: 1\nmethod:\n  - rome\n  - {name: ft_l}\n" + EDIT,
        "method[1].name", 4, 12, ["unknown editing method 'ft_l'", "did you mean 'ft-l'?"],
    ),
    (
        "unknown-method-setting",
        "keditlab: 1\nmethod: {name: rome, v_step: 20}\n" + EDIT,
        "method.v_step", 2, 22, ["unknown setting 'v_step' for method 'rome'", "did you mean 'v_steps'?", "Settings of rome:"],
    ),
    (
        "unknown-metric",
        "keditlab: 1\n" + EDIT + "evaluate: [reliabilty, fluency]\n",
        "evaluate[0]", 6, 12, ["unknown metric 'reliabilty'", "did you mean 'reliability'?"],
    ),
    (
        "subject-not-in-prompt",
        'keditlab: 1\nedits:\n  - prompt: "The Eiffel Tower is located in the city of"\n    subject: Eifel Tower\n    target: Rome\n',
        "edits[0].subject", 4, 14, ["subject 'Eifel Tower' does not occur in the prompt", "e.g. 'Eiffel Tower'"],
    ),
    (
        "subject-case-mismatch",
        'keditlab: 1\nedits:\n  - prompt: "The Eiffel Tower is located in the city of"\n    subject: eiffel tower\n    target: Rome\n',
        "edits[0].subject", 4, 14, ["does not occur in the prompt", "different capitalisation: 'Eiffel Tower'"],
    ),
    (
        "empty-target",
        'keditlab: 1\nedits:\n  - prompt: "The Eiffel Tower is located in the city of"\n    subject: Eiffel Tower\n    target: "  "\n',
        "edits[0].target", 5, 13, ["target is empty", 'target: <the new answer to "The Eiffel Tower is located in the city of">'],
    ),
    (
        "empty-prompt",
        'keditlab: 1\nedits:\n  - prompt: ""\n    subject: Eiffel Tower\n    target: Rome\n',
        "edits[0].prompt", 3, 13, ["prompt is empty"],
    ),
    (
        "layer-out-of-range",
        "keditlab: 1\nmethod: {name: rome, layer: 31}\n" + EDIT,
        "method.layer", 2, 29, ["layer 31 is out of range", "smollm2-135m has 30 layers, numbered 0 to 29"],
    ),
    (
        "layer-in-list-out-of-range",
        "keditlab: 1\nmodel: gpt2\nmethod:\n  - name: ft-l\n    layers: [3, 30]\n" + EDIT,
        "method[0].layers[1]", 5, 17, ["layer 30 is out of range", "gpt2 has 30 layers"],
    ),
    (
        "negative-layer",
        "keditlab: 1\nmethod: {name: rome, layer: -1}\n" + EDIT,
        "method.layer", 2, 29, ["layer -1 is negative", "numbered from 0"],
    ),
    (
        "duplicate-method-labels",
        "keditlab: 1\nmethod:\n  - {name: rome, label: a, layer: 3}\n  - {name: rome, label: a, layer: 5}\n" + EDIT,
        "method[1].label", 4, 25, ["two methods are labelled 'a'", "method[0] and method[1]"],
    ),
    (
        "duplicate-default-labels",
        "keditlab: 1\nmethod: [rome, rome]\n" + EDIT,
        "method[1]", 2, 16, ["two methods are labelled 'rome'"],
    ),
    (
        "locality-probe-missing-answer",
        "keditlab: 1\n" + EDIT + '    locality:\n      - prompt: "The capital of France is"\n',
        "edits[0].locality[0]", 7, 9, ["missing required key 'answer'"],
    ),
    (
        "duplicate-yaml-key",
        "keditlab: 1\n" + EDIT + "    target: Berlin\n",
        "edits[0].target", 6, 5, ["duplicate key 'target'", "first given at line 5"],
    ),
    (
        "unquoted-boolean-target",
        'keditlab: 1\nedits:\n  - prompt: "Is the sky green? The answer is"\n    subject: sky\n    target: no\n',
        "edits[0].target", 5, 13, ["expected text, got no, which YAML reads as false", 'target: "no"'],
    ),
    (
        "model-wrong-type",
        "keditlab: 1\nmodel: [smollm2-135m]\n" + EDIT,
        "model", 2, 8, ["expected text or a mapping", "got a list of 1 item"],
    ),
    (
        "unknown-dtype",
        "keditlab: 1\nmodel: {name: smollm2-135m, dtype: bf16}\n" + EDIT,
        "model.dtype", 2, 36, ["unknown dtype 'bf16'", "auto, float32, float16, bfloat16"],
    ),
    (
        "empty-file",
        "",
        "", 1, 1, ["a spec must be a mapping", "the file is empty"],
    ),
    (
        "duplicate-case-ids",
        "keditlab: 1\n" + EDIT + "    id: a\n  - {prompt: The sky is, subject: sky, target: green, id: a}\n",
        "edits[1].id", 7, 59, ["two edits have the id 'a'", "edits[0] and edits[1]"],
    ),
    (
        "device-gpu",
        "keditlab: 1\nrun: {device: gpu}\n" + EDIT,
        "run.device", 2, 15, ["unknown device 'gpu'", "did you mean 'cuda'?", "auto, cpu, cuda, cuda:N, mps"],
    ),
    (
        "device-number-without-colon",
        "keditlab: 1\nrun: {device: CUDA1}\n" + EDIT,
        "run.device", 2, 15, ["unknown device 'CUDA1'", "write 'cuda:1'"],
    ),
    (
        "device-bad-index",
        "keditlab: 1\nrun:\n  device: cuda:first\n" + EDIT,
        "run.device", 3, 11, ["unknown device 'cuda:first'", "did you mean 'cuda:0'?"],
    ),
    (
        "device-empty",
        "keditlab: 1\nrun: {device: ''}\n" + EDIT,
        "run.device", 2, 15, ["device is empty", "device: auto"],
    ),
    (
        "stats-samples-word",
        "keditlab: 1\nstats: {samples: Auto}\n" + EDIT,
        "stats.samples", 2, 18, ["unknown value 'Auto'", "did you mean 'auto'?"],
    ),
    (
        "stats-samples-zero",
        "keditlab: 1\nstats: {samples: 0}\n" + EDIT,
        "stats.samples", 2, 18, ["at least 1, got 0"],
    ),
    (
        "rome-update-keys",
        "keditlab: 1\nmethod: {name: rome, update_keys: average}\n" + EDIT,
        "method.update_keys", 2, 35, ["unknown value 'average'", "contexts, prompt, mean"],
    ),
    (
        "nan-setting",   # NaN passes every bound (no comparison with it is true)
        "keditlab: 1\nmethod: {name: memit, covariance_ridge: .nan}\n" + EDIT,
        "method.covariance_ridge", 2, 41, ["nan is not a finite number", ".nan and .inf are not settings"],
    ),
    (
        "infinite-setting",   # +inf passes v_lr's lower bound (> 0); only its being infinite is wrong
        "keditlab: 1\nmethod: {name: rome, v_lr: .inf}\n" + EDIT,
        "method.v_lr", 2, 28, ["inf is not a finite number"],
    ),
    (
        "method-setting-at-top-level",
        "keditlab: 1\nlayer: 5\n" + EDIT,
        "layer", 2, 1, ["unknown key 'layer'", "write it inside the method"],
    ),
    (
        "judge-a-model-name",   # the mapping forgotten: a model name where `rule` or a mapping goes
        "keditlab: 1\nevaluate: {judge: gpt-4o}\n" + EDIT,
        "evaluate.judge", 2, 19, ["unknown judge 'gpt-4o'", "judge: {model: gpt-4o}", "{url: http://HOST:PORT/v1, model: gpt-4o}"],
    ),
    (
        "judge-key-without-url",
        "keditlab: 1\nevaluate:\n  judge: {model: gpt-4o, api_key_env: OPENAI_API_KEY}\n" + EDIT,
        "evaluate.judge.api_key_env", 3, 26, ["api_key_env belongs to an endpoint judge", "add `url: http://HOST:PORT/v1`"],
    ),
    (
        "judge-url-not-http",
        "keditlab: 1\nevaluate:\n  judge: {model: gpt-4o, url: localhost:8000/v1}\n" + EDIT,
        "evaluate.judge.url", 3, 31, ["not an http:// or https:// address", "url: http://localhost:8000/v1"],
    ),
    (
        "judge-url-with-path",
        "keditlab: 1\nevaluate:\n  judge: {model: m, url: 'http://127.0.0.1:8000/v1/chat/completions'}\n" + EDIT,
        "evaluate.judge.url", 3, 26, ["names the chat-completions path", "url: http://127.0.0.1:8000/v1`"],
    ),
    (
        "judge-key-instead-of-variable",
        "keditlab: 1\nevaluate:\n  judge: {model: m, url: 'http://h/v1', api_key_env: sk-abc123}\n" + EDIT,
        "evaluate.judge.api_key_env", 3, 54, ["not the name of an environment variable", "api_key_env: OPENAI_API_KEY"],
    ),
    (
        "judge-without-model",
        "keditlab: 1\nevaluate:\n  judge: {url: 'http://h/v1'}\n" + EDIT,
        "evaluate.judge", 3, 10, ["missing required key 'model'", "add `model: "],
    ),
    (
        "judge-unknown-key",
        "keditlab: 1\nevaluate:\n  judge: {model: m, url: 'http://h/v1', api_key: OPENAI_API_KEY}\n" + EDIT,
        "evaluate.judge.api_key", 3, 41, ["unknown key 'api_key'", "did you mean 'api_key_env'?"],
    ),
    (
        "judge-without-generation",
        "keditlab: 1\nevaluate:\n  protocols: [teacher_forced]\n  judge: {model: m}\n" + EDIT,
        "evaluate.judge", 4, 3, ["a judge judges the generation protocol's answers", "add `generation` to `protocols`"],
    ),
    (
        "stop-unknown-rule",
        "keditlab: 1\nevaluate: {stop: [sentence, period]}\n" + EDIT,
        "evaluate.stop[1]", 2, 29, ["unknown stop rule 'period'", "sentence, newline"],
    ),
]


@pytest.mark.parametrize(("text", "path", "line", "column", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_spec_is_reported_precisely(text, path, line, column, fragments):
    error = only_error(text, num_layers_of=thirty_layers)
    assert (error.path, error.line, error.column) == (path, line, column), str(error)
    for fragment in fragments:
        assert fragment in str(error)
    assert "Fix:" in str(error)
    assert "Additional properties" not in str(error) and "is not valid under" not in str(error)


def test_at_least_sixteen_distinct_bad_specs():
    assert len({c[0] for c in CASES}) >= 16


def test_error_string_format():
    error = only_error('keditlab: 1\nedits:\n  - prompt: "The Eiffel Tower is in the city of"\n    subject: Eifel Tower\n    target: Rome\n')
    assert str(error) == (
        "bad.yaml:4:14: edits[0].subject: subject 'Eifel Tower' does not occur in the prompt "
        "'The Eiffel Tower is in the city of'. Fix: use the exact spelling from the prompt, e.g. 'Eiffel Tower'."
    )


def test_every_error_is_reported_at_once():
    text = """\
    keditlab: 2
    metod: rome
    method: {name: rome, v_step: 20, layer: 40}
    edits:
      - prompt: "The Eiffel Tower is located in the city of"
        subject: Eifel Tower
        target: ""
      - prompt: "The Louvre is in"
        subjet: Louvre
        target: Rome
    evaluate: [reliabilty]
    run: {seed: zero}
    """
    errors = errors_of(text, num_layers_of=thirty_layers)
    found = [(e.line, e.path) for e in errors]
    assert found == [
        (1, "keditlab"),
        (2, "metod"),
        (3, "method.v_step"),
        (3, "method.layer"),
        (6, "edits[0].subject"),
        (7, "edits[0].target"),
        (9, "edits[1].subjet"),  # misspelt, so subject is missing: one error
        (11, "evaluate[0]"),
        (12, "run.seed"),
    ], "\n".join(map(str, errors))

    with pytest.raises(SpecValidationError) as info:
        parse_spec(textwrap.dedent(text), "bad.yaml", num_layers_of=thirty_layers)
    assert len(info.value.errors) == 9
    message = str(info.value)
    assert message.startswith("9 errors in bad.yaml:")
    assert all(str(e) in message for e in errors)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_every_device_form_is_accepted(device):
    assert errors_of(f"keditlab: 1\nrun: {{device: '{device}'}}\n" + EDIT) == []


def test_layer_check_is_skipped_without_num_layers():
    assert errors_of("keditlab: 1\nmethod: {name: rome, layer: 500}\n" + EDIT) == []
    assert errors_of("keditlab: 1\nmethod: {name: rome, layer: 500}\n" + EDIT, num_layers_of=lambda m: None) == []


def test_num_layers_of_gets_the_model_name():
    asked: list[str] = []
    errors_of("keditlab: 1\nmodel: {name: gpt2}\nmethod: {name: rome, layer: 3}\n" + EDIT, num_layers_of=lambda m: asked.append(m) or 12)
    assert asked == ["gpt2"]


def test_dict_errors_have_paths_but_no_positions():
    from keditlab.spec import spec_from_dict

    with pytest.raises(SpecValidationError) as info:
        spec_from_dict({"keditlab": 1, "edits": [{"prompt": "The sky is", "subject": "Sky", "target": ""}]})
    assert [str(e) for e in info.value.errors] == [
        "<dict>: edits[0].subject: subject 'Sky' does not occur in the prompt 'The sky is' "
        "(it does with different capitalisation: 'sky'). Fix: use the exact spelling from the prompt: 'sky'.",
        "<dict>: edits[0].target: target is empty. Fix: write a non-empty value, e.g. target: <the new answer to \"The sky is\">.",
    ]


def test_validate_file(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("keditlab: 1\n" + EDIT)
    assert validate_file(good) == []
    bad = tmp_path / "bad.yaml"
    bad.write_text("keditlab: 1\nmetod: rome\n" + EDIT)
    (error,) = validate_file(bad)
    assert str(error).startswith(f"{bad}:2:1: metod: unknown key 'metod'")
    (missing,) = validate_file(tmp_path / "nope.yaml")
    assert "no such file" in str(missing)


def test_a_float_is_not_a_whole_number():
    error = only_error("keditlab: 1\nrun: {seed: 1.0}\n" + EDIT)
    assert (error.path, error.line, error.column) == ("run.seed", 2, 13)
    assert "expected a whole number, got the number 1.0" in str(error)


def test_a_key_written_where_its_variable_goes_is_not_quoted_back():
    error = only_error("keditlab: 1\nevaluate:\n  judge: {model: m, url: 'http://h/v1', api_key_env: sk-abc123}\n" + EDIT)
    assert "sk-abc123" not in str(error)
