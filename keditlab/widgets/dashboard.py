"""``keditlab.show(run)``: a run's results as an ipywidgets dashboard.

Tabs: **Table** (methods × metrics, one column group per protocol, coloured by
the change), **Charts** (a bar chart per metric and method, locality and
portability beside reliability), **Per edit** (pick a method and an edit: its
prompt, rephrases, locality and portability probes with their values and
greedy generations before and after, pass or fail) and, for sequential runs,
**Retention** (the curve as edits accumulate).

Every tab is rendered from the frames of :mod:`keditlab.widgets.data` by the
HTML pieces of :mod:`keditlab.widgets.static`, so the widget, the static page
and the tests see the same content.  The widget reads records only: it never
calls a method or touches a model.
"""

from __future__ import annotations

from typing import Any

from keditlab.widgets import require_notebook_extra

require_notebook_extra("keditlab.show", ("pandas", "matplotlib"))

from keditlab.widgets import static  # noqa: E402 - after the check, so a missing pandas is named with its fix
from keditlab.widgets.data import edit_list, edit_rows, records_of


def _ipywidgets() -> Any:
    require_notebook_extra("keditlab.show", ("ipywidgets",),
                           hint="; without widgets, keditlab.widgets.static_html(run) gives the same page as HTML")
    import ipywidgets

    return ipywidgets


class Dashboard:
    """The widget tree of one run and its drill-down callbacks (``.widget`` is what a notebook displays)."""

    def __init__(self, run: Any) -> None:
        w = _ipywidgets()
        self.records = records_of(run)
        self.rows = edit_rows(self.records)
        self.edits = edit_list(self.records)
        methods = list(dict.fromkeys(self.edits["method"])) or list(self.records.summary["methods"])
        self.method = w.Dropdown(options=methods, description="method", layout=w.Layout(width="260px"))
        self.edit = w.Dropdown(options=[], description="edit", layout=w.Layout(width="520px"))
        self.detail = w.HTML()
        self.method.observe(self._method_changed, names="value")
        self.edit.observe(self._edit_changed, names="value")
        self._method_changed()
        tabs = [("Table", w.HTML(static.STYLE + f"<div class='keditlab'>{static.table_html(self.records)}</div>")),
                ("Charts", w.HTML(f"<div class='keditlab'>{static.charts_html(self.records)}</div>")),
                ("Per edit", w.VBox([w.HBox([self.method, self.edit]),
                                     w.HTML(static.STYLE), self.detail]))]
        retention = static.retention_html(self.records)
        if retention:
            tabs.append(("Retention", w.HTML(f"<div class='keditlab'>{retention}</div>")))
        self.tabs = w.Tab(children=[child for _, child in tabs], titles=[title for title, _ in tabs])
        self.tabs.add_class("keditlab-dashboard")
        self.widget = self.tabs

    def _method_changed(self, change: Any = None) -> None:
        part = self.edits[self.edits["method"] == self.method.value]
        options = [(f"{r.case_id}: {r.prompt} → {r.target} ({r.passed}/{r.probes} pass)", r.case_id) for r in part.itertuples()]
        self.edit.options = options
        if options and self.edit.value is None:  # new options leave nothing picked: show the first edit
            self.edit.value = options[0][1]
        self._edit_changed()

    def _edit_changed(self, change: Any = None) -> None:
        rows = self.rows[(self.rows["method"] == self.method.value) & (self.rows["case_id"] == self.edit.value)]
        self.detail.value = f"<div class='keditlab keditlab-drilldown'>{static.edit_html(rows)}</div>"


def show(run: Any) -> Any:
    """The dashboard of ``run`` (a ``Run``, a run folder, or records) as an ipywidgets widget.

    >>> run = keditlab.run("specs/quickstart.yaml")
    >>> keditlab.show(run)          # tabs: Table, Charts, Per edit (and Retention for sequential runs)
    """
    return Dashboard(run).widget


def run_mimebundle(run: Any, include: Any = None, exclude: Any = None) -> dict[str, Any]:
    """A ``Run``'s rich display: the dashboard widget, with the static page as ``text/html`` beside it.

    A front end that renders widgets (JupyterLab, Colab, VS Code) shows the
    widget; one that does not (nbconvert without widget state, GitHub's viewer)
    shows the static HTML, which has the same content.  Without ipywidgets, or
    outside a kernel, only the static HTML.
    """
    bundle: dict[str, Any] = {"text/plain": repr(run), "text/html": static.static_html(run)}
    try:
        from IPython import get_ipython

        if get_ipython() is not None and getattr(get_ipython(), "kernel", None) is not None:
            widget = show(run)
            bundle.update({k: v for k, v in widget._repr_mimebundle_().items() if k != "text/plain"})
    except ImportError:
        pass
    return bundle
