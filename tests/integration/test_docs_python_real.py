"""The ```python blocks of README.md and docs/*.md that need a real model, run on the embedded one.

Each block runs as written, in a fresh namespace, in a temporary folder that
holds the checkout's ``specs/`` (as a user's clone does), statement by
statement: a statement whose line carries a comment naming an error (``#
MetricLookupError: ...``) must raise that error, every other must not.  Two
allowances for time, the code of the blocks unchanged: ``keditlab.run`` keeps
the first edit of the spec it is given (the README's quickstart has six;
the quickstart itself is run whole by ``test_quickstart.py``), ``keditlab.sweep``
runs the first cell of its grid with that cell's first edit, and causal
tracing takes two noise draws at two token positions (a full trace is
thousands of forward passes; ``test_trace_real.py`` checks its figures).  The checks that need no model (every block parses,
every ``keditlab`` name exists, the ``>>>`` blocks) are in
``tests/unit/test_docs_python.py``; every block that is neither a doctest nor a
notebook cell must be listed here, so none is left unrun.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import re

import pytest
from doc_blocks import ROOT, Block, python_blocks

pytestmark = pytest.mark.integration

#: block (file, text it contains) -> why it is cheap enough here
RUN = {
    ("README.md", 'keditlab.run("specs/quickstart.yaml")'): "the quickstart, its first edit kept; a ROME edit by hand",
    ("docs/runs.md", 'keditlab.apply_edit("ft-m"'): "FT-M, six edits in two calls, undone",
    ("docs/tracing.md", "trace_kinds("): "causal tracing of one fact, two noise draws at two token positions",
    ("docs/sweeps.md", 'keditlab.sweep("specs/sweep_knowedit.yaml")'): "the sweep's first cell, its first edit kept",
}
EXPECTED_ERROR = re.compile(r"#\s*([A-Z]\w*(?:Error|Exception))\b")


def _runnable() -> list[Block]:
    return [b for b in python_blocks() if not b.is_doctest and not b.is_ipython]


def test_every_plain_block_is_run_here():
    listed = {(b.file, key) for b in _runnable() for file, key in RUN if b.file == file and key in b.code}
    unlisted = [b.name for b in _runnable() if not any(b.file == f and k in b.code for f, k in RUN)]
    assert not unlisted, f"python blocks run by no test (add them to RUN, or make them doctests): {unlisted}"
    assert len(listed) == len(RUN), f"RUN names blocks that are gone: {set(RUN) - {(f, k) for f, k in listed}}"


@pytest.fixture
def in_checkout_like_folder(tmp_path, monkeypatch):
    (tmp_path / "specs").symlink_to(ROOT / "specs", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    import keditlab

    original = keditlab.run

    def first_edit(spec, out="runs", **kwargs):
        spec = keditlab.load(spec)
        return original(dataclasses.replace(spec, edits=spec.edits[:1]), out, **kwargs)

    monkeypatch.setattr(keditlab, "run", first_edit)
    original_sweep = keditlab.sweep

    def first_cell(spec, out=None, **kwargs):
        grid = keditlab.load_sweep(spec)
        first = dataclasses.replace(grid.specs[0], edits=grid.specs[0].edits[:1])
        one = dataclasses.replace(grid, grid=dataclasses.replace(grid.grid, cells=grid.cells[:1]), specs=(first,))
        return original_sweep(one, out, **kwargs)

    monkeypatch.setattr(keditlab, "sweep", first_cell)
    import keditlab.trace

    for name in ("trace", "trace_kinds"):  # the blocks import them from keditlab.trace when they run
        monkeypatch.setattr(keditlab.trace, name, functools.partial(getattr(keditlab.trace, name), samples=2, tokens=[3, -1]))
    return tmp_path


def _run_block(block: Block) -> dict:
    lines = block.code.splitlines()
    namespace: dict = {"__name__": "__docs__"}
    for statement in ast.parse(block.code, block.name).body:
        source = "\n".join(lines[statement.lineno - 1:statement.end_lineno])
        expected = EXPECTED_ERROR.search(source)
        code = compile(ast.Module(body=[statement], type_ignores=[]), f"{block.name}+{statement.lineno}", "exec")
        if expected:
            with pytest.raises(Exception) as caught:
                exec(code, namespace)
            names = [cls.__name__ for cls in type(caught.value).__mro__]
            assert expected.group(1) in names, f"{block.name} line {statement.lineno}: raised {names[0]}, the page says {expected.group(1)}"
        else:
            try:
                exec(code, namespace)
            except Exception as exc:  # noqa: BLE001 - reported with the block's place
                pytest.fail(f"{block.name} line {statement.lineno} ({source.strip()[:80]!r}) raised {type(exc).__name__}: {exc}")
    return namespace


@pytest.mark.parametrize("key", sorted(RUN), ids=lambda k: k[0])
def test_block_runs_on_the_embedded_model(key, in_checkout_like_folder):
    file, text = key
    block = next(b for b in _runnable() if b.file == file and text in b.code)
    namespace = _run_block(block)
    if "handle" in namespace or "first" in namespace:  # the examples that edit by hand end on the unedited model
        import torch

        model = namespace["model"]
        fresh = __import__("keditlab").load_model()[0]
        changed = [n for (n, a), (_, b) in zip(model.named_parameters(), fresh.named_parameters()) if not torch.equal(a, b)]
        assert not changed, f"{block.name} left the model edited: {changed[:3]}"
