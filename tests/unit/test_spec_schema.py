"""The schema and the docs are generated, complete and up to date; the spec layer stays light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema

from keditlab.spec import load_schema
from keditlab.spec.schema import REPO_SCHEMA_DIR, resolve_ref, subschemas

REPO = Path(__file__).resolve().parents[2]


def test_schema_and_docs_are_up_to_date():
    result = subprocess.run(
        [sys.executable, "-m", "keditlab.devtools.generate", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr + "\nrun: python -m keditlab.devtools.generate --write"


def test_spec_layer_does_not_import_torch():
    code = "import keditlab.spec, sys; keditlab.spec.load_schema(); assert 'torch' not in sys.modules, 'torch imported'; " \
        "assert not any(m.startswith(('keditlab.models', 'keditlab.methods', 'keditlab.runner', 'transformers')) for m in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_schema_is_valid_draft_2020_12():
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_schema_is_read_from_the_checkout():
    assert load_schema() == json.loads((REPO_SCHEMA_DIR / "spec.schema.json").read_text())


def test_every_property_is_documented_and_every_object_closed():
    root = load_schema()
    for where, sub in subschemas(root):
        if "/if" in where:  # `if` conditions only test the name
            continue
        for key, prop in sub.get("properties", {}).items():
            target = resolve_ref(prop, root)
            assert (prop.get("title") or target.get("title")), f"{where}/properties/{key} has no title"
            assert (prop.get("description") or target.get("description")), f"{where}/properties/{key} has no description"
        # `method` and `train` dispatch on a name to a closed object per method (per trained editor); the keys of
        # `sweep` (and of its `exclude` entries) are spec paths, checked by keditlab.spec.sweep with did-you-mean
        if sub.get("type") == "object" and where not in ("/$defs/method", "/$defs/train") and "/properties/sweep" not in where:
            assert sub.get("additionalProperties") is False, f"{where} accepts unknown keys"


def test_method_settings_come_from_the_registry():
    from keditlab.methods import method_names

    root = load_schema()
    assert root["$defs"]["method-name"]["enum"] == method_names()
    rome = root["$defs"]["method-rome"]["properties"]
    assert rome["layer"]["oneOf"][0]["type"] == ["integer", "null"] and rome["layer"]["x-keditlab-layer"] is True
    assert rome["layer"]["oneOf"][1] == {"type": "string", "enum": ["auto"]}  # layer: auto (docs/tracing.md)
    assert rome["v_steps"]["type"] == "integer"
    ft = root["$defs"]["method-ft-l"]["properties"]
    assert ft["layers"]["type"] == ["array", "null"] and ft["layers"]["items"]["type"] == "integer"
    assert ft["norm_constraint"]["type"] == ["number", "null"]


def test_docs_describe_every_method_and_setting():
    docs = (REPO / "docs" / "spec.md").read_text()
    root = load_schema()
    for name in root["$defs"]["method-name"]["enum"]:
        assert f"### `{name}`" in docs
        for setting in root["$defs"][f"method-{name}"]["properties"]:
            if setting not in ("name", "label"):
                assert f"| `{setting}` |" in docs


def test_packaged_schema_wins_over_the_checkout(tmp_path, monkeypatch):
    from keditlab.spec import schema as schema_module

    (tmp_path / "_schemas").mkdir()
    (tmp_path / "_schemas" / "spec.schema.json").write_text('{"title": "packaged"}')
    monkeypatch.setattr(schema_module.resources, "files", lambda package: tmp_path)
    assert json.loads(schema_module.schema_text()) == {"title": "packaged"}
