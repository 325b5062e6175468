"""Without the ``notebook`` extra, every notebook face of keditlab says what is missing and how to install it.

After ``make demo`` (no extra), ``keditlab.show(run)`` used to end in a bare
``ModuleNotFoundError: No module named 'pandas'``.  Each case below runs in a
fresh interpreter where a package is made unimportable the way Python itself
does it (``sys.modules[name] = None``), calls one entry point, and checks the
error: an ``ImportError`` subclass whose ``name`` is the missing module and
whose message names the module and the ``pip install "keditlab[notebook]"``
fix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIX = 'pip install "keditlab[notebook]"'

#: entry point -> the code that uses it (``run_folder`` is an empty folder; the check comes before any reading)
ENTRIES = {
    "keditlab.show": "keditlab.show(run_folder)",
    "keditlab.widgets.show": "keditlab.widgets.show(run_folder)",
    "keditlab.EditPlayground": "keditlab.EditPlayground",
    "keditlab.widgets.EditPlayground": "keditlab.widgets.EditPlayground",
    "keditlab.widgets.static_html": "keditlab.widgets.static_html(run_folder)",
    "keditlab.widgets.data": "import keditlab.widgets.data",
    "keditlab.widgets.dashboard": "from keditlab.widgets.dashboard import Dashboard",
}

PROBE = """
import json, sys, tempfile
for name in {missing!r}:
    sys.modules[name] = None          # what Python does for a module that must not be imported
import keditlab, keditlab.widgets
run_folder = tempfile.mkdtemp()
try:
{code}
except ImportError as exc:
    print(json.dumps({{"type": type(exc).__name__, "name": exc.name, "message": str(exc),
                      "is_import_error": isinstance(exc, ImportError)}}))
else:
    print(json.dumps(None))
"""


def _probe(code: str, missing: tuple[str, ...]) -> dict | None:
    script = PROBE.format(missing=list(missing), code=textwrap.indent(code, "    "))
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_missing_pandas_names_the_fix(entry):
    error = _probe(ENTRIES[entry], ("pandas",))
    assert error is not None, f"{entry} worked without pandas"
    assert error["type"] == "NotebookExtraMissing" and error["is_import_error"]
    assert error["name"] == "pandas"
    assert FIX in error["message"] and "missing here: pandas" in error["message"], error["message"]


def test_the_message_reads_as_the_fix():
    error = _probe(ENTRIES["keditlab.show"], ("pandas",))
    assert error["message"].startswith(f"keditlab.show needs pandas, ipywidgets and matplotlib: {FIX}")


def test_missing_ipywidgets_names_it_and_the_static_page():
    error = _probe(ENTRIES["keditlab.show"], ("ipywidgets",))
    assert error["name"] == "ipywidgets" and FIX in error["message"]
    # the dashboard's module itself needs no ipywidgets: the widget is what fails, pointing at the page without it
    error = _probe("from keditlab.widgets.dashboard import Dashboard\nDashboard(run_folder)", ("ipywidgets",))
    assert error["name"] == "ipywidgets" and "static_html" in error["message"]


def test_the_frames_need_only_pandas():
    assert _probe("import keditlab.widgets.data", ("ipywidgets",)) is None


def test_the_cell_magic_shows_the_fix_before_running():
    code = textwrap.dedent("""
        from keditlab.widgets import magic
        shown = []
        magic._display_html = shown.append
        import keditlab
        keditlab.run = lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran without the extra"))
        spec = "keditlab: 1\\nmodel: smollm2-135m\\nmethod: rome\\nedits:\\n  - {prompt: The Eiffel Tower is in, subject: Eiffel Tower, target: Rome}\\n"
        result = magic.keditlab_cell("--out none", spec)
        assert result is None
        raise ImportError(shown[-1], name="shown")
    """)
    error = _probe(code, ("pandas",))
    assert error["name"] == "shown", error
    assert FIX.replace('"', "&quot;") in error["message"] or FIX in error["message"]
    assert "%%keditlab needs pandas" in error["message"]


def test_a_run_still_displays_without_the_extra():
    """IPython shows a ``Run`` through this hook: without pandas it declines, and the Run's own HTML table shows."""
    assert _probe("from keditlab.widgets.magic import _run_bundle\nassert _run_bundle(object()) is None", ("pandas",)) is None
