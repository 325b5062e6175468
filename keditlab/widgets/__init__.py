"""The notebook face of keditlab: dashboards, the edit playground, the spec cell magic.

This layer reads run records and renders them; it never calls an editing
method itself (the playground goes through :func:`keditlab.apply_edit`, the
same public entry point a user has).  Computation and rendering stay apart:

* :mod:`keditlab.widgets.data`: a run's records as pandas DataFrames (tested);
* :mod:`keditlab.widgets.charts`: matplotlib figures of those frames;
* :mod:`keditlab.widgets.static`: the dashboard as static HTML (exports, GitHub, CI logs);
* :mod:`keditlab.widgets.dashboard`: :func:`show`, the ipywidgets dashboard;
* :mod:`keditlab.widgets.playground`: :class:`EditPlayground`, edit and undo by hand;
* :mod:`keditlab.widgets.training`: a training's loss curves and validation figures (``keditlab train``);
* :mod:`keditlab.widgets.magic` and :mod:`keditlab.widgets.spec_errors`: ``%%keditlab`` and inline spec errors.

Importing this package is cheap: pandas, matplotlib and ipywidgets load when
first used.  They come with the ``notebook`` extra (``pip install
"keditlab[notebook]"``), which ``make demo`` does not install: every entry
point (:func:`show`, :func:`static_html`, :class:`EditPlayground`, the
``%%keditlab`` magic, the frames of :mod:`keditlab.widgets.data`) checks for
them first and raises :class:`NotebookExtraMissing`, which names the missing
package and the command that installs it, instead of a bare
``ModuleNotFoundError`` from deep inside pandas' importers.
"""

from __future__ import annotations

import os

import importlib.util
from typing import Any

#: What the ``notebook`` extra brings that the core install does not (matplotlib is in both).
NOTEBOOK_PACKAGES = ("pandas", "ipywidgets", "matplotlib")
INSTALL_HINT = 'pip install "keditlab[notebook]"'


class NotebookExtraMissing(ImportError):
    """A notebook face of keditlab was used where the ``notebook`` extra is not installed.

    An ``ImportError`` (so ``except ImportError`` still catches it) whose
    ``name`` is the first missing module and whose message names the fix::

        keditlab.show needs pandas, ipywidgets and matplotlib: pip install "keditlab[notebook]" (missing here: pandas)
    """


def _missing(packages: tuple[str, ...]) -> list[str]:
    """The packages of ``packages`` that cannot be imported (``sys.modules[name] = None`` counts as missing)."""
    missing = []
    for name in packages:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken parent package, or a module without a spec
            found = False
        if not found:
            missing.append(name)
    return missing


def require_notebook_extra(entry: str, packages: tuple[str, ...] = NOTEBOOK_PACKAGES, hint: str = "") -> None:
    """Raise :class:`NotebookExtraMissing` for ``entry`` (e.g. ``"keditlab.show"``) when one of ``packages`` is absent.

    Only the packages the entry point needs are checked (the frames need pandas
    alone, the static page no ipywidgets), but the message always names the
    whole extra: one command installs all of it.  Checking looks the packages
    up without importing them, so it costs microseconds.
    """
    missing = _missing(packages)
    if missing:
        needs = f"{', '.join(NOTEBOOK_PACKAGES[:-1])} and {NOTEBOOK_PACKAGES[-1]}"
        raise NotebookExtraMissing(f"{entry} needs {needs}: {INSTALL_HINT} (missing here: {', '.join(missing)}){hint}",
                                   name=missing[0])


def show(run: Any) -> Any:
    """The dashboard of ``run`` (a ``Run``, a run folder) as an ipywidgets widget; a training (a ``TrainRun`` or a
    folder ``keditlab train`` wrote) shows its loss curves and validation figures (:mod:`keditlab.widgets.training`)."""
    require_notebook_extra("keditlab.show")
    from keditlab.widgets.training import is_training_folder, training_html

    if type(run).__name__ == "TrainRun" or (isinstance(run, (str, os.PathLike)) and is_training_folder(run)):
        import ipywidgets

        return ipywidgets.HTML(training_html(run))
    from keditlab.widgets.dashboard import show as _show

    return _show(run)


def static_html(run: Any) -> str:
    """The dashboard of ``run`` as self-contained HTML, for where widgets do not render."""
    require_notebook_extra("keditlab.widgets.static_html", ("pandas", "matplotlib"))
    from keditlab.widgets.static import static_html as _static_html

    return _static_html(run)


def __getattr__(name: str) -> Any:
    if name == "EditPlayground":
        require_notebook_extra("keditlab.EditPlayground")
        from keditlab.widgets.playground import EditPlayground

        return EditPlayground
    raise AttributeError(f"module 'keditlab.widgets' has no attribute {name!r}")


__all__ = ["EditPlayground", "NotebookExtraMissing", "require_notebook_extra", "show", "static_html"]
