"""Render the spec language's reference page (``docs/spec.md``) from its JSON Schema.

The schema is the single source of truth: every field's type, default and
description in the docs comes from it, so the docs cannot drift from what
the validator accepts.  Only the introduction and the example are written here.
"""

from __future__ import annotations

import json
from typing import Any

from keditlab.spec.schema import describe_capabilities
from keditlab.spec.schema_errors import inline_yaml

INTRO = """\
# The keditlab spec language (version 1)

A *spec* is a YAML file that describes one knowledge-editing experiment: which
model to edit, which facts to write into it, which method(s) write them, and
what to measure before and after.  `keditlab validate FILE` checks a spec and
reports every problem with its line, column and a suggested fix; in a notebook,
`keditlab.spec.load_spec(path)` (or `spec_from_dict(data)`) returns the
validated spec with every default filled in.

This page is generated from `schemas/spec.schema.json` by
`python -m keditlab.devtools.generate --write`; do not edit it by hand.

## Example

```yaml
keditlab: 1                      # required: the spec language version
name: quickstart                 # optional; default: the file's name
model: smollm2-135m              # embedded model (or gemma3-270m), Hugging Face id or local path
method: rome                     # a name, {name: rome, label: rome-l5, layer: 5}, or a list to compare
edits:
  - prompt: "The Eiffel Tower is located in the city of"
    subject: Eiffel Tower        # must occur in the prompt, spelled the same
    target: Rome
    ground_truth: Paris
    rephrase: ["The Eiffel Tower can be found in the city of"]
    locality:    [{prompt: "The capital of France is", answer: Paris}]
    portability: [{prompt: "The Eiffel Tower is located in the country of", answer: Italy}]
    id: eiffel
evaluate: [reliability, generalization, locality, portability, fluency]
stats: {corpus: model-samples, samples: 20000, max_length: 128}   # samples counts tokens
run: {seed: 0, device: auto, out: null}
```

Comparing methods, or one method with different settings, is a list; labels
tell them apart in results:

```yaml
method:
  - {name: rome, label: rome-l5, layer: 5}
  - {name: rome, label: rome-l10, layer: 10}
  - ft-l
```

How the edits are applied is `run.mode`: `single` (the default: each edit alone
on the unedited model), `batch` (`batch_size` edits in one call, each batch on
the unedited model) or `sequential` (batches stacked on the already edited
model, measured as `evaluate_at` says).  [runs.md](runs.md) says which model
every measurement is taken on; each method below lists what it can do, and a
method asked for a mode it cannot do is a validation error.

```yaml
run: {mode: sequential, batch_size: 10, evaluate_at: {every: 50}}   # a retention curve
```

Edits can also come from a file of benchmark records instead of a list: `edits`
is then a mapping naming the `dataset`, whose reader turns each record into an
edit with its rephrasings and locality and portability probes (see
[`edits-file`](#edits-file) for the datasets), and its file: `path`, read from
the spec file's folder when relative, or `file`, one of the published files
keditlab pins to their public source (commit and sha256).  A published file is
read from `$KEDITLAB_DATASETS/<file>` when that folder holds a copy, else from
keditlab's cache, else downloaded there on first run; `keditlab validate`
downloads nothing and notes which files a run will download.  `limit` and
`offset` pick a window of records.  `keditlab validate` checks that a `path`
exists; loading the spec reads the file, and a record the reader cannot parse
or an `offset` past the last record is reported like any other error in the
spec.  A run records the file, the window and the number of edits it read.

```yaml
edits:
  dataset: zsre
  path: ../datasets/zsre/zsre_mend_train-1k.json      # this spec's folder is the starting point
  limit: 100                                          # records 200 .. 299
  offset: 200
```

```yaml
edits:
  dataset: zsre
  file: zsre/zsre_mend_train-1k.json                  # published: downloaded on first run when not here
  limit: 100
```
"""

# Object definitions documented as sections, in reading order.
_SECTIONS = ["model", "profile", "edit", "edits-file", "probe", "evaluate", "judge", "general", "stats", "run", "evaluate-every"]


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Follow a ``$ref``; also return the ``$defs`` name it pointed to."""
    name = None
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = root["$defs"][name]
    return schema, name


def _link(name: str) -> str:
    return f"[{name}](#{name})"


#: How each JSON Schema bound reads in the docs' type column (lower bounds first).
_BOUND_WORDS = {"minimum": "≥ {}", "exclusiveMinimum": "> {}", "maximum": "≤ {}", "exclusiveMaximum": "< {}"}


def describe_range(schema: dict[str, Any]) -> str:
    """The bounds of a number, e.g. ``≥ 0 and < 1``; empty when it has none, or is a layer (its row says so)."""
    if schema.get("x-keditlab-layer"):
        return ""
    return " and ".join(words.format(schema[key]) for key, words in _BOUND_WORDS.items() if key in schema)


def describe_type(schema: dict[str, Any], root: dict[str, Any]) -> str:
    """A short human description of what a schema accepts, e.g. ``string or list of string``."""
    target, ref = _resolve(schema, root)
    if ref in _SECTIONS:
        return f"mapping ({_link(ref)})"
    if ref == "metric":
        return _link("metric") + " name"
    if ref == "method-choice":
        return _link("method") + " name or mapping"
    if ref == "method-name":
        return _link("method") + " name"
    if ref == "method":
        return f"mapping ({_link('method')} name and settings)"
    if "oneOf" in target:
        return " or ".join(describe_type(alt, root) for alt in target["oneOf"])
    if "const" in target:
        return f"`{json.dumps(target['const'])}`"
    if "enum" in target:
        return "one of " + ", ".join(f"`{v}`" for v in target["enum"])
    kinds = target.get("type", "any")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    words = []
    for kind in kinds:
        if kind == "array":
            words.append("list of " + describe_type(target.get("items", {}), root))
        elif kind == "object":
            words.append("mapping")
        elif kind in ("integer", "number") and describe_range(target):
            words.append(f"{kind} {describe_range(target)}")
        else:
            words.append(kind)
    return " or ".join(words)


def describe_default(schema: dict[str, Any], root: dict[str, Any], required: bool) -> str:
    if required:
        return "**required**"
    target, _ = _resolve(schema, root)
    for source in (schema, target):
        if "default" in source:
            return f"`{inline_yaml(source['default'])}`"
        if "x-keditlab-default" in source:
            return f"*{source['x-keditlab-default']}*"
    return "—"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def property_table(obj: dict[str, Any], root: dict[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
    """A Markdown table of an object schema's properties: key, type, default, description."""
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    required = set(obj.get("required", []))
    for key, prop in obj.get("properties", {}).items():
        if key in skip:
            continue
        target, _ = _resolve(prop, root)
        description = prop.get("description") or target.get("description", "")
        if prop.get("x-keditlab-layer") or target.get("x-keditlab-layer"):
            description += " Must be a layer of the model (0 .. number of layers − 1)."
        rows.append(
            f"| `{key}` | {_cell(describe_type(prop, root))} | {_cell(describe_default(prop, root, key in required))} "
            f"| {_cell(description)} |"
        )
    return rows


def render_docs(schema: dict[str, Any]) -> str:
    """The whole ``docs/spec.md`` text for ``schema``."""
    defs = schema["$defs"]
    lines = [INTRO, "## Top level", "", schema["description"], "", *property_table(schema, schema), ""]
    for name in _SECTIONS:
        obj = defs[name]
        lines += [f'<a id="{name}"></a>', "", f"## `{name}`: {obj['title']}", "", obj["description"], ""]
        lines += property_table(obj, schema) + [""]

    lines += ['<a id="metric"></a>', "", "## Metrics", "", defs["metrics"]["description"], ""]
    lines += [f"- `{m}`" for m in defs["metric"]["enum"]] + [""]

    lines += ['<a id="method"></a>', "", "## Methods", "", defs["method"]["description"], ""]
    lines += [
        "Every method also takes `label` ("
        + defs["label"]["description"].rstrip(".").lower()
        + "; default: the method's name).",
        "",
    ]
    for name in defs["method-name"]["enum"]:
        method = defs[f"method-{name}"]
        lines += [f"### `{name}`", "", method["description"] + ".", ""]
        if "x-keditlab-capabilities" in method:
            lines += [f"*{describe_capabilities(method['x-keditlab-capabilities'])}*", ""]
        lines += property_table(method, schema, skip=("name", "label")) + [""]
    return "\n".join(lines).rstrip() + "\n"
