"""Generate ``schemas/spec.schema.json``, ``docs/spec.md``, the README's method table and docs/models.md's matrix from the code.

The list of editing methods and each method's settings live in one place: the
method registry (:mod:`keditlab.methods`) and each method's config dataclass.
This script turns them into JSON Schema and merges them into the hand-written
rest of the schema (:mod:`keditlab.devtools.spec_schema_base`), so a new
method or setting cannot be forgotten in the schema or the docs::

    python -m keditlab.devtools.generate --write   # regenerate both files
    python -m keditlab.devtools.generate --check   # exit 1 if either is stale (CI, tests)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from keditlab.devtools.spec_docs import render_docs
from keditlab.devtools.spec_schema_base import base_schema

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "schemas" / "spec.schema.json"
DOCS_PATH = REPO_ROOT / "docs" / "spec.md"
README_PATH = REPO_ROOT / "README.md"
#: The README's method table sits between these two lines; the rest of the README is hand-written.
TABLE_START = "<!-- methods table: generated from the registry by `python -m keditlab.devtools.generate --write` -->"
TABLE_END = "<!-- end of methods table -->"

_SCALARS = {bool: "boolean", int: "integer", float: "number", str: "string"}


def type_schema(tp: Any, *, layer: bool = False) -> dict[str, Any]:
    """JSON Schema for a config field's Python type (int, float, bool, str, list[X], X | None)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1 or len(typing.get_args(tp)) != 2:
            raise TypeError(f"unsupported union type for a method setting: {tp!r}")
        inner = type_schema(args[0], layer=layer)
        inner["type"] = [inner["type"], "null"]
        return inner
    if origin is list:
        (item,) = typing.get_args(tp)
        return {"type": "array", "items": type_schema(item, layer=layer)}
    if tp in _SCALARS:
        schema: dict[str, Any] = {"type": _SCALARS[tp]}
        if layer and tp is int:
            schema["minimum"] = 0
            schema["x-keditlab-layer"] = True  # on the integer itself too, for list items
        return schema
    raise TypeError(f"unsupported type for a method setting: {tp!r}")


#: Range metadata of a setting (``metadata={"minimum": 0}``) and its JSON Schema keyword.
BOUNDS = {"minimum": "minimum", "maximum": "maximum", "exclusive_minimum": "exclusiveMinimum", "exclusive_maximum": "exclusiveMaximum"}


def setting_schema(config_class: type, fld: dataclasses.Field) -> dict[str, Any]:
    """The schema of one method setting, from its dataclass field and ``metadata``."""
    hints = typing.get_type_hints(config_class)
    is_layer = bool(fld.metadata.get("layer_index"))
    description = fld.metadata.get("help") or ""
    if not description:
        raise ValueError(f"{config_class.__name__}.{fld.name} has no metadata['help']; every setting needs one")
    schema: dict[str, Any] = {
        "title": fld.name.replace("_", " ").capitalize(),
        "description": description,
        **type_schema(hints[fld.name], layer=is_layer),
    }
    if fld.default is not dataclasses.MISSING:
        schema["default"] = fld.default
    elif fld.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        schema["default"] = fld.default_factory()  # type: ignore[misc]
    if "choices" in fld.metadata:
        schema["enum"] = list(fld.metadata["choices"])
    for bound in BOUNDS:
        if bound in fld.metadata:
            schema[BOUNDS[bound]] = fld.metadata[bound]
    if is_layer:
        schema["x-keditlab-layer"] = True
    if fld.metadata.get("auto_layer"):
        # `auto`: the layer(s) chosen by causal tracing (keditlab.trace.auto_layer), besides numbers.
        form = {k: schema.pop(k) for k in list(schema) if k in ("type", "items", "minimum")}
        if is_layer:
            form["x-keditlab-layer"] = True  # a negative layer is still reported as a layer
        schema["oneOf"] = [form, {"type": "string", "enum": ["auto"]}]
    return schema


def _names_schema(title: str, what: str, names: list[str], noun: str) -> dict[str, Any]:
    """A string that must be one of ``names`` (an unknown one gets a did-you-mean naming the ``noun``)."""
    return {"title": title, "description": f"{what}: " + ", ".join(f"`{n}`" for n in names) + ".", "type": "string",
            "enum": names, "x-keditlab-noun": noun}


def method_defs() -> dict[str, Any]:
    """``$defs`` entries for the registered methods: their names and each one's settings."""
    from keditlab.methods import _REGISTRY, method_names

    names = method_names()
    defs: dict[str, Any] = {
        "method-name": {**_names_schema("Method name", "A registered editing method", names, "editing method"),
                        "examples": ["rome" if "rome" in names else names[0]]},
        "method-choice": {
            "title": "Method",
            "description": "A method name, or a mapping with `name`, an optional `label` and the method's settings.",
            "oneOf": [{"$ref": "#/$defs/method-name"}, {"$ref": "#/$defs/method"}],
        },
        "method": {
            "title": "Method with settings",
            "description": "A method by `name`, with an optional `label` and settings of that method written next to them (e.g. `layer: 5`). Settings not given take the method's defaults.",
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"$ref": "#/$defs/method-name"}, "label": {"$ref": "#/$defs/label"}},
            # The settings allowed depend on the name: each method's own object checks them
            # (with additionalProperties false), so an unknown setting is named per method.
            "allOf": [
                {
                    "if": {"properties": {"name": {"const": name}}, "required": ["name"]},
                    "then": {"$ref": f"#/$defs/method-{name}"},
                }
                for name in names
            ],
        },
    }
    for name in names:
        cls = _REGISTRY[name]
        config_class = cls.config_class
        settings = {f.name: setting_schema(config_class, f) for f in dataclasses.fields(config_class)}
        defs[f"method-{name}"] = {
            "title": name,
            "description": cls.summary or f"The {name} editing method.",
            "type": "object",
            "additionalProperties": False,
            "x-keditlab-method": name,
            "x-keditlab-capabilities": cls.capabilities.to_dict(),
            "x-keditlab-family": cls.family,
            "x-keditlab-paper": cls.paper,
            "x-keditlab-model-needs": list(cls.model_needs),
            "properties": {
                "name": {"title": "Method name", "description": f"`{name}`.", "const": name},
                "label": {"$ref": "#/$defs/label"},
                **settings,
            },
        }
    return defs


def train_defs() -> dict[str, Any]:
    """``$defs`` entries of the ``train:`` section: the editors that are trained, and each one's training settings."""
    from keditlab.methods import _REGISTRY, trained_editors

    names = trained_editors()
    common = {
        "records": {"$ref": "#/$defs/edits-file", "description": "The training records, read like `edits:` from a benchmark file (`dataset`, `path` or `file`, `limit`, `offset`). Records without a rephrasing or an unrelated prompt are left out of training."},
        "validation": {"$ref": "#/$defs/edits-file", "description": "Records the editor is measured on while it trains (edit success, locality); keep them apart from `records` and from the records you evaluate on."},
        "exclude": {"$ref": "#/$defs/edits-file", "description": "Records the editor must never learn from, usually the ones you will evaluate it on (read like `edits:`): every training or validation record about one of their subjects, or with one of their prompts, is left out, and the training says how many."},
        "archive": _path_schema(),
    }
    defs: dict[str, Any] = {
        "train-editor": _names_schema("Editor to train", "An editing method that must be trained before it edits", names,
                                      "trained editor"),
        "train": {
            "title": "Training",
            "description": "Train an editor that must be trained before it can edit (MEND), run by `keditlab train SPEC`: the records it learns from, the records it is checked on, and its training settings. The archive goes to the cache, where `method: NAME` finds it for the same model. [training.md](training.md) explains every setting.",
            "type": "object",
            "required": ["editor", "records"],
            "properties": {"editor": {"$ref": "#/$defs/train-editor"}, **common},
            "allOf": [{"if": {"properties": {"editor": {"const": name}}, "required": ["editor"]},
                       "then": {"$ref": f"#/$defs/train-{name}"}} for name in names],
        },
    }
    for name in names:
        config_class = _REGISTRY[name].train_config_class
        defs[f"train-{name}"] = {
            "title": f"{name} training",
            "description": (config_class.__doc__ or "").strip().split("\n\n")[0],
            "type": "object",
            "additionalProperties": False,
            "properties": {"editor": {"title": "Editor", "description": f"`{name}`.", "const": name}, **common,
                           **{f.name: setting_schema(config_class, f) for f in dataclasses.fields(config_class)}},
        }
    return defs


def _path_schema() -> dict[str, Any]:
    return {"title": "Archive", "type": "string", "minLength": 1, "examples": ["archives/mend-smollm2.pt"],
            "description": "Also write the trained archive to this path (relative to the spec's folder); it is always put in the cache. An existing file is never overwritten."}


def build_schema() -> dict[str, Any]:
    """The whole spec schema: the hand-written base plus the generated method and training definitions."""
    schema = base_schema()
    schema["$defs"].update(method_defs())
    schema["$defs"].update(train_defs())
    return schema


def schema_json(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def methods_table(schema: dict[str, Any]) -> str:
    """The README's method table: one row per registered method (name, family, summary, paper, run modes)."""
    from keditlab.spec.schema import method_catalogue

    def modes(capabilities: dict[str, bool]) -> str:
        return ", ".join(["single"] + [mode for mode in ("batch", "sequential") if capabilities.get(mode)])

    rows = ["| name | family | what it does | paper | run modes | weights |", "|---|---|---|---|---|---|"]
    for m in method_catalogue(schema):
        weights = "changed, restored exactly" if m.capabilities.get("changes_weights", True) else "untouched"
        rows.append(f"| `{m.name}` | {m.family} | {m.summary} | {m.paper} | {modes(m.capabilities)} | {weights} |")
    return "\n".join(rows)


def readme_with_table(readme: str, schema: dict[str, Any]) -> str:
    """``readme`` with the text between :data:`TABLE_START` and :data:`TABLE_END` replaced by :func:`methods_table`."""
    if TABLE_START not in readme or TABLE_END not in readme:
        raise ValueError(f"README.md lacks the method-table markers {TABLE_START!r} … {TABLE_END!r}")
    head, rest = readme.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    return f"{head}{TABLE_START}\n{methods_table(schema)}\n{TABLE_END}{tail}"


def generated_files() -> dict[Path, str]:
    """Each generated file and the text it should have."""
    from keditlab.devtools.models_doc import MODELS_DOC, models_doc_with_matrix

    schema = build_schema()
    return {SCHEMA_PATH: schema_json(schema), DOCS_PATH: render_docs(schema),
            README_PATH: readme_with_table(README_PATH.read_text(encoding="utf-8"), schema),
            MODELS_DOC: models_doc_with_matrix(MODELS_DOC.read_text(encoding="utf-8"))}


def stale_files() -> list[Path]:
    """Generated files whose content differs from what the code says they should be."""
    return [
        path
        for path, text in generated_files().items()
        if not path.is_file() or path.read_text(encoding="utf-8") != text
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keditlab.devtools.generate", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="write schemas/spec.schema.json, docs/spec.md and the README's method table")
    group.add_argument("--check", action="store_true", help="exit 1 if either file is out of date")
    args = parser.parse_args(argv)
    if args.write:
        for path, text in generated_files().items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(REPO_ROOT)}")
        return 0
    stale = stale_files()
    for path in stale:
        print(f"{path.relative_to(REPO_ROOT)} is out of date; run `python -m keditlab.devtools.generate --write`", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
