"""keditlab: a Jupyter-first lab for knowledge editing of language models.

The usual entry points::

    import keditlab
    run = keditlab.run("specs/quickstart.yaml")   # validate, edit, measure, save
    run                                            # a results table in a notebook

    model, tokenizer, profile = keditlab.load_model("smollm2-135m")

Importing ``keditlab`` is cheap (no torch); the heavy layers load on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def run(spec: Any, out: Any = "runs", **kwargs: Any) -> Any:
    """Validate and run a spec (a path, a dict or a ``Spec``); return the :class:`~keditlab.runner.Run`."""
    from keditlab.runner import run_spec

    return run_spec(load(spec), out, **kwargs)


def load(spec: Any) -> Any:
    """A validated, resolved ``Spec`` from a path, a dict or a ``Spec``."""
    from pathlib import Path

    from keditlab.models import peek_num_layers
    from keditlab.spec import Spec, load_spec, spec_from_dict

    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, dict):
        return spec_from_dict(spec, num_layers_of=peek_num_layers)
    return load_spec(Path(spec), num_layers_of=peek_num_layers)


def load_model(name_or_path: str = "smollm2-135m", **kwargs: Any) -> Any:
    """``(model, tokenizer, profile)``; see :func:`keditlab.models.load_model`."""
    from keditlab.models import load_model as _load_model

    return _load_model(name_or_path, **kwargs)


def apply_edit(method: str, model: Any, tokenizer: Any, profile: Any, cases: Any, settings: dict | None = None, **context: Any) -> Any:
    """Apply ``method`` to ``cases`` (``EditCase`` objects); return the handle whose ``restore()`` undoes it."""
    from keditlab.methods import EditContext, get_method
    from keditlab.stats import CovarianceProvider

    context.setdefault("covariance", CovarianceProvider(model, tokenizer, profile, seed=context.get("seed", 0)))
    return get_method(method).apply(model, tokenizer, profile, list(cases), settings or {}, EditContext(**context))
