"""The widgets themselves, the cell magic and inline spec errors, driven without a browser or a model."""

from __future__ import annotations

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

import keditlab  # noqa: E402
from keditlab.widgets import dashboard, magic, spec_errors  # noqa: E402
from widget_records import fake_run  # noqa: E402

BAD_SPEC = """keditlab: 1
model: smollm2-135m
method: rmoe
edits:
  - prompt: "The Eiffel Tower is located in the city of"
    subject: Eiffel Towr
    target: Rome
"""


def test_show_has_table_charts_drilldown_and_retention_tabs():
    widget = keditlab.show(fake_run("sequential"))
    assert list(widget.titles) == ["Table", "Charts", "Per edit", "Retention"]
    table, charts = widget.children[0].value, widget.children[1].value
    assert "keditlab-table" in table and "0.00 → 0.50" in table
    assert "<img class='keditlab-chart'" in charts
    assert list(keditlab.show(fake_run()).titles) == ["Table", "Charts", "Per edit"]  # no curve, no retention tab


def test_drilldown_follows_the_picked_method_and_edit():
    board = dashboard.Dashboard(fake_run())
    assert board.method.options == ("rome", "ft-m")
    assert board.edit.value == "eiffel" and "Eiffel Tower" in board.detail.value  # the first edit, shown at once
    board.method.value = "ft-m"
    assert [value for _, value in board.edit.options] == ["eiffel", "fuji"]
    board.edit.value = "fuji"
    page = board.detail.value
    assert "ft-m" in page and "Mount Fuji" in page and "Chile" in page and "✗ fail" in page
    assert "The capital of France is" in page  # the locality probe is there


def test_run_mimebundle_has_static_html_outside_a_kernel():
    bundle = dashboard.run_mimebundle(fake_run())
    assert "keditlab-drilldown" in bundle["text/html"]
    assert "application/vnd.jupyter.widget-view+json" not in bundle  # no kernel here: no widget to talk to


def test_spec_errors_show_the_offending_lines_and_the_fix():
    from keditlab.spec import SpecValidationError, parse_spec

    with pytest.raises(SpecValidationError) as caught:
        parse_spec(BAD_SPEC, "<cell>")
    page = spec_errors.spec_errors_html(caught.value, BAD_SPEC)
    assert "keditlab-error-line" in page and "Traceback" not in page
    assert "method: rmoe" in page and "rome" in page  # the line, and the did-you-mean fix
    assert "line 3" in page
    assert page.count("keditlab-error-line") == len({e.line for e in caught.value.errors if e.line})


class _Shell:
    def __init__(self):
        self.user_ns = {}


def test_cell_magic_shows_a_bad_spec_inline_and_runs_nothing(monkeypatch):
    shown = []
    monkeypatch.setattr(magic, "_display_html", shown.append)
    monkeypatch.setattr(keditlab, "run", lambda *a, **k: pytest.fail("an invalid spec must not run"))
    assert magic.keditlab_cell("", BAD_SPEC, _Shell()) is None
    assert len(shown) == 1 and "keditlab-error-line" in shown[0] and "nothing was run" in shown[0]


def test_cell_magic_runs_a_valid_spec_and_names_the_run(monkeypatch):
    good = BAD_SPEC.replace("rmoe", "rome").replace("Eiffel Towr", "Eiffel Tower")
    calls = []
    monkeypatch.setattr(keditlab, "run", lambda spec, out: calls.append((spec, out)) or "RUN")
    shell = _Shell()
    assert magic.keditlab_cell("--out none --name result", good, shell) == "RUN"
    assert [(spec.methods[0].name, out) for spec, out in calls] == [("rome", None)] and shell.user_ns["result"] == "RUN"
    magic.keditlab_cell("--model gpt2-xl", good, shell)
    assert calls[-1][0].model.name == "gpt2-xl" and calls[-1][1] == "runs"
    shown = []
    monkeypatch.setattr(magic, "_display_html", shown.append)
    assert magic.keditlab_cell("--validate", good, shell) is None and "valid" in shown[0]
    assert magic.keditlab_cell("--bogus", good, shell) is None and "unknown options" in shown[1]


def test_failed_checks_and_spec_errors_stay_errors_without_a_stack(monkeypatch):
    from keditlab.checks import CheckFailed
    from keditlab.spec import SpecValidationError, parse_spec

    class Shell:
        shown = []

        def _showtraceback(self, etype, value, lines):
            self.shown.append((etype.__name__, lines))

    html_shown = []
    monkeypatch.setattr(magic, "_display_html", html_shown.append)
    spec_errors.remember_source("<cell>", BAD_SPEC)  # as check_text does: the error view quotes the cell
    shell = Shell()
    magic._custom_exc(shell, CheckFailed, CheckFailed("✗ the model does not say 'Rome' yet\n  - it says Paris"), None)
    assert shell.shown[-1] == ("CheckFailed", ["✗ the model does not say 'Rome' yet", "  - it says Paris"])
    try:
        parse_spec(BAD_SPEC, "<cell>")
    except SpecValidationError as exc:
        magic._custom_exc(shell, SpecValidationError, exc, None)
    assert shell.shown[-1][0] == "SpecValidationError" and "shown above" in shell.shown[-1][1][0]
    assert "keditlab-error-line" in html_shown[-1]
