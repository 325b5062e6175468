"""Inputs that cannot crash the validator: every input ends in positioned errors or a valid spec.

Hand-picked hostile inputs (control characters, nesting, dates that do not exist, an alias bomb, files that are
not files) and a fuzz test: 5,000 random mutations of the shipped specs, with a fixed seed.  No input may escape
as a traceback, and every spec that validates must resolve to a spec that validates again.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from keditlab.data.download import deferred_downloads
from keditlab.spec import parse_spec, spec_from_dict, validate_file, validate_text
from keditlab.spec.errors import SpecError, SpecValidationError

ROOT = Path(__file__).resolve().parents[2]
BASE = "keditlab: 1\nmodel: smollm2-135m\nmethod: rome\nedits:\n  - {prompt: 'The Eiffel Tower is in', subject: Eiffel Tower, target: Rome}\n"
#: Ten anchors, each a list of ten of the one before: 10⁹ values once expanded.
BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10)) + BASE


def _one_error(errors: list[SpecError], *fragments: str) -> SpecError:
    assert errors and all(isinstance(e, SpecError) for e in errors), errors
    text = "\n".join(map(str, errors))
    assert all(fragment in text for fragment in fragments), text
    assert all("Fix:" in str(e) for e in errors), text
    return errors[0]


@pytest.mark.parametrize("name, text, fragments", [
    ("NUL", BASE.replace("Rome", "Ro\x00me"), ["unacceptable character #x0000"]),
    ("ESC", BASE + "\x1b", ["unacceptable character #x001b"]),
    ("DEL", BASE.replace("Rome", "Ro\x7fme"), ["unacceptable character #x007f"]),
    ("lone surrogate", BASE.replace("Rome", "\ud800"), ["unacceptable character #xd800"]),
    ("deep flow nesting", "x: " + "[" * 1000 + "]" * 1000 + "\n" + BASE, ["nested too deeply"]),
    ("deep block nesting", BASE + "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "v\n", ["nested more than 64 levels"]),
    ("a date that does not exist", BASE.replace("Rome", "1999-02-30"), ["'1999-02-30' cannot be read", "quote it"]),
    ("alias bomb", BOMB, ["aliases of aliases"]),
])
def test_a_hostile_spec_gets_errors_not_a_traceback(name, text, fragments):
    _one_error(validate_text(text, "hostile.yaml"), *fragments)


def test_the_date_error_is_positioned():
    error = _one_error(validate_text(BASE.replace("Rome", "1999-02-30"), "dates.yaml"))
    assert (error.file, error.line, error.path) == ("dates.yaml", 5, "edits[0].target")


@pytest.mark.parametrize("path, fragment", [
    ("/dev/zero", "not a regular file"),
    ("/", "not a regular file"),
    ("/" + "x" * 5000 + ".yaml", "cannot read the file"),
])
def test_a_path_that_is_not_a_spec_file_is_an_error(path, fragment):
    _one_error(validate_file(path), fragment)


def test_a_binary_file_is_an_error(tmp_path):
    path = tmp_path / "weights.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    _one_error(validate_file(path), "not UTF-8")


def _mutate(rng: random.Random, text: str) -> str:
    weird = ["\x00", "\x1b", "\x7f", "\ud800", "\t", "\r", "\ufeff", "&a", "*a", "!!python/object", "<<: *a", ".nan", "-.inf",
             "1999-02-30", "2001-01-01", "[" * 400, "{" * 50, "~", "null", "1e309", "-1", "0", "99999999999999999999", "'", '"',
             ":", "- ", "---", "...", "%YAML 1.1", "? ", "|", ">", "#", "\\", "\u2028", "é", "0x10", "a" * 5000,
             "/" + "x" * 300, "/dev/zero", "true", "yes", "no"]
    lines = text.split("\n")
    op = rng.randrange(8)
    if op == 0:   # insert something odd anywhere
        i = rng.randrange(len(text) + 1)
        return text[:i] + rng.choice(weird) + text[i:]
    if op == 1:   # cut a few characters
        i = rng.randrange(len(text) + 1)
        return text[:i] + text[min(len(text), i + rng.randrange(1, 30)):]
    if op == 2:   # a line twice
        lines.insert(rng.randrange(len(lines)), lines[rng.randrange(len(lines))])
        return "\n".join(lines)
    if op == 3:   # two lines swapped
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
        return "\n".join(lines)
    if op == 4:   # a value replaced by something odd
        keyed = [k for k, line in enumerate(lines) if ": " in line]
        if keyed:
            k = rng.choice(keyed)
            lines[k] = lines[k].split(": ", 1)[0] + ": " + rng.choice(weird)
        return "\n".join(lines)
    if op == 5:   # the file cut short
        return text[: rng.randrange(len(text) + 1)]
    if op == 6:   # any character
        i = rng.randrange(len(text) + 1)
        return text[:i] + chr(rng.randrange(0, 0x3000)) + text[i:]
    return _mutate(rng, _mutate(rng, text))


def test_five_thousand_mutations_of_the_shipped_specs_end_in_errors_or_valid_specs():
    shipped = [path.read_text(encoding="utf-8") for path in sorted((ROOT / "specs").rglob("*.yaml"))]
    rng = random.Random(0)
    escaped, valid, not_again = [], 0, []
    for _ in range(5000):
        text = _mutate(rng, rng.choice(shipped))
        # validation downloads nothing; a spec naming a published file that is not here yet resolves to where the
        # download will be, which only a run creates: such a spec is not validated again
        with deferred_downloads() as pending:
            try:
                try:   # what validate_text does, keeping the resolved spec when there are no errors
                    spec, errors = parse_spec(text, "mutated.yaml"), []
                except SpecValidationError as exc:
                    spec, errors = None, exc.errors
                assert errors and all(isinstance(e, SpecError) and str(e) for e in errors) or spec is not None
                if spec is not None:
                    valid += 1
                    try:
                        if not pending:
                            spec_from_dict(spec.to_spec_data())
                    except Exception as exc:  # noqa: BLE001 - collected and reported below
                        not_again.append((text, exc))
            except Exception as exc:  # noqa: BLE001 - collected and reported below
                escaped.append((text, exc))
    assert not escaped, f"{len(escaped)} inputs escaped as tracebacks, e.g. {escaped[0][1]!r} from {escaped[0][0][:300]!r}"
    assert not not_again, f"{len(not_again)} valid specs did not validate again once resolved, e.g. {not_again[0][1]!r}"
    assert valid > 500, f"only {valid} of 5,000 mutations were valid specs: the mutations are too destructive to test resolving"
