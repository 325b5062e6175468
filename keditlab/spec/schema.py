"""Where the JSON Schema of the spec language lives, and how it is read.

The schema is a data file, not code, so editors and other tools can use it
too.  A wheel ships it inside the package (``keditlab/_schemas``, see
``pyproject.toml``); an editable install reads it from the repository's
``schemas/`` folder.  It is generated from the method registry by
``python -m keditlab.devtools.generate --write``; do not edit it by hand.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from collections.abc import Iterator
from typing import Any, NamedTuple

SCHEMA_FILE = "spec.schema.json"

#: ``schemas/`` at the root of a source checkout (editable installs).
REPO_SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def schema_text() -> str:
    """The schema's JSON text, from the installed package if present, else from the checkout."""
    packaged = resources.files("keditlab") / "_schemas" / SCHEMA_FILE
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    repo_file = REPO_SCHEMA_DIR / SCHEMA_FILE
    if repo_file.is_file():
        return repo_file.read_text(encoding="utf-8")
    raise FileNotFoundError(
        f"the spec schema {SCHEMA_FILE} was found neither in the installed package (keditlab/_schemas) "
        f"nor at {repo_file}; run `python -m keditlab.devtools.generate --write` in the repository"
    )


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The spec language's JSON Schema as a dict (read once; treat it as read-only)."""
    return json.loads(schema_text())


def resolve_ref(schema: dict[str, Any], root: dict[str, Any] | None = None) -> dict[str, Any]:
    """Follow local ``$ref`` s (``#/$defs/...``) until a schema without one is reached."""
    root = root if root is not None else load_schema()
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema and seen < 32:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local $refs are supported in the spec schema, got {ref!r}")
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        schema = target
        seen += 1
    return schema


def subschemas(schema: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every mapping inside ``schema`` (the schema itself included), with where it is: ``/$defs/run/properties/seed``."""
    if isinstance(schema, dict):
        yield path, schema
        for key, value in schema.items():
            yield from subschemas(value, f"{path}/{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            yield from subschemas(value, f"{path}/{i}")


class MethodSetting(NamedTuple):
    """One setting of an editing method: its name, default and help text."""

    name: str
    default: Any
    help: str


class MethodInfo(NamedTuple):
    """An editing method as the schema describes it: name, one-line summary, settings in order, capabilities.

    ``capabilities`` is the method's ``Capabilities`` as a dict (``batch``,
    ``sequential``, ``needs_statistics``, ``changes_weights``, ``restorable``).
    """

    name: str
    summary: str
    settings: tuple[MethodSetting, ...]
    capabilities: dict[str, bool] = {}
    family: str = ""
    paper: str = ""


#: The run modes beyond ``single`` (which every method can do), in the order they are listed.
_MODE_CAPABILITIES = ("batch", "sequential")


def describe_capabilities(capabilities: dict[str, bool]) -> str:
    """One readable line: ``can: batch, sequential · needs statistics · changes weights · restorable``.

    Every method can run in mode ``single``, so only ``batch`` and
    ``sequential`` are listed after ``can:`` (a missing one is named with
    ``not``, since that is what a user trips over).
    """
    can = [c for c in _MODE_CAPABILITIES if capabilities.get(c)]
    cannot = [c for c in _MODE_CAPABILITIES if not capabilities.get(c)]
    modes = "can: " + (", ".join(can) if can else "single edits only") + (f" (not {', '.join(cannot)})" if can and cannot else "")
    return " · ".join([
        modes,
        "needs statistics" if capabilities.get("needs_statistics") else "no statistics",
        "changes weights" if capabilities.get("changes_weights", True) else "leaves weights unchanged",
        "restorable" if capabilities.get("restorable", True) else "not restorable",
    ])


def method_catalogue(schema: dict[str, Any] | None = None) -> list[MethodInfo]:
    """Every registered editing method with its settings and capabilities, read from the schema.

    The schema's method definitions are generated from the method registry
    (each method's ``summary``, ``capabilities`` and config dataclass: field
    order, defaults, ``metadata["help"]``), so this is the registry's own information, read
    without importing the methods, and so without torch: ``keditlab methods``
    answers at once.  A test keeps the two identical.
    """
    root = schema if schema is not None else load_schema()
    defs = root["$defs"]
    catalogue = []
    for name in defs["method-name"]["enum"]:
        method = defs[f"method-{name}"]
        settings = tuple(
            MethodSetting(key, prop.get("default"), prop.get("description", ""))
            for key, prop in method["properties"].items()
            if key not in ("name", "label")
        )
        catalogue.append(MethodInfo(name, method.get("description", ""), settings, dict(method.get("x-keditlab-capabilities", {})),
                                    method.get("x-keditlab-family", ""), method.get("x-keditlab-paper", "")))
    return catalogue
