"""Imports point down only: each layer, imported alone in a fresh interpreter, loads nothing above it.

The layers, bottom up (docs/architecture.md): the ground vocabulary
(:mod:`keditlab.vocabulary`: ``EditCase``, ``Probe``, metric and protocol
names), the benchmark readers (:mod:`keditlab.data`), the spec language
(:mod:`keditlab.spec`, which reads a spec's benchmark file through
:mod:`keditlab.data` when it resolves one), then models, evaluation, methods,
the runner and the faces.  Two checks per layer: what a fresh interpreter has
loaded after importing it (catches a heavy import such as torch), and the
``import`` statements in its source files, those inside functions included
(catches an upward arrow that is only taken later, as ``spec -> data -> spec``
once was).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "keditlab"


def loaded_after_import(module: str) -> set[str]:
    """The modules a fresh interpreter has loaded after ``import module``."""
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def keditlab_imports(path: Path) -> set[str]:
    """The keditlab modules the source files under ``path`` import, at the top or inside a function."""
    files = [path] if path.is_file() else sorted(path.rglob("*.py"))
    found: set[str] = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return {name for name in found if name == "keditlab" or name.startswith("keditlab.")}


def layers(modules: set[str]) -> set[str]:
    """``keditlab.spec.types`` -> ``keditlab.spec``: the layers among ``modules``."""
    return {".".join(m.split(".")[:2]) for m in modules if m.startswith("keditlab.")}


def test_the_vocabulary_imports_nothing_of_keditlab_and_nothing_heavy():
    loaded = loaded_after_import("keditlab.vocabulary")
    assert layers(loaded) == {"keditlab.vocabulary"}
    assert not {"torch", "yaml", "jsonschema", "numpy"} & loaded
    assert keditlab_imports(PACKAGE / "vocabulary.py") == set()


def test_the_benchmark_readers_build_on_the_vocabulary_not_on_the_spec_language():
    loaded = loaded_after_import("keditlab.data")
    assert layers(loaded) == {"keditlab.data", "keditlab.vocabulary"}, "keditlab.data imports another layer"
    assert not {"torch", "yaml", "jsonschema"} & loaded
    imported = layers(keditlab_imports(PACKAGE / "data"))
    assert imported <= {"keditlab.data", "keditlab.vocabulary"}, f"keditlab.data imports {sorted(imported)}"


def test_the_spec_language_imports_no_torch_and_reads_benchmarks_only_when_a_spec_names_one():
    loaded = loaded_after_import("keditlab.spec")
    assert layers(loaded) == {"keditlab.spec", "keditlab.vocabulary"}
    assert "torch" not in loaded and "keditlab.data" not in loaded
    # The one arrow out of the spec language besides the vocabulary: spec -> data, to read a benchmark file.
    imported = layers(keditlab_imports(PACKAGE / "spec"))
    assert imported <= {"keditlab.spec", "keditlab.vocabulary", "keditlab.data"}, f"keditlab.spec imports {sorted(imported)}"


@pytest.mark.parametrize("layer, above", [
    ("evaluate", {"methods", "runner", "widgets", "cli", "trace", "stats", "data"}),
    ("methods", {"runner", "widgets", "cli"}),
    ("models", {"evaluate", "methods", "runner", "widgets", "cli", "trace", "stats", "data"}),
])
def test_lower_layers_import_nothing_above_them(layer, above):
    imported = layers(keditlab_imports(PACKAGE / layer))
    upward = sorted(imported & {f"keditlab.{name}" for name in above})
    assert not upward, f"keditlab.{layer} imports {upward}, a layer above it"


def module_tables(file: Path) -> dict[str, object]:
    """The module-level names ``file`` binds to a literal tuple, list or dict (``NAME = ("a", "b")``)."""
    tables: dict[str, object] = {}
    for node in ast.parse(file.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, (ast.Tuple, ast.List, ast.Dict)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            tables.update((t.id, value) for t in targets if isinstance(t, ast.Name))
    return tables


def test_the_shared_tables_are_declared_once_in_the_vocabulary():
    from keditlab import vocabulary

    shared = {"protocol names": tuple(vocabulary.PROTOCOLS), "protocol short names": dict(vocabulary.PROTOCOL_SHORT),
              "metric names": tuple(vocabulary.METRIC_NAMES), "trace kinds": tuple(vocabulary.TRACE_KINDS)}
    again = []
    for file in sorted(PACKAGE.rglob("*.py")):
        if file.name == "vocabulary.py" and file.parent == PACKAGE:
            continue
        for name, value in module_tables(file).items():
            value = tuple(value) if isinstance(value, list) else value
            again += [f"{file.relative_to(REPO)}: {name} repeats the {what}; import it from keditlab.vocabulary"
                      for what, table in shared.items() if value == table]
    assert not again, "\n".join(again)


def test_the_shared_names_stay_importable_where_users_found_them():
    from keditlab import evaluate, spec, vocabulary
    from keditlab.spec import types

    assert spec.EditCase is types.EditCase is vocabulary.EditCase and types.Probe is vocabulary.Probe
    assert spec.METRIC_NAMES is types.METRIC_NAMES is vocabulary.METRIC_NAMES
    assert evaluate.PROTOCOLS is spec.PROTOCOLS is types.PROTOCOLS is vocabulary.PROTOCOLS
    assert set(vocabulary.PROTOCOL_SHORT) == set(vocabulary.PROTOCOLS)
    assert vocabulary.PROTOCOL_LONG == {"tf": "teacher_forced", "prob": "probability", "gen": "generation"}
    assert set(vocabulary.METRIC_PROTOCOLS) == set(vocabulary.METRIC_NAMES)
    assert all(set(p) <= set(vocabulary.PROTOCOLS) for p in vocabulary.METRIC_PROTOCOLS.values())
