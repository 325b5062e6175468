"""Every numeric setting has bounds, and a value outside them is a validation error with its line, not a crash.

A method setting without a range lets a spec through that fails later, deep in a
run (``steps: -1`` was an IndexError in the loss history) or that silently does
nothing (``v_steps: -5`` optimised nothing).  So:

* every ``int``/``float`` field of every registered method config declares a
  lower bound (``minimum`` or ``exclusive_minimum`` in its ``metadata``), and a
  new setting without one fails here, by name;
* the committed schema carries exactly the bounds the dataclasses declare
  (``test_spec_schema.py`` checks that the whole generated schema is up to date);
* every integer or number of the spec schema has a lower bound, and a seed fits
  what the runner seeds (``numpy.random.seed`` takes 0 <= seed < 2**32);
* a value just outside a bound is one error naming the setting at its line,
  from the spec validator and from the config dataclass alike, and the bound
  itself (when it is inclusive) is accepted.

No model is loaded: the configs and the schema are plain data.
"""

from __future__ import annotations

import dataclasses
import types
import typing

import pytest

from keditlab.devtools.generate import BOUNDS
from keditlab.devtools.spec_schema_base import MAX_SEED
from keditlab.methods import _REGISTRY, MethodConfigError, method_names
from keditlab.spec import load_schema
from keditlab.spec.schema import subschemas
from tests.conftest import only_spec_error, spec_errors

EDIT = """\
edits:
  - prompt: "The Eiffel Tower is located in the city of"
    subject: Eiffel Tower
    target: Rome
"""

LOWER_BOUNDS = ("minimum", "exclusive_minimum")


def _number_type(hint) -> type | None:
    """``int`` or ``float`` for a field typed ``int``, ``float``, ``int | None`` or ``float | None``; None otherwise."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else None
    return hint if hint in (int, float) else None


def numeric_settings() -> list[tuple[str, dataclasses.Field, type]]:
    """``(method, field, int or float)`` for every numeric setting of every registered method, layer settings excluded."""
    settings = []
    for name in method_names():
        config_class = _REGISTRY[name].config_class
        hints = typing.get_type_hints(config_class)
        for fld in dataclasses.fields(config_class):
            kind = _number_type(hints[fld.name])
            if kind is not None and not fld.metadata.get("layer_index"):
                settings.append((name, fld, kind))
    return settings


SETTINGS = numeric_settings()
BOUNDED = [(name, fld, kind) for name, fld, kind in SETTINGS if any(b in fld.metadata for b in BOUNDS)]


def _id(setting: tuple) -> str:
    return f"{setting[0]}.{setting[1].name}"


# --- (a) every numeric method setting declares a lower bound -------------------------------------------------------


def test_every_numeric_method_setting_has_a_lower_bound():
    assert len(method_names()) >= 15 and len(SETTINGS) > 100   # the walk really sees the registry
    missing = [_id(s) for s in SETTINGS if not any(bound in s[1].metadata for bound in LOWER_BOUNDS)]
    assert not missing, (
        "these method settings declare no lower bound; add metadata={'minimum': ...} or {'exclusive_minimum': ...} "
        "(and 'maximum'/'exclusive_maximum' where one is meaningful), then run "
        "`python -m keditlab.devtools.generate --write`: " + ", ".join(missing)
    )


def test_every_default_lies_within_its_bounds():
    for name in method_names():
        _REGISTRY[name].config_class()   # MethodConfig.__post_init__ checks each declared range


# --- (b) the schema carries the same bounds -------------------------------------------------------------------------


@pytest.mark.parametrize("setting", SETTINGS, ids=_id)
def test_schema_carries_the_declared_bounds(setting):
    name, fld, _ = setting
    prop = load_schema()["$defs"][f"method-{name}"]["properties"][fld.name]
    declared = {BOUNDS[key]: fld.metadata[key] for key in BOUNDS if key in fld.metadata}
    in_schema = {keyword: prop[keyword] for keyword in BOUNDS.values() if keyword in prop}
    assert in_schema == declared


#: Integers of the schema that are names, not settings: an edit's ``id`` may be any whole number.
NOT_SETTINGS = {"/$defs/edit/properties/id"}


def test_every_number_in_the_spec_schema_has_a_lower_bound():
    numbers = {where: sub for where, sub in subschemas(load_schema())
               if {"integer", "number"} & set(sub["type"] if isinstance(sub.get("type"), list) else [sub.get("type")])}
    assert "/$defs/run/properties/seed" in numbers and "/$defs/method-rome/properties/v_steps" in numbers
    missing = [where for where, schema in numbers.items()
               if where not in NOT_SETTINGS and "minimum" not in schema and "exclusiveMinimum" not in schema]
    assert not missing, "numbers of the spec schema without a lower bound: " + ", ".join(missing)


def test_seeds_fit_what_the_runner_seeds():
    defs = load_schema()["$defs"]
    assert MAX_SEED == 2**32 - 1
    for seed in (defs["run"]["properties"]["seed"], defs["edits-file"]["properties"]["sample"]["properties"]["seed"]):
        assert (seed["minimum"], seed["maximum"]) == (0, MAX_SEED)
    numpy = pytest.importorskip("numpy")
    numpy.random.seed(MAX_SEED)   # the largest seed a spec may give is one numpy takes


# --- (c) out of range: a positioned validation error; at the bound: accepted ----------------------------------------


errors_of, only_error = spec_errors, only_spec_error


@pytest.mark.parametrize(("text", "path", "line", "fragments"), [
    ("keditlab: 1\nmethod: {name: ft-m, steps: -1}\n" + EDIT, "method.steps", 2, ["steps must be at least 1, got -1"]),
    ("keditlab: 1\nmethod:\n  name: rome\n  v_steps: -5\n" + EDIT, "method.v_steps", 4, ["v_steps must be at least 1, got -5"]),
    ("keditlab: 1\nrun:\n  seed: 4294967296\n" + EDIT, "run.seed", 3, ["seed must be >= 0 and <= 4294967295, got 4294967296"]),
    ("keditlab: 1\nrun: {seed: -1}\n" + EDIT, "run.seed", 2, ["seed must be at least 0, got -1"]),
    ("keditlab: 1\nmethod: [rome, {name: r-rome, clamp_norm_factor: 0}]\n" + EDIT,
     "method[1].clamp_norm_factor", 2, ["clamp_norm_factor must be > 0, got 0"]),
])
def test_out_of_range_is_an_error_at_its_line(text, path, line, fragments):
    error = only_error(text)
    assert (error.path, error.line) == (path, line), str(error)
    assert str(error).startswith(f"bad.yaml:{line}:")
    for fragment in fragments:
        assert fragment in str(error)
    assert "Fix:" in str(error)


def test_a_sample_seed_out_of_range_is_named():
    # The records file does not exist here; only the seed's own error matters.
    text = "keditlab: 1\nedits:\n  dataset: zsre\n  path: records.json\n  sample: {n: 2, seed: 4294967296}\n"
    seed_errors = [e for e in errors_of(text) if e.path == "edits.sample.seed"]
    assert len(seed_errors) == 1 and seed_errors[0].line == 5 and "<= 4294967295" in str(seed_errors[0])


@pytest.mark.parametrize("seed", [0, 4294967295])
def test_the_seeds_at_the_bounds_are_valid(seed):
    assert errors_of(f"keditlab: 1\nrun: {{seed: {seed}}}\n" + EDIT) == []


def _outside(fld: dataclasses.Field) -> list:
    """Values just outside each bound ``fld`` declares."""
    md = fld.metadata
    values = []
    if "minimum" in md:
        values.append(md["minimum"] - 1)
    if "exclusive_minimum" in md:
        values.append(md["exclusive_minimum"])
    if "maximum" in md:
        values.append(md["maximum"] + 1)
    if "exclusive_maximum" in md:
        values.append(md["exclusive_maximum"])
    return values


def _method_spec(name: str, setting: str, value) -> str:
    return f"keditlab: 1\nmethod:\n  name: {name}\n  {setting}: {value}\n" + EDIT


@pytest.mark.parametrize("setting", BOUNDED, ids=_id)
def test_every_bound_is_enforced_by_the_validator_and_the_config(setting):
    name, fld, _ = setting
    config_class = _REGISTRY[name].config_class
    for value in _outside(fld):
        errors = [e for e in errors_of(_method_spec(name, fld.name, value)) if e.path == f"method.{fld.name}"]
        assert len(errors) == 1 and errors[0].line == 4, f"{name}.{fld.name}: {value} gave {[str(e) for e in errors]}"
        with pytest.raises(MethodConfigError, match=rf"{fld.name}: .* is out of range"):
            config_class(**{fld.name: value})


@pytest.mark.parametrize("setting", [s for s in BOUNDED if "minimum" in s[1].metadata or "maximum" in s[1].metadata], ids=_id)
def test_inclusive_bounds_are_accepted(setting):
    name, fld, kind = setting
    config_class = _REGISTRY[name].config_class
    for key in ("minimum", "maximum"):
        if key in fld.metadata:
            value = kind(fld.metadata[key])
            assert [str(e) for e in errors_of(_method_spec(name, fld.name, value))] == []
            config_class(**{fld.name: value})
