"""The runner: a resolved spec in, a :class:`Run` (results and a run folder) out.

Modules, by what they hold:

* :mod:`~keditlab.runner.run`: the run loop (``run_spec``);
* :mod:`~keditlab.runner.schedule`: the plan of a run mode (pure Python);
* :mod:`~keditlab.runner.result`: the finished run, :class:`Run`, and :func:`load_run`;
* :mod:`~keditlab.runner.manifest`: what ``manifest.json`` says of a run;
* :mod:`~keditlab.runner.folder`: the run folder and its file IO;
* :mod:`~keditlab.runner.summary`: ``summary.json``'s means and the order of the table's rows;
* :mod:`~keditlab.runner.render`: the results table as terminal text and notebook HTML;
* :mod:`~keditlab.runner.table_files`: ``table.csv`` and ``table.md``;
* :mod:`~keditlab.runner.edit_warnings`: warnings about edits (a ground truth not said, a target not said);
* :mod:`~keditlab.runner.chat`, :mod:`~keditlab.runner.trace_run`: chat templates, ``keditlab trace``;
* :mod:`~keditlab.runner.train_run`: ``keditlab train`` (editors trained before they edit, MEND).

``run_spec``, ``Run``, ``load_run``, ``trace_spec``, ``TraceRun`` and the errors
load on first use (PEP 562); reading a saved run (``Run``, ``load_run``) does not
import torch.
"""

from __future__ import annotations

from typing import Any

_HOMES = {"MetricLookupError": "result", "Run": "result", "load_run": "result", "RunError": "schedule", "run_spec": "run",
          "TraceRun": "trace_run", "trace_spec": "trace_run", "TrainRun": "train_run", "train_spec": "train_run",
          "resume_training": "train_run"}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"keditlab.runner.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'keditlab.runner' has no attribute {name!r}")
