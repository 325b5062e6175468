"""The ``%%keditlab`` cell magic and the notebook hooks of ``%load_ext keditlab``.

::

    %load_ext keditlab

    %%keditlab --out runs
    keditlab: 1
    model: smollm2-135m
    method: rome
    edits:
      - {prompt: "The Eiffel Tower is located in the city of", subject: Eiffel Tower, target: Rome}

The cell's text is a spec: it is validated, run, and its dashboard shown (the
cell's value is the :class:`~keditlab.runner.Run`, so ``_`` holds it).  A spec
with errors shows them inline, the offending lines highlighted, and runs
nothing; any other keditlab error is one red line.  Neither is a traceback.
``--validate`` only checks the cell.  ``--name VAR`` also stores the run in
the notebook variable ``VAR``; ``--model $MODEL`` runs the spec on another
model (IPython expands ``$MODEL`` from the notebook's variables), so a
notebook switches model by changing one variable.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
from typing import Any

from keditlab.widgets import NotebookExtraMissing, require_notebook_extra
from keditlab.widgets.spec_errors import error_html, spec_errors_html

CELL_SOURCE = "<cell>"


def _display_html(markup: str) -> None:
    from IPython.display import HTML, display

    display(HTML(markup))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="%%keditlab", add_help=False)
    parser.add_argument("--out", default="runs", help="folder under which the run folder is made ('none': keep it in memory)")
    parser.add_argument("--validate", action="store_true", help="only check the spec")
    parser.add_argument("--name", default=None, help="also store the Run in this notebook variable")
    parser.add_argument("--model", default=None, help="run on this model instead of the spec's (e.g. --model $MODEL)")
    return parser


def keditlab_cell(line: str, cell: str, shell: Any = None) -> Any:
    """Run the spec in ``cell``; see the module docstring for the options on ``line``."""
    import keditlab
    from keditlab.spec import SpecValidationError

    try:
        args = _parser().parse_args(shlex.split(line))
    except SystemExit:
        _display_html(error_html(ValueError(f"unknown options {line!r}; %%keditlab takes --out DIR, --validate, --name VAR, --model NAME")))
        return None
    try:
        spec = keditlab.check_text(cell, CELL_SOURCE)  # every error found here, before anything loads
        if args.model:
            spec = dataclasses.replace(spec, model=dataclasses.replace(spec.model, name=args.model))
        if args.validate:
            _display_html("<p class='keditlab' style='color:#1a7f37'><b>✓ the spec is valid</b></p>")
            return None
        require_notebook_extra("%%keditlab")  # before the run, not after minutes of editing
        run = keditlab.run(spec, out=None if args.out.lower() == "none" else args.out)
    except SpecValidationError as exc:
        _display_html(spec_errors_html(exc, cell))
        return None
    except (ValueError, KeyError, OSError, RuntimeError, ImportError) as exc:  # keditlab's readable errors
        if os.environ.get("KEDITLAB_DEBUG"):
            raise
        _display_html(error_html(exc))
        return None
    if args.name and shell is not None:
        shell.user_ns[args.name] = run
    return run


def _custom_exc(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None) -> None:
    """A spec error or a failed check raised in any cell: its message, without the Python stack.

    The cell still fails with an error output (``ename`` and ``evalue`` as
    usual), so nbgrader, nbval and nbclient count it as failed; only the
    traceback is replaced, by the message itself (a spec error also shows its
    lines highlighted, above).
    """
    from keditlab.checks import CheckFailed

    if isinstance(value, CheckFailed):
        lines = str(value).splitlines()
    else:
        _display_html(spec_errors_html(value))
        lines = [f"{etype.__name__}: {len(getattr(value, 'errors', []))} error(s) in the spec, shown above; nothing was run"]
    show = getattr(shell, "_showtraceback", None)
    if show is not None:
        show(etype, value, lines)  # an "error" output whose traceback is just the message
    else:  # pragma: no cover - a shell without IPython's hook
        print("\n".join(lines))


def register_display(shell: Any) -> None:
    """Show every ``Run`` as its dashboard (with the static page for front ends without widgets), every ``TrainRun``
    as its loss curves."""
    shell.display_formatter.mimebundle_formatter.for_type_by_name("keditlab.runner.result", "Run", _run_bundle)
    shell.display_formatter.mimebundle_formatter.for_type_by_name("keditlab.runner.train_run", "TrainRun", _training_bundle)


def _training_bundle(training: Any) -> dict[str, Any] | None:
    """A ``TrainRun`` as its loss curves and validation figures (:mod:`keditlab.widgets.training`)."""
    if training.path is None:
        return None
    from keditlab.widgets.training import training_html

    return {"text/plain": str(training), "text/html": training_html(training.path)}


def _run_bundle(run: Any) -> dict[str, Any] | None:
    """The dashboard bundle; without the notebook extra, None, so IPython shows the ``Run``'s own HTML table."""
    try:
        from keditlab.widgets.dashboard import run_mimebundle  # pandas and matplotlib load on the first display only
    except NotebookExtraMissing:
        return None
    return run_mimebundle(run)


def load_ipython_extension(shell: Any) -> None:
    """``%load_ext keditlab``: the cell magic, the dashboard display of runs, spec errors without tracebacks."""
    from keditlab.checks import CheckFailed
    from keditlab.spec import SpecValidationError

    shell.register_magic_function(lambda line, cell: keditlab_cell(line, cell, shell), "cell", "keditlab")
    register_display(shell)
    if not shell.custom_exceptions:  # never replace a handler the user installed
        shell.set_custom_exc((SpecValidationError, CheckFailed), _custom_exc)
