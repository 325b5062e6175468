"""Where the JSON Schema of the spec language lives, and how it is read.

The schema is a data file, not code, so editors and other tools can use it
too.  A wheel ships it inside the package (``keditlab/_schemas``, see
``pyproject.toml``); an editable install reads it from the repository's
``schemas/`` folder.  It is generated from the method registry by
``python -m keditlab.devtools.schema --write``; do not edit it by hand.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

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
        f"nor at {repo_file}; run `python -m keditlab.devtools.schema --write` in the repository"
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
