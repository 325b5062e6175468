"""Every ```python block of README.md and docs/*.md is checked against the code (no model needed).

* every block parses (a notebook cell after IPython's own transformation of its
  ``%`` lines);
* every ``keditlab`` name a block uses exists: ``import keditlab.x``,
  ``from keditlab.x import y`` and attribute chains such as
  ``keditlab.widgets.data.metrics_frame`` are resolved on the real package, so a
  renamed function or a moved module fails here, naming the block;
* the ``>>>`` blocks run as doctests and print what the page says they print.

The blocks that need the embedded model run in the integration tier
(``tests/integration/test_docs_python_real.py``).  The sample validation error in
docs/runs.md is the real message, checked below by validating the spec it
comes from.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import os
import re
import subprocess
import sys

import pytest
from doc_blocks import ROOT, Block, python_blocks

BLOCKS = python_blocks()


def test_the_docs_have_python_blocks():
    files = {b.file for b in BLOCKS}
    assert {"README.md", "docs/runs.md"} <= files, files


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.name)
def test_block_parses(block: Block):
    if block.is_doctest:
        examples = doctest.DocTestParser().get_examples(block.code)
        assert examples, f"{block.name}: a '>>>' block with no example"
        for example in examples:
            ast.parse(example.source)
    else:
        ast.parse(block.python(), block.name)


def _keditlab_names(tree: ast.AST) -> list[tuple[str, int]]:
    """Dotted ``keditlab...`` names a block imports or uses, with their line."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names if alias.name.split(".")[0] == "keditlab"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "keditlab":
            names += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
        elif isinstance(node, ast.Attribute) and not isinstance(getattr(node, "_parent", None), ast.Attribute):
            parts, inner = [], node
            while isinstance(inner, ast.Attribute):
                parts.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id == "keditlab":
                names.append((".".join(["keditlab", *reversed(parts)]), node.lineno))
    return names


def _resolve(dotted: str) -> None:
    """Import or look up ``dotted`` (``keditlab.a.b.c``) the way Python would; raises what Python raises."""
    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            obj = importlib.import_module(".".join(parts[: i + 1]))  # a submodule not imported yet


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.name)
def test_keditlab_names_in_block_exist(block: Block):
    source = "\n".join(e.source for e in doctest.DocTestParser().get_examples(block.code)) if block.is_doctest else block.python()
    tree = ast.parse(source)
    for node in ast.walk(tree):  # so that only the outermost attribute of a chain is taken
        for child in ast.iter_child_nodes(node):
            child._parent = node
    missing = []
    for dotted, line in _keditlab_names(tree):
        try:
            _resolve(dotted)
        except (ImportError, AttributeError) as exc:
            missing.append(f"{dotted} (block line {line}): {exc}")
    assert not missing, f"{block.name} uses names keditlab does not have:\n" + "\n".join(missing)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.is_doctest], ids=lambda b: b.name)
def test_doctest_block_prints_what_the_page_says(block: Block):
    test = doctest.DocTestParser().get_doctest(block.code, {}, block.name, block.file, block.line)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    out: list[str] = []
    runner.run(test, out=out.append)
    assert not runner.failures, "".join(out)


# The spec behind docs/runs.md's sample error: `rome` (which cannot batch) in mode batch, at line 8.
BATCH_ROME = """keditlab: 1
model: smollm2-135m
method: rome
edits:
  - {prompt: "The Eiffel Tower is located in the city of", subject: Eiffel Tower, target: Rome}
  - {prompt: "The Colosseum is located in the city of", subject: Colosseum, target: London}
run:
  mode: batch
  batch_size: 2
"""


def test_runs_md_sample_error_is_the_real_message(tmp_path):
    (tmp_path / "demo.yaml").write_text(BATCH_ROME, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "keditlab.cli", "validate", "demo.yaml"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    real = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("demo.yaml:")]
    assert done.returncode != 0 and real, done.stdout + done.stderr
    page = (ROOT / "docs" / "runs.md").read_text(encoding="utf-8")
    shown = re.findall(r"^demo\.yaml:\d+:\d+: method: .*$", page, re.M)
    assert shown == [real[0]], f"docs/runs.md shows\n  {shown}\nthe validator says\n  {real[0]}"


def test_runs_md_methods_excerpt_is_the_real_listing():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    listing = subprocess.run([sys.executable, "-m", "keditlab.cli", "methods"], env=env, capture_output=True, text=True,
                             timeout=120).stdout.splitlines()
    page = (ROOT / "docs" / "runs.md").read_text(encoding="utf-8")
    excerpt = re.search(r"```\n(rome: .*?)```", page, re.S).group(1).splitlines()
    start = listing.index(excerpt[0])
    assert listing[start:start + len(excerpt)] == excerpt, "docs/runs.md's `keditlab methods` excerpt differs from the real listing"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_docs_resolve():
    """Every relative link of README.md and docs/*.md to a .md file (and its #anchor) points at something that exists."""
    from doc_blocks import doc_files

    broken = []
    for path in doc_files():
        for target, anchor in re.findall(r"\]\(([^)#:\s]+\.md)(?:#([^)\s]+))?\)", path.read_text(encoding="utf-8")):
            linked = (path.parent / target).resolve()
            if not linked.exists():
                broken.append(f"{path.name}: {target}")
            elif anchor:
                text = linked.read_text(encoding="utf-8")
                anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)} | set(re.findall(r'<a id="([^"]+)"', text))
                if anchor not in anchors:
                    broken.append(f"{path.name}: {target}#{anchor}")
    assert not broken, f"links to nothing: {broken}"
