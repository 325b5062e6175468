"""keditlab: a Jupyter-first lab for knowledge editing of language models.

The usual entry points::

    import keditlab
    run = keditlab.run("specs/quickstart.yaml")   # validate, edit, measure, save
    run                                            # a results table in a notebook
    run = keditlab.load_run("runs/quickstart-…")   # reopen a saved run folder (no model, no torch)
    run = keditlab.resume_run("runs/quickstart-…") # continue a run that was killed or interrupted
    keditlab.train("specs/train/mend.yaml")        # train an editor that learns to edit (MEND), cached for the model
    result = keditlab.sweep("specs/sweep_knowedit.yaml")  # a grid of runs (methods × models × datasets × seeds), one table

    model, tokenizer, profile = keditlab.load_model("smollm2-135m")

In a notebook::

    %load_ext keditlab              # the %%keditlab cell magic: a spec in a cell, run, dashboard shown
    keditlab.show(run)              # the dashboard: table, charts, per-edit drill-down, retention
    keditlab.run_text(yaml_text)    # a spec written as a string
    keditlab.EditPlayground(model)  # edit by hand, undo, see the probes before and after

Importing ``keditlab`` is cheap (no torch); the heavy layers load on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def run(spec: Any, out: Any = "runs", **kwargs: Any) -> Any:
    """Validate and run a spec (a path, a dict or a ``Spec``); return the :class:`~keditlab.runner.Run`."""
    from keditlab.runner import run_spec

    return run_spec(load(spec), out, **kwargs)


def run_text(text: str, out: Any = "runs", **kwargs: Any) -> Any:
    """Validate and run a spec written as YAML text (a notebook cell); return the ``Run``.

    An invalid spec raises :class:`~keditlab.spec.SpecValidationError` before any
    work; in a notebook it shows as the spec's text with the offending lines
    highlighted (see :mod:`keditlab.widgets.spec_errors`), not as a traceback.
    """
    from keditlab.runner import run_spec

    return run_spec(check_text(text), out, **kwargs)


def check_text(text: str, source: str = "<cell>") -> Any:
    """The resolved ``Spec`` for YAML ``text``; raises ``SpecValidationError`` listing every error."""
    from keditlab.models import peek_num_layers
    from keditlab.models.peek import peek_config
    from keditlab.spec import parse_spec
    from keditlab.widgets.spec_errors import remember_source

    remember_source(source, text)
    return parse_spec(text, source, num_layers_of=peek_num_layers, model_config_of=peek_config)


def load_run(path: Any) -> Any:
    """Reopen a saved run folder as the :class:`~keditlab.runner.result.Run` the run returned.

    ``path`` is the folder a run wrote (``keditlab run`` prints it last, as
    ``results: runs/quickstart-20250101-120000``).  Nothing is recomputed and no
    model (nor torch) is loaded: ``print(run)`` is the results table,
    ``run.metric("rome", "reliability")`` one mean, ``run.cases`` the per-edit
    records, ``keditlab.show(run)`` the dashboard.  A folder that is not a
    finished run raises ``FileNotFoundError`` naming the missing file and the fix.
    """
    from keditlab.runner.result import load_run as _load_run

    return _load_run(path)


def resume_run(path: Any, **kwargs: Any) -> Any:
    """Continue a run that stopped (killed, interrupted, failed) in its own folder; return the finished ``Run``.

    The edits it finished are kept, the rest are done again, and the result is
    the one an uninterrupted run gives (:mod:`keditlab.runner.resume`); the same as
    ``keditlab run --resume RUN_FOLDER``.  ``loaded=`` runs it on a model you hold.
    """
    from keditlab.runner.resume import resume_run as _resume_run

    return _resume_run(path, **kwargs)


def load_edits(model: Any, folder: Any) -> Any:
    """Write edits a run saved (``run.save_edits: true``; a folder ``edits/<method>/call-NNNN`` of the run) into ``model``.

    The model must be the one the run edited, unedited (or holding the calls saved before this one, for a
    sequential run); anything else is refused with the model unchanged.  Returns the handle:
    ``handle.restore()`` undoes it, bit for bit (:mod:`keditlab.methods.saved`).
    """
    from keditlab.methods.saved import load_edits as _load_edits

    return _load_edits(model, folder)


def show(run: Any) -> Any:
    """The dashboard of a run (a ``Run`` or a run folder) as an ipywidgets widget; see :mod:`keditlab.widgets`."""
    from keditlab.widgets import show as _show

    return _show(run)


def __getattr__(name: str) -> Any:
    if name == "EditPlayground":
        from keditlab.widgets.playground import EditPlayground

        return EditPlayground
    if name == "checks":
        import importlib

        return importlib.import_module("keditlab.checks")
    raise AttributeError(f"module 'keditlab' has no attribute {name!r}")


def load_ipython_extension(shell: Any) -> None:
    """``%load_ext keditlab``: the ``%%keditlab`` cell magic, runs shown as dashboards, spec errors inline."""
    from keditlab.widgets.magic import load_ipython_extension as _load

    _load(shell)


def _register_notebook_display() -> None:
    """Inside IPython, show runs as their dashboard (only when IPython is already running: importing stays cheap)."""
    import sys

    if "IPython" not in sys.modules:
        return
    try:
        shell = sys.modules["IPython"].get_ipython()
        if shell is not None and hasattr(shell, "display_formatter"):
            from keditlab.widgets.magic import register_display

            register_display(shell)
    except Exception:  # noqa: BLE001 - a display nicety must never stop an import
        pass


def load(spec: Any) -> Any:
    """A validated, resolved ``Spec`` from a path, a dict or a ``Spec``."""
    from pathlib import Path

    from keditlab.models import peek_num_layers
    from keditlab.models.peek import peek_config
    from keditlab.spec import Spec, load_spec, spec_from_dict

    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, dict):
        return spec_from_dict(spec, num_layers_of=peek_num_layers, model_config_of=peek_config)
    return load_spec(Path(spec), num_layers_of=peek_num_layers, model_config_of=peek_config)


def load_sweep(spec: Any) -> Any:
    """A validated sweep (:class:`~keditlab.spec.SweepSpec`, every cell resolved) from a spec with ``sweep:``: its
    path, its YAML text (a notebook cell) or a dict."""
    from pathlib import Path

    import yaml

    from keditlab.models import peek_num_layers
    from keditlab.models.peek import peek_config
    from keditlab.spec import SweepSpec, parse_sweep
    from keditlab.spec import load_sweep as _load_sweep

    checks = {"num_layers_of": peek_num_layers, "model_config_of": peek_config}
    if isinstance(spec, SweepSpec):
        return spec
    if isinstance(spec, dict):
        return parse_sweep(yaml.safe_dump(spec, sort_keys=False), "<dict>", **checks)
    if isinstance(spec, str) and "\n" in spec:
        from keditlab.widgets.spec_errors import remember_source

        remember_source("<cell>", spec)
        return parse_sweep(spec, "<cell>", **checks)
    return _load_sweep(Path(spec), **checks)


def sweep(spec: Any, out: Any = None, **kwargs: Any) -> Any:
    """Run every cell of a spec's ``sweep:`` grid (``keditlab sweep``); return the :class:`~keditlab.runner.sweep_result.SweepResult`.

    ``spec`` is a path, YAML text or a dict.  Each cell is an ordinary run
    folder under the sweep folder's ``cells/``; printing the result gives the
    merged table, ``keditlab.show(result)`` the dashboard.  ``loaded=`` runs
    the cells on a model you hold; ``executor="ray"`` (with ``address=``) runs
    each cell as a Ray task; docs/sweeps.md says more.
    """
    from keditlab.runner.sweep_run import sweep_spec

    grid = load_sweep(spec)
    return sweep_spec(grid, out or grid.specs[0].run.out or "runs", **kwargs)


def resume_sweep(folder: Any, **kwargs: Any) -> Any:
    """Run the cells of the sweep in ``folder`` that are not complete (``keditlab sweep --resume``)."""
    from keditlab.runner.sweep_run import resume_sweep as _resume_sweep

    return _resume_sweep(folder, **kwargs)


def open_sweep(folder: Any) -> Any:
    """Reopen a sweep folder (no model, no torch): printing it gives the merged table; ``.runs()`` each cell's ``Run``."""
    from keditlab.runner.sweep_result import SweepResult

    return SweepResult.load(folder)


def train(spec: Any, out: Any = "runs", **kwargs: Any) -> Any:
    """Train the editor a spec's ``train:`` section names (MEND) and put its archive in the cache (``keditlab train``).

    Returns a :class:`~keditlab.runner.train_run.TrainRun`: the steps, the
    validation figures, the archive's path and the training folder (its
    ``losses.jsonl`` and ``losses.png`` hold the loss curves).  Afterwards
    ``method: mend`` finds the archive for the same model.
    """
    from keditlab.runner.train_run import train_spec

    return train_spec(load(spec), out, **kwargs)


def plan(spec: Any, gpu_memory: Any = None) -> Any:
    """What ``spec`` (a path, a dict or a ``Spec``) will change and cost, from the model's configuration alone.

    Returns a :class:`~keditlab.runner.plan.Plan` (plain data classes; ``print(plan)``
    is the table ``keditlab plan`` prints): per method the resolved layers and
    settings, the values it changes, its one-off statistics and an estimate of
    peak memory, with fits / does not fit against ``gpu_memory`` (``"16GiB"``)
    or the spec's device.  No weights are loaded (docs/plan.md).
    """
    from keditlab.runner.plan import plan_spec

    return plan_spec(load(spec), gpu_memory)


def load_model(name_or_path: str = "smollm2-135m", **kwargs: Any) -> Any:
    """``(model, tokenizer, profile)``; see :func:`keditlab.models.load_model`."""
    from keditlab.models import load_model as _load_model

    return _load_model(name_or_path, **kwargs)


def apply_edit(method: str, model: Any, tokenizer: Any, profile: Any, cases: Any, settings: dict | None = None, **context: Any) -> Any:
    """Apply ``method`` to ``cases`` (``EditCase`` objects); return the handle whose ``restore()`` undoes it.

    ``context`` holds :class:`~keditlab.methods.EditContext` fields (``seed``,
    ``covariance``, ``progress``, ...).  A progress bar (``tqdm.auto``: text in a
    terminal, a widget in a notebook) names each phase as it begins, settings,
    then the edit (with the statistics a method computes once per model, under
    their own bars), and ends with the seconds taken; ``progress=False``
    silences it and the methods' own bars.
    """
    from tqdm.auto import tqdm

    from keditlab.methods import EditContext, get_method
    from keditlab.stats import CovarianceProvider

    cases = list(cases)
    editor = get_method(method)
    edits = f"{len(cases)} edit{'s' if len(cases) != 1 else ''}"
    with tqdm(total=2, desc=f"{method}: checking its settings", unit="phase", disable=not context.get("progress", True),
              bar_format="{desc} [{elapsed}]") as bar:
        config = editor.config_class.from_params(settings or {})
        config.check_layers(profile.num_layers)
        context.setdefault("covariance", CovarianceProvider(model, tokenizer, profile, seed=context.get("seed", 0)))
        bar.update(1)
        bar.set_description(f"{method}: applying {edits} (one-off statistics, when the method needs them, come first)")
        handle = editor.apply(model, tokenizer, profile, cases, config, EditContext(**context))
        bar.update(1)
        setup = f" + {handle.setup_seconds:.1f} s one-off set-up" if handle.setup_seconds else ""
        bar.set_description(f"{method}: {edits} applied in {handle.seconds:.1f} s{setup}")
    return handle


_register_notebook_display()
