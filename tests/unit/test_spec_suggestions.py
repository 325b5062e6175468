"""Fix suggestions come from the user's own spec: the edit's prompt and values, never the docs' example fact."""

from __future__ import annotations

import pytest

from keditlab.spec import validate_text
from keditlab.spec.hints import subject_in, suggested_value

CANNED = ("Eiffel Tower", "Rome", "Paris")


def errors(text: str) -> list[str]:
    return [str(e) for e in validate_text(text, "s.yaml")]


def one(text: str) -> str:
    found = errors(text)
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize(("prompt", "subject"), [
    ("Toyota is a company from the country of", "Toyota"),
    ("Mount Fuji is located in the country of", "Mount Fuji"),
    ("The Eiffel Tower is located in the city of", "Eiffel Tower"),
    ("What is the product made by UniFirst?", "UniFirst"),
    ("The Leaning Tower of Pisa stands in", "Leaning Tower of Pisa"),
    ("the sky is", None),
])
def test_subject_is_the_prompts_capitalised_phrase(prompt, subject):
    assert subject_in(prompt) == subject


@pytest.mark.parametrize(("prompt", "subject"), [
    ("Toyota is a company from the country of", "Toyota"),
    ("Mount Fuji is located in the country of", "Mount Fuji"),
])
def test_missing_subject_is_taken_from_that_prompt(prompt, subject):
    message = one(f'keditlab: 1\nedits:\n  - prompt: "{prompt}"\n    target: Germany\n')
    assert f"missing required key 'subject'" in message
    assert f"Fix: add `subject: {subject}`" in message
    assert not any(word in message for word in CANNED)


def test_missing_subject_without_a_capitalised_word_says_what_is_needed():
    message = one('keditlab: 1\nedits:\n  - prompt: "the sky is"\n    target: green\n')
    assert 'add `subject: <the entity "the sky is" is about, spelled as there>`' in message


@pytest.mark.parametrize(("prompt", "subject", "truth"), [
    ("Mount Fuji is located in the country of", "Mount Fuji", None),
    ("Toyota is a company from the country of", "Toyota", "Japan"),
])
def test_missing_target_names_that_edits_prompt(prompt, subject, truth):
    extra = f"    ground_truth: {truth}\n" if truth else ""
    message = one(f'keditlab: 1\nedits:\n  - prompt: "{prompt}"\n    subject: {subject}\n{extra}')
    instead = f", instead of {truth}," if truth else ""
    assert f'Fix: add `target: <the new answer{instead} to "{prompt}">`' in message
    assert not any(word in message for word in CANNED)


@pytest.mark.parametrize(("prompt", "subject"), [
    ("Mount Fuji is located in the country of", "Mount Fuji"),
    ("Toyota is a company from the country of", "Toyota"),
])
@pytest.mark.parametrize("field", ["target", "ground_truth"])
def test_empty_target_and_ground_truth_name_that_edits_prompt(prompt, subject, field):
    values = {"target": "Brazil", "ground_truth": "Japan", field: '""'}
    message = one(f'keditlab: 1\nedits:\n  - prompt: "{prompt}"\n    subject: {subject}\n'
                  f'    target: {values["target"]}\n    ground_truth: {values["ground_truth"]}\n')
    assert f"{field} is empty" in message
    assert f'"{prompt}"' in message
    assert not any(word in message for word in CANNED)


@pytest.mark.parametrize("prompt", ["Mount Fuji is located in the country of", "Toyota is a company from the country of"])
def test_ground_truth_of_the_wrong_kind_names_that_edits_prompt(prompt):
    message = one(f'keditlab: 1\nedits:\n  - prompt: "{prompt}"\n    subject: {subject_in(prompt)}\n'
                  f'    target: Brazil\n    ground_truth: [Japan, Nippon]\n')
    assert f'ground_truth: <the answer the unedited model gives to "{prompt}">' in message
    assert not any(word in message for word in CANNED)


def test_probe_answer_names_that_probes_prompt():
    message = one('keditlab: 1\nedits:\n  - prompt: "Toyota is a company from the country of"\n    subject: Toyota\n'
                  '    target: Germany\n    locality: [{prompt: "The capital of Japan is"}]\n')
    assert 'add `answer: <the answer to "The capital of Japan is">`' in message
    assert "Paris" not in message


def test_suggested_value_never_borrows_another_fact():
    for key in ("subject", "target", "ground_truth", "prompt", "answer"):
        text = suggested_value(key, {"prompt": "Toyota is a company from the country of"})
        assert text and not any(word in text for word in CANNED)
    assert suggested_value("id", {}) is None


@pytest.mark.parametrize(("method", "written", "fix"), [
    ("memit", "five", "write `layers: [3, 4, 5]`"),
    ("memit", "3-5", "write `layers: [3, 4, 5]`"),
    ("memit", "5", "write `layers: [5]`"),
    ("alphaedit", "'1, 2'", "write `layers: [1, 2]`"),
])
def test_bad_layers_say_a_list_of_layer_numbers_is_expected(method, written, fix):
    message = one(f"keditlab: 1\nmethod: {{name: {method}, layers: {written}}}\n"
                  "edits: [{prompt: Toyota is a company from the country of, subject: Toyota, target: Germany}]\n")
    assert "expected a list of layer numbers or auto" in message
    assert fix in message and "`layers: auto`" in message
    assert f"leave 'layers' out for {method}'s default" in message
    assert "Known values" not in message


def test_bad_layer_says_a_layer_number_is_expected():
    message = one("keditlab: 1\nmethod: {name: rome, layer: five}\n"
                  "edits: [{prompt: Toyota is a company from the country of, subject: Toyota, target: Germany}]\n")
    assert "expected a layer number or auto, got the text 'five'" in message
    assert "write `layer: 5`" in message and "`layer: auto`" in message


def test_bad_item_of_layers_says_each_is_a_number():
    message = one("keditlab: 1\nmethod: {name: memit, layers: [4, five]}\n"
                  "edits: [{prompt: Toyota is a company from the country of, subject: Toyota, target: Germany}]\n")
    assert "method.layers[1]: expected a layer number, got the text 'five'" in message


@pytest.mark.parametrize(("mapping", "wrong", "right", "line"), [
    ('  - prompt: "Mount Fuji is located in the country of"\n    subject: Mount Fuji\n    targett: Brazil\n',
     "targett", "target", 5),
    ('  - prompt: "Toyota is a company from the country of"\n    subjetc: Toyota\n    target: Germany\n',
     "subjetc", "subject", 4),
    ('  - prompt: "Toyota is a company from the country of"\n    subject: Toyota\n    target: Germany\n'
     '    locality: [{prompt: "The capital of Japan is", anwser: Tokyo}]\n', "anwser", "answer", 6),
])
def test_a_misspelt_required_key_is_one_error_on_its_line(mapping, wrong, right, line):
    found = validate_text("keditlab: 1\nedits:\n" + mapping, "s.yaml")
    assert len(found) == 1, [str(e) for e in found]
    error = found[0]
    assert error.line == line
    assert error.message == f"unknown key '{wrong}' (did you mean '{right}'?), and '{right}' is missing"
    assert error.fix == f"rename '{wrong}' to '{right}'"


def test_an_unknown_key_that_misspells_no_missing_key_stays_its_own_error():
    found = errors('keditlab: 1\nedits:\n  - prompt: "Toyota is a company from the country of"\n    subject: Toyota\n'
                   '    target: Germany\n    targett: Brazil\n')
    assert len(found) == 1 and "unknown key 'targett'" in found[0] and "is missing" not in found[0]
