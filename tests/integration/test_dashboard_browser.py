"""The dashboard in a real browser: execute a notebook, export it to HTML, open it in headless Chromium.

A notebook that makes a small sequential run on the embedded model and shows it
is executed with its widget state saved (nbclient), exported to HTML (nbconvert),
and loaded in headless Chromium, which runs the page's JavaScript.  The DOM that
Chromium produced is then queried: the results table, the charts, the per-edit
drill-down and the retention curve must be there, and a screenshot is taken.

Two exports are checked:

* **widgets**: the page renders the saved widget state with the Jupyter widgets
  HTML manager (``@jupyter-widgets/html-manager``'s ``embed.js``, from
  ``$KEDITLAB_WIDGETS_JS``, or installed with npm into ``build/`` when npm can
  reach its registry; skipped with the reason when neither is possible);
* **static**: the widget state removed, as GitHub's viewer or a CI log shows it:
  the run's static HTML, no JavaScript needed.

Chromium comes from the system's packages (``apt-get install chromium``, run
here when it is absent and this user may); the test is skipped, saying why,
only where it cannot be installed.  Screenshots go to ``build/browser/``
(``docs/dashboard.png`` is one of them).

The dashboard in a live JupyterLab (a server started by the test, notebook 01
run from the Lab's own menu, the tabs clicked) is ``test_lab_browser.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
nbconvert = pytest.importorskip("nbconvert")
bs4 = pytest.importorskip("bs4")

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "build" / "browser"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

NOTEBOOK_CELLS = [
    """import tempfile
import keditlab

spec = {
    "keditlab": 1, "name": "browser-test", "model": "smollm2-135m", "method": ["ft-m", "ft-l"],
    "evaluate": {"metrics": ["reliability", "generalization", "locality", "portability"], "max_new_tokens": 4},
    "run": {"mode": "sequential", "batch_size": 1, "evaluate_at": {"every": 1}},
    "edits": [
        {"prompt": "The Eiffel Tower is located in the city of", "subject": "Eiffel Tower", "target": "Rome",
         "rephrase": ["The Eiffel Tower can be found in the city of"],
         "locality": [{"prompt": "The capital of Japan is", "answer": "Tokyo"}],
         "portability": [{"prompt": "The Eiffel Tower is located in the country of", "answer": "Italy"}]},
        {"prompt": "The Colosseum is located in the city of", "subject": "Colosseum", "target": "London",
         "locality": [{"prompt": "The capital of Italy is", "answer": "Rome"}]},
    ],
}
run = keditlab.run(spec, out=tempfile.mkdtemp(), log=lambda message: None)""",
    "run",
]


def chromium_path() -> str:
    """The system's Chromium, installed with apt-get when absent and this user may (also used by test_lab_browser.py)."""
    for name in BROWSERS:
        if shutil.which(name):
            return shutil.which(name)
    if shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, timeout=600, env=env).returncode:
            # a fresh machine has no package lists yet
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=300, env=env)
            subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, timeout=600, env=env)
        if shutil.which("chromium"):
            return shutil.which("chromium")
    pytest.skip("no Chromium here, and it could not be installed from the system's packages "
                "(apt-get install chromium needs root and a package mirror)")


def _widgets_js() -> Path | None:
    given = os.environ.get("KEDITLAB_WIDGETS_JS")
    if given and Path(given).is_file():
        return Path(given)
    folder = ROOT / "build" / "npm"
    embed = folder / "node_modules" / "@jupyter-widgets" / "html-manager" / "dist" / "embed.js"
    if not embed.exists() and shutil.which("npm"):
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(folder), "@jupyter-widgets/html-manager@1"],
                       capture_output=True, timeout=120)
    return embed if embed.exists() else None


@pytest.fixture(scope="module")
def executed():
    """The test notebook, executed once with its widget state stored."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in NOTEBOOK_CELLS])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    return notebook


def _render(chromium: str, page: Path, shot: Path) -> bs4.BeautifulSoup:
    """The DOM after Chromium ran the page's scripts, and a screenshot of it."""
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
             "--virtual-time-budget=20000", "--window-size=1280,1400"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180).stdout
    subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=180)
    return bs4.BeautifulSoup(dom, "html.parser")


def _export(notebook, name: str, widgets_js: Path | None = None) -> Path:
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", **({"widget_renderer_url": widgets_js.as_uri()} if widgets_js else {}))
    body, _ = exporter.from_notebook_node(notebook)
    OUT.mkdir(parents=True, exist_ok=True)
    page = OUT / f"{name}.html"
    page.write_text(body, encoding="utf-8")
    return page


def _assert_dashboard(dom) -> None:
    tables = dom.select("table.keditlab-table")
    assert tables, "no results table in the page"
    header = tables[0].get_text(" ")
    assert "ft-m" in header and "ft-l" in header and "reliability" in header and "locality" in header
    assert tables[0].select("td[data-metric='portability']"), "portability is not beside reliability"
    charts = dom.select("img.keditlab-chart")
    assert charts and all(img["src"].startswith("data:image/png;base64,") for img in charts)
    drill = dom.select(".keditlab-drilldown")
    assert drill, "no per-edit drill-down in the page"
    kinds = {tr.get("data-kind") for tr in dom.select(".keditlab-drilldown tr[data-kind]")}
    assert {"edit prompt", "rephrase", "locality", "portability"} <= kinds
    assert dom.select(".keditlab-drilldown .pass, .keditlab-drilldown .fail")


def test_static_dashboard_in_chromium(executed):
    chromium = chromium_path()
    static = nbformat.from_dict(executed)
    static.metadata.pop("widgets", None)  # as GitHub's viewer sees it: no widget state, the text/html fallback
    dom = _render(chromium, _export(static, "dashboard-static"), OUT / "dashboard-static.png")
    _assert_dashboard(dom)
    assert dom.select(".keditlab-retention img.keditlab-chart"), "the sequential run has no retention curve"
    assert not dom.select(".jupyter-widgets")
    assert (OUT / "dashboard-static.png").stat().st_size > 10_000


def test_widget_dashboard_in_chromium(executed):
    chromium = chromium_path()
    assert "application/vnd.jupyter.widget-state+json" in executed.metadata.get("widgets", {}), "no widget state stored"
    widgets_js = _widgets_js()
    if widgets_js is None:
        pytest.skip("the Jupyter widgets HTML manager (embed.js) is not here and npm could not fetch it; "
                    "set KEDITLAB_WIDGETS_JS to a local @jupyter-widgets/html-manager dist/embed.js")
    dom = _render(chromium, _export(executed, "dashboard-widgets", widgets_js), OUT / "dashboard-widgets.png")
    tabs = dom.select(".keditlab-dashboard")
    assert tabs, "the widget did not render (no .keditlab-dashboard element)"
    titles = [t.get_text(strip=True) for t in dom.select(".keditlab-dashboard .lm-TabBar-tabLabel")]
    assert titles == ["Table", "Charts", "Per edit", "Retention"]
    _assert_dashboard(tabs[0])
    assert dom.select(".keditlab-dashboard select"), "no method/edit pickers in the drill-down"
