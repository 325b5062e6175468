"""Checks JSON Schema cannot express: relations between fields, and facts about the model.

* a subject must occur in its prompt (ROME edits at the subject's last token);
* method labels must be unique (they name result columns);
* edit ids must be unique (they name result rows);
* layer settings must be layers the model has (asked of the caller's
  ``num_layers_of``, because the spec layer does not load models).

Each check reads the raw data defensively: a part with the wrong shape was
already reported by the schema and is skipped here.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Iterator

from keditlab.spec.errors import Path, format_path
from keditlab.spec.hints import shorten
from keditlab.spec.report import Reporter

NumLayersOf = Callable[[str], "int | None"]


def method_entries(data: dict[str, Any]) -> Iterator[tuple[Path, str, dict[str, Any] | None]]:
    """Each method of a spec as (path, name, settings mapping or None for a bare name)."""
    value = data.get("method")
    items = [(("method",), value)] if not isinstance(value, list) else [(("method", i), v) for i, v in enumerate(value)]
    for path, item in items:
        if isinstance(item, str):
            yield path, item, None
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            yield path, item["name"], item


def _edits(data: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    edits = data.get("edits")
    if isinstance(edits, list):
        for i, edit in enumerate(edits):
            if isinstance(edit, dict):
                yield i, edit


def suggest_subject(subject: str, prompt: str) -> str | None:
    """The part of ``prompt`` the user most likely meant by ``subject`` (a case or spelling slip)."""
    start = prompt.lower().find(subject.lower())
    if start >= 0:
        return prompt[start : start + len(subject)]
    words = prompt.split()
    size = len(subject.split())
    candidates = {
        " ".join(words[i : i + n]).strip(".,;:!?\"'()")
        for n in (size - 1, size, size + 1)
        if n > 0
        for i in range(len(words) - n + 1)
    }
    matches = difflib.get_close_matches(subject, sorted(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def check_subjects(data: dict[str, Any], report: Reporter) -> None:
    for i, edit in _edits(data):
        prompt, subject = edit.get("prompt"), edit.get("subject")
        if not (isinstance(prompt, str) and isinstance(subject, str) and prompt.strip() and subject.strip()):
            continue
        if subject in prompt:
            continue
        path = ("edits", i, "subject")
        message = f"subject '{subject}' does not occur in the prompt '{shorten(prompt, 40)}'"
        suggestion = suggest_subject(subject, prompt)
        if suggestion and suggestion.lower() == subject.lower():
            message += f" (it does with different capitalisation: '{suggestion}')"
            fix = f"use the exact spelling from the prompt: '{suggestion}'"
        elif suggestion:
            fix = f"use the exact spelling from the prompt, e.g. '{suggestion}'"
        else:
            fix = "write the subject exactly as it appears in the prompt (the edit is made at its last token)"
        report.add(path, message, fix)


def check_labels(data: dict[str, Any], report: Reporter) -> None:
    first_seen: dict[str, Path] = {}
    for path, name, settings in method_entries(data):
        label = settings.get("label") if settings else None
        has_label = isinstance(label, str) and bool(label)
        label = label if has_label else name
        if label in first_seen:
            where = (*path, "label") if has_label else path
            report.add(
                where,
                f"two methods are labelled '{label}' ({format_path(first_seen[label])} and {format_path(path)}); labels name the results, so they must differ",
                f"give each a distinct label, e.g. {{name: {name}, label: {label}-2, ...}}",
            )
        else:
            first_seen[label] = path


def check_case_ids(data: dict[str, Any], report: Reporter) -> None:
    first_seen: dict[str, int] = {}
    for i, edit in _edits(data):
        given = edit.get("id")
        case_id = str(given) if isinstance(given, (str, int)) and not isinstance(given, bool) else str(i)
        if case_id in first_seen:
            path = ("edits", i, "id") if "id" in edit else ("edits", i)
            report.add(
                path,
                f"two edits have the id '{case_id}' (edits[{first_seen[case_id]}] and edits[{i}])",
                "give each edit a distinct id (an edit without one is named by its position)",
            )
        else:
            first_seen[case_id] = i


def _model_name(data: dict[str, Any], schema: dict[str, Any]) -> str | None:
    model = data.get("model", schema["properties"]["model"].get("default"))
    if isinstance(model, dict):
        model = model.get("name", schema["$defs"]["model"]["properties"]["name"].get("default"))
    return model if isinstance(model, str) and model.strip() else None


def check_layers(data: dict[str, Any], schema: dict[str, Any], num_layers_of: NumLayersOf | None, report: Reporter) -> None:
    """Layer settings (``x-keditlab-layer`` in the schema) must lie in ``0 .. num_layers-1``."""
    if num_layers_of is None:
        return
    model = _model_name(data, schema)
    if model is None:
        return
    cache: list[int | None] = []

    def num_layers() -> int | None:
        if not cache:
            try:
                cache.append(num_layers_of(model))
            except Exception:  # noqa: BLE001 - an unreachable model is the loader's error to report, not the spec's
                cache.append(None)
        return cache[0]

    defs = schema["$defs"]
    for path, name, settings in method_entries(data):
        definition = defs.get(f"method-{name}")
        if not settings or not definition:
            continue
        for key, prop in definition["properties"].items():
            if not prop.get("x-keditlab-layer") or key not in settings:
                continue
            value = settings[key]
            indexed = [((*path, key), value)] if not isinstance(value, list) else [((*path, key, j), v) for j, v in enumerate(value)]
            for where, layer in indexed:
                if not isinstance(layer, int) or isinstance(layer, bool) or layer < 0:
                    continue  # wrong types and negative layers are the schema's to report
                n = num_layers()
                if n is None:
                    return
                if layer >= n:
                    report.add(
                        where,
                        f"layer {layer} is out of range: {model} has {n} layers, numbered 0 to {n - 1}",
                        f"use a layer from 0 to {n - 1}, or leave '{key}' out to use {name}'s default",
                    )


def run_checks(data: Any, schema: dict[str, Any], report: Reporter, num_layers_of: NumLayersOf | None = None) -> None:
    """Every check above, on whatever parts of ``data`` have the right shape."""
    if not isinstance(data, dict):
        return
    check_subjects(data, report)
    check_labels(data, report)
    check_case_ids(data, report)
    check_layers(data, schema, num_layers_of, report)


