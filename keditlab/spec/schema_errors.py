"""Turn jsonschema's validation errors into messages a spec author can act on.

jsonschema reports *what rule failed* ("Additional properties are not
allowed ('metod' was unexpected)"); a user needs *what to change*: the key
they probably meant, the values allowed, an example.  Each failed JSON Schema
keyword has a translator below.  For ``oneOf`` alternatives (e.g. ``model:``
is a name *or* a mapping) the alternative the user evidently chose — the one
whose type matches what they wrote — is the one whose errors are reported.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any, Callable, Iterable, Iterator

from jsonschema import ValidationError

from keditlab.spec.errors import Path
from keditlab.spec.hints import closest, describe_types, describe_value, did_you_mean, json_type, quoted_list, suggested_value
from keditlab.spec.report import Reporter
from keditlab.spec.schema import resolve_ref, subschemas


def accepted_types(schema: Any, root: dict[str, Any]) -> set[str] | None:
    """The JSON types a (sub)schema can accept, or None when it accepts any type."""
    if not isinstance(schema, dict):
        return None
    schema = resolve_ref(schema, root)
    if "type" in schema:
        kinds = schema["type"]
        return set(kinds) if isinstance(kinds, list) else {kinds}
    if "const" in schema:
        return {json_type(schema["const"])}
    if "enum" in schema:
        return {json_type(v) for v in schema["enum"]}
    for keyword in ("oneOf", "anyOf"):
        if keyword in schema:
            union: set[str] = set()
            for alt in schema[keyword]:
                kinds = accepted_types(alt, root)
                if kinds is None:
                    return None
                union |= kinds
            return union
    return None


def _type_matches(kinds: set[str] | None, value: Any) -> bool:
    actual = json_type(value)
    if kinds is None or actual in kinds:
        return True
    return actual == "integer" and "number" in kinds


def _example(schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """A value to show in a fix: the schema's first example, else its default."""
    target = resolve_ref(schema, root)
    for source in (schema, target):
        if source.get("examples"):
            return source["examples"][0]
    for source in (schema, target):
        if "default" in source and source["default"] not in (None, [], {}):
            return source["default"]
    return None


def inline_yaml(value: Any) -> str:
    """A value as it would be written inline in a YAML spec (``null``, ``true``, ``[1, 2]``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(inline_yaml(v) for v in value) + "]"
    return str(value)


def _field_name(path: Path) -> str:
    names = [p for p in path if isinstance(p, str)]
    return names[-1] if names else "this value"


class SchemaErrorTranslator:
    """Reports jsonschema errors for one spec as SpecErrors, through a :class:`Reporter`."""

    def __init__(self, schema: dict[str, Any], reporter: Reporter, data: Any = None) -> None:
        self.root = schema
        self.report = reporter
        self.data = data  # the whole spec, so a fix can quote the edit it is about
        self._handlers: dict[str, Callable[[ValidationError, Path], None]] = {
            "additionalProperties": self._additional_properties,
            "required": self._required,
            "type": self._type,
            "const": self._const,
            "enum": self._enum,
            "minItems": self._min_items,
            "uniqueItems": self._unique_items,
            "minLength": self._empty_text,
            "pattern": self._pattern,
            "minimum": self._minimum,
            "maximum": self._bound,
            "exclusiveMinimum": self._bound,
            "exclusiveMaximum": self._bound,
        }

    def translate(self, errors: Iterable[ValidationError]) -> None:
        for error in errors:
            for leaf in self._leaves(error):
                path = tuple(leaf.absolute_path)
                handler = self._handlers.get(leaf.validator, self._fallback)
                handler(leaf, path)

    # -- choosing among alternatives ---------------------------------------------------

    def _leaves(self, error: ValidationError) -> Iterator[ValidationError]:
        """The errors to report for ``error``: itself, or those of the alternative the user meant."""
        if error.validator not in ("oneOf", "anyOf") or not error.context:
            yield error
            return
        if self._meant_as_list_item(error):
            yield self._no_alternative_fits(error, only=["array"])
            return
        by_alternative: dict[int, list[ValidationError]] = defaultdict(list)
        for sub in error.context:
            by_alternative[sub.relative_schema_path[0]].append(sub)
        fitting = [
            i
            for i, alt in enumerate(error.validator_value)
            if _type_matches(accepted_types(alt, self.root), error.instance) and by_alternative.get(i)
        ]
        if not fitting:
            yield self._no_alternative_fits(error)
            return
        # The alternative whose errors go deepest is the one the user got furthest into.
        best = max(fitting, key=lambda i: (max(len(e.absolute_path) for e in by_alternative[i]), -len(by_alternative[i])))
        for sub in by_alternative[best]:
            yield from self._leaves(sub)

    def _meant_as_list_item(self, error: ValidationError) -> bool:
        """A mapping written where a list of such mappings was meant (``edits: {prompt: ...}`` without the ``-``).

        True when one alternative is a list whose items know more of the
        mapping's keys than any mapping alternative does, so that alternative's
        complaints (unknown keys) would mislead.
        """
        if not isinstance(error.instance, dict) or not error.instance:
            return False
        keys = set(error.instance)
        as_item, as_mapping = 0, 0
        for alt in error.validator_value:
            alt = resolve_ref(alt, self.root)
            items = alt.get("items") if alt.get("type") == "array" else None
            if isinstance(items, dict):
                as_item = max(as_item, len(keys & set(resolve_ref(items, self.root).get("properties", {}))))
            as_mapping = max(as_mapping, len(keys & set(alt.get("properties", {}))))
        return as_item > as_mapping

    def _no_alternative_fits(self, error: ValidationError, only: list[str] | None = None) -> ValidationError:
        """A synthetic ``type`` error listing every type the alternatives accept (or the types ``only``)."""
        kinds: list[str] = list(only or [])
        for alt in error.validator_value if only is None else []:
            for kind in sorted(accepted_types(alt, self.root) or []):
                if kind not in kinds:
                    kinds.append(kind)
        return ValidationError(
            message="",
            validator="type",
            validator_value=kinds,
            instance=error.instance,
            schema=error.schema,
            path=error.path,
            parent=error.parent,
        )

    # -- one translator per keyword ------------------------------------------------------

    def _additional_properties(self, error: ValidationError, path: Path) -> None:
        allowed = list(error.schema.get("properties", {}))
        method = error.schema.get("x-keditlab-method")
        misspelt = set(_misspellings(error.schema, error.instance).values())
        for key in error.instance:
            if key in allowed or key in misspelt:
                continue  # a misspelling of a missing required key is reported once, by _required
            hint = did_you_mean(key, allowed)
            match = closest(key, allowed)
            if method:
                settings = [k for k in allowed if k not in ("name", "label")]
                message = f"unknown setting '{key}' for method '{method}'{hint}"
                fix = f"rename it to '{match}'. " if match else "remove it. "
                fix += f"Settings of {method}: {quoted_list(settings)} (and name, label)"
            else:
                message = f"unknown key '{key}'{hint}"
                fix = f"rename it to '{match}'. " if match else "remove it. "
                fix += f"Allowed keys here: {quoted_list(allowed)}"
                if not path and not match and key in self._all_method_settings():
                    fix = f"'{key}' is a method setting: write it inside the method, e.g. method: {{name: rome, {key}: ...}}"
            self.report.add((*path, key), message, fix, at="key")

    def _required(self, error: ValidationError, path: Path) -> None:
        properties = error.schema.get("properties", {})
        misspelt = _misspellings(error.schema, error.instance)
        for key in error.validator_value:
            if key in error.instance:
                continue
            if key in misspelt:  # `targett: Rome` and no `target`: one problem, one fix
                wrong = misspelt[key]
                self.report.add((*path, wrong), f"unknown key '{wrong}' (did you mean '{key}'?), and '{key}' is missing",
                                f"rename '{wrong}' to '{key}'", at="key")
                continue
            prop = properties.get(key, {})
            description = resolve_ref(prop, self.root).get("description", "") if prop else ""
            first_sentence = description.split(". ")[0].rstrip(".")
            explain = f" ({first_sentence[0].lower()}{first_sentence[1:]})" if first_sentence else ""
            if not path and key == "keditlab":
                fix = "add `keditlab: 1` as the first line"
            elif key == "edits":
                fix = "add a list of edits, e.g. `edits: [{prompt: \"The Eiffel Tower is in\", subject: Eiffel Tower, target: Rome}]`"
            elif (own := suggested_value(key, error.instance)) is not None:
                fix = f"add `{key}: {own}`"
            else:
                example = _example(prop, self.root) if prop else None
                fix = f"add `{key}: {inline_yaml(example)}`" if example is not None else f"add `{key}:`"
            self.report.add(path, f"missing required key '{key}'{explain}", fix)

    def _type(self, error: ValidationError, path: Path) -> None:
        expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        value = error.instance
        if not path:
            message = f"a spec must be a mapping of keys (keditlab:, model:, method:, edits:, ...), got {describe_value(value)}"
            if value is None:
                message += "; the file is empty"
            self.report.add(path, message, "start from the example in docs/spec.md")
            return
        got = describe_value(value)
        written = self.report.source_map.raw.get(path)
        if value is None and not written:
            got = f"nothing (no value after '{_field_name(path)}:')"
        elif written and not isinstance(value, str) and written != inline_yaml(value):
            got = f"{written}, which YAML reads as {got}"
        message = f"expected {describe_types(expected)}, got {got}"
        name = _field_name(path)
        number_form = error.schema.get("x-keditlab-number-form")
        text_form = error.schema.get("x-keditlab-text-form")
        if error.schema.get("x-keditlab-layer") and value is not None:
            message, fix = self._layer_problem(error, path)
        elif number_form and isinstance(value, int) and not isinstance(value, bool):
            fix = f"write {name}: {number_form.format(value)}"
        elif text_form and isinstance(value, str) and "object" in expected:
            fix = f"to read {name} from a file, write {name}: {text_form.format(value)} (docs/spec.md lists the formats)"
        elif "string" in expected and isinstance(value, (bool, int, float)):
            fix = f"put the value in quotes: {name}: \"{written or inline_yaml(value)}\""
        elif value is None:
            fix = f"write a value after '{name}:'"
        elif "array" in expected and "object" not in expected:
            fix = f"write {name} as a list: one '- item' line per entry, or [a, b]"
        elif "object" in expected and "string" not in expected:
            fix = f"write {name} as key: value lines indented under '{name}:'"
        elif (own := self._own_value(path)) is not None:
            fix = f"e.g. {name}: {own}"
        else:
            example = _example(error.schema, self.root)
            fix = f"e.g. {name}: {inline_yaml(example)}" if example is not None else ""
        self.report.add(path, message, fix)

    def _own_value(self, path: Path) -> str | None:
        """A value for the field at ``path`` built from its own mapping (an edit's prompt, ...), or None."""
        if not path or not isinstance(path[-1], str):
            return None
        return suggested_value(path[-1], self._instance_at(path[:-1]))

    def _instance_at(self, path: Path) -> Any:
        value = self.data
        for part in path:
            try:
                value = value[part]
            except (KeyError, IndexError, TypeError):
                return None
        return value

    def _layer_problem(self, error: ValidationError, path: Path) -> tuple[str, str]:
        """``layers: five``: say that layer numbers are expected, in the form this setting takes (a list or one number)."""
        name = _field_name(path)
        alternatives = self._layer_alternatives(error)
        as_list = "array" in alternatives
        auto = "auto" in alternatives.get("enum", ())
        numbers = _layer_numbers(error.instance)
        got = describe_value(error.instance)
        written = self.report.source_map.raw.get(path)
        if written and not isinstance(error.instance, str) and written != inline_yaml(error.instance):
            got = f"{written}, which YAML reads as {got}"
        if path and isinstance(path[-1], int):  # one item of a list of layers
            return (f"expected a layer number, got {got}",
                    f"write each layer as a whole number counted from 0, e.g. `{name}: {inline_yaml(numbers or [3, 4, 5])}`")
        kind = "a list of layer numbers" if as_list else "a layer number"
        message = f"expected {kind}{' or auto' if auto else ''}, got {got}"
        if as_list:
            example = inline_yaml(numbers or [3, 4, 5])
        else:
            example = str(numbers[0]) if len(numbers) == 1 else "5"
        fix = f"write `{name}: {example}` (layers are numbered from 0)"
        if auto:
            fix += f", or `{name}: auto` (chosen by causal tracing)"
        method = self._method_of(path) or "the method"
        fix += f", or leave '{name}' out for {method}'s default"
        return message, fix

    def _layer_alternatives(self, error: ValidationError) -> dict[str, Any]:
        """What a layer setting accepts: ``{"array": True}`` for a list, ``{"enum": [...]}`` for words like auto."""
        schema = error.schema
        if "oneOf" not in schema and error.parent is not None and "oneOf" in error.parent.schema:
            schema = error.parent.schema  # the failing alternative's error: its siblings are the parent's
        found: dict[str, Any] = {"enum": []}
        for alt in schema.get("oneOf", [schema]):
            alt = resolve_ref(alt, self.root)
            kinds = alt.get("type", [])
            if "array" in (kinds if isinstance(kinds, list) else [kinds]):
                found["array"] = True
            found["enum"] += [v for v in alt.get("enum", []) if isinstance(v, str)]
        return found

    def _method_of(self, path: Path) -> str | None:
        """The method name of the mapping that holds ``path`` (for "rome's default")."""
        holder = self._instance_at(path[:-1])
        name = holder.get("name") if isinstance(holder, dict) else None
        return name if isinstance(name, str) else None

    def _const(self, error: ValidationError, path: Path) -> None:
        if path == ("keditlab",):
            self.report.add(
                path,
                f"unsupported spec language version {inline_yaml(error.instance)}; this keditlab reads version {error.validator_value}",
                f"write `keditlab: {error.validator_value}`",
            )
            return
        self.report.add(path, f"must be {inline_yaml(error.validator_value)}, got {describe_value(error.instance)}")

    def _enum(self, error: ValidationError, path: Path) -> None:
        if error.parent is not None and error.parent.schema.get("x-keditlab-layer"):  # `layers: five`
            message, fix = self._layer_problem(error, path)
            self.report.add(path, message, fix)
            return
        noun = error.schema.get("x-keditlab-noun", "value")
        choices = error.validator_value
        value = error.instance
        if not isinstance(value, str):
            self.report.add(path, f"expected a {noun} name, got {describe_value(value)}", f"use one of: {quoted_list(choices)}")
            return
        match = closest(value, choices)
        # a text far from every word, where a mapping may stand instead (`judge: gpt-4o` for `judge: {model: gpt-4o}`)
        text_form = error.parent.schema.get("x-keditlab-text-form") if error.parent is not None else None
        fix = f"write '{match}'" if match else f"write {_field_name(path)}: {text_form.format(value)}" if text_form else "use a known one"
        self.report.add(path, f"unknown {noun} '{value}'{did_you_mean(value, choices)}", f"{fix}. Known {noun}s: {quoted_list(choices)}")

    def _min_items(self, error: ValidationError, path: Path) -> None:
        name = _field_name(path)
        least = "one item" if error.validator_value == 1 else f"{error.validator_value} items"
        self.report.add(path, f"{name} is an empty list; it needs at least {least}", f"add at least one entry under '{name}:'")

    def _unique_items(self, error: ValidationError, path: Path) -> None:
        counts = Counter(repr(v) for v in error.instance)
        repeated = [v for v in dict.fromkeys(map(repr, error.instance)) if counts[v] > 1]
        self.report.add(path, f"{_field_name(path)} lists {', '.join(repeated)} more than once", "list each only once")

    def _empty_text(self, error: ValidationError, path: Path) -> None:
        name = _field_name(path)
        own = self._own_value(path)
        example = own if own is not None else _example(error.schema, self.root)
        fix = f"write a non-empty value, e.g. {name}: {inline_yaml(example)}" if example is not None else "write a non-empty value"
        if name == "ground_truth":
            fix += ", or leave ground_truth out"
        self.report.add(path, f"{name} is empty", fix)

    def _pattern(self, error: ValidationError, path: Path) -> None:
        """A text that does not match a ``pattern``: empty text, or not one of the forms it allows."""
        forms = error.schema.get("x-keditlab-forms")
        value = error.instance
        if not forms or not value.strip():
            self._empty_text(error, path)
            return
        noun = error.schema.get("x-keditlab-noun", "value")
        # The right word in the wrong case, with spaces, or a number without its colon (`CUDA`, `cuda1`).
        normalised = re.sub(r"([a-z])[\s:_-]*(\d)", r"\1:\2", value.strip().lower())
        aliases = error.schema.get("x-keditlab-aliases", {})
        if re.fullmatch(error.validator_value, normalised):
            match = normalised
        elif normalised in aliases:
            match = aliases[normalised]
        else:  # `cuda:N` stands for cuda:0, cuda:1, ...: compare with a real instance of each form
            match = closest(value, [form.replace(":N", ":0") for form in forms])
        hint = f" (did you mean '{match}'?)" if match else ""
        fix = f"write '{match}'. " if match else ""
        self.report.add(path, f"unknown {noun} '{value}'{hint}", f"{fix}Known {noun}s: {quoted_list(forms)}")

    def _minimum(self, error: ValidationError, path: Path) -> None:
        if error.schema.get("x-keditlab-layer"):
            self.report.add(path, f"layer {error.instance} is negative; layers are numbered from 0", "use a layer index of 0 or more")
            return
        name = _field_name(path)
        leave_out = "" if name in self._required_keys() else f", or leave '{name}' out for its default"
        self.report.add(path, f"{name} must be at least {error.validator_value}, got {error.instance}",
                        f"give {error.validator_value} or more{leave_out}")

    def _bound(self, error: ValidationError, path: Path) -> None:
        # maximum / exclusiveMinimum / exclusiveMaximum: the whole valid range, from the schema
        name = _field_name(path)
        words = {"minimum": ">= {}", "exclusiveMinimum": "> {}", "maximum": "<= {}", "exclusiveMaximum": "< {}"}
        valid = " and ".join(words[k].format(error.schema[k]) for k in words if k in error.schema)
        leave_out = "" if name in self._required_keys() else f", or leave '{name}' out for its default"
        self.report.add(path, f"{name} must be {valid}, got {error.instance}", f"give a value {valid}{leave_out}")

    def _fallback(self, error: ValidationError, path: Path) -> None:
        # A keyword with no translator of its own; say which rule failed, plainly.
        self.report.add(path, f"invalid value {describe_value(error.instance)} (fails the schema's '{error.validator}' rule: {error.validator_value!r})")

    def _required_keys(self) -> set[str]:
        """Keys some object of the schema requires: they have no default to fall back on."""
        return {key for _, sub in subschemas(self.root) for key in sub.get("required", [])}

    def _all_method_settings(self) -> set[str]:
        settings: set[str] = set()
        for definition in self.root.get("$defs", {}).values():
            if definition.get("x-keditlab-method"):
                settings |= set(definition.get("properties", {})) - {"name", "label"}
        return settings


def _layer_numbers(value: Any) -> list[int]:
    """The layer numbers a wrongly written layer setting holds: ``'3-5'`` → 3, 4, 5; ``'1, 2'`` → 1, 2; ``five`` → none."""
    if isinstance(value, (bool, dict)):
        return []
    span = re.fullmatch(r"\s*(\d+)\s*(?:-|\.\.|to)\s*(\d+)\s*", str(value))
    if span and int(span[1]) <= int(span[2]):
        return list(range(int(span[1]), int(span[2]) + 1))
    return [n for n in map(int, re.findall(r"-?\d+", str(value))) if n >= 0]


def _misspellings(schema: dict[str, Any], instance: Any) -> dict[str, str]:
    """Each required key missing from ``instance`` that an unknown key beside it misspells: ``{target: targett}``."""
    if not isinstance(instance, dict):
        return {}
    allowed = list(schema.get("properties", {}))
    missing = [k for k in schema.get("required", []) if k not in instance]
    found: dict[str, str] = {}
    for key in instance:
        if key in allowed or not isinstance(key, str):
            continue
        match = closest(key, allowed)
        if match in missing and match not in found:
            found[match] = key
    return found


