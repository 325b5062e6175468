"""Notebook 01 in a real JupyterLab, driven by headless Chromium: the dashboard appears and its tabs work.

This is what a newcomer does after ``make lab``, done by a test:

1. ``notebooks/`` (and ``specs/``, which notebook 01 reads) is copied to a
   temporary folder, the saved outputs and widget state removed, so that
   whatever the browser shows was produced by this run and not by the file;
2. a JupyterLab server is started there, on a free loopback port, with a
   random token and its own settings, workspace and runtime folders (the
   user's are never touched; the news and update pop-ups are off);
3. the system's Chromium (``apt-get install chromium``, run here when it is
   absent and this user may), driven by Playwright's Python client, opens the
   notebook, runs *Run > Run All Cells* from the menu and waits for the kernel
   to finish every cell (no cell may end in a traceback);
4. in the DOM that JupyterLab and ipywidgets produced: the dashboard's tab bar
   reads *Table, Charts, Per edit*; the Table tab has the methods × metrics
   table; clicking *Charts* shows the matplotlib charts as decoded images;
   clicking *Per edit* shows the method and edit pickers and the per-probe
   drill-down, pass or fail.

Screenshots of each step go to ``build/browser/lab-*.png``; a failure names
the last one.  Playwright never downloads a browser here: it is pointed at the
system's ``/usr/bin/chromium`` (``playwright install`` is not needed and not
run).  On a 2-core machine the whole test takes a few minutes, most of it the
kernel running the notebook (the model's conversion and ROME's statistics are
cached under ``~/.cache/keditlab`` after the first run); the timeouts are
generous for that.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("jupyterlab", reason='JupyterLab comes with the notebook extra: pip install -e ".[test]"')
sync_api = pytest.importorskip("playwright.sync_api", reason='Playwright comes with the test extra: pip install -e ".[test]"')

from test_dashboard_browser import chromium_path  # noqa: E402 - the same system Chromium as the exported-page tests

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "build" / "browser"
NOTEBOOK = "01_quickstart.ipynb"
#: Chromium's flags: no sandbox (containers, root), no GPU, and nothing that reaches the network on its own.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
#: The status bar once the notebook's kernel has started and is idle ("Python 3 (ipykernel) | Idle").
KERNEL_IDLE = ".jp-StatusBar-Widget:has-text('(ipykernel) | Idle')"
KERNEL_BUSY = ".jp-StatusBar-Widget:has-text('| Busy')"
SERVER_TIMEOUT_S = 180
RUN_TIMEOUT_S = 1800  # the whole notebook on a 2-core CPU, with a cold cache (model conversion, ROME statistics)
UI_TIMEOUT_MS = 60_000
#: JupyterLab settings for the test server: every cell in the DOM, no news or update pop-ups over the page.
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fresh_copy(folder: Path) -> Path:
    """notebooks/ and specs/ copied under ``folder``, notebook 01's outputs and saved widget state removed."""
    shutil.copytree(ROOT / "notebooks", folder / "notebooks")
    shutil.copytree(ROOT / "specs", folder / "specs")
    path = folder / "notebooks" / NOTEBOOK
    notebook = json.loads(path.read_text(encoding="utf-8"))
    notebook["metadata"].pop("widgets", None)
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    path.write_text(json.dumps(notebook, indent=1), encoding="utf-8")
    for name, value in SETTINGS.items():
        target = folder / "settings" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(value), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a free loopback port: ``(base_url, token, notebooks_folder)``; stopped afterwards."""
    home = tmp_path_factory.mktemp("lab")
    _fresh_copy(home)
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "CI": "true", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTER_CONFIG_DIR": str(home / "config"),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    log = (home / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={home / 'notebooks'}",
         "--LabApp.news_url=", "--ServerApp.open_browser=False",
         *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])],  # CI containers run as root
        cwd=home / "notebooks", env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_TIMEOUT_S
    try:
        while True:
            if server.poll() is not None:
                pytest.fail(f"jupyter lab exited with {server.returncode}; its log:\n{(home / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer on {base} within {SERVER_TIMEOUT_S} s; "
                            f"its log:\n{(home / 'server.log').read_text()[-3000:]}")
            time.sleep(1)
        yield base, token, home
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


class Steps:
    """Screenshots as the test goes; a failed step is reported with the last screenshot's path and the server's log."""

    def __init__(self, page, home: Path) -> None:
        self.page, self.home, self.last = page, home, None
        OUT.mkdir(parents=True, exist_ok=True)

    def shot(self, name: str, element=None) -> Path:
        path = OUT / f"lab-{name}.png"
        (element or self.page).screenshot(path=str(path), **({} if element else {"full_page": False}))
        self.last = path
        return path

    def wait(self, locator, state: str, failure: str):
        """``locator`` once it is ``state`` (attached, visible), or the test fails with ``failure``."""
        try:
            locator.wait_for(state=state)
        except sync_api.TimeoutError:
            self.fail(failure)
        return locator

    def fail(self, message: str) -> None:
        try:
            self.shot("failure")
        except Exception:  # noqa: BLE001 - the page may be gone; the message still goes out
            pass
        server_log = (self.home / "server.log").read_text(errors="replace")[-2000:]
        pytest.fail(f"{message}\nlast screenshot: {self.last}\nserver log (end):\n{server_log}")


def _run_all_cells(page, steps: Steps) -> float:
    """Run > Run All Cells, then wait until every code cell has an execution count and the kernel is idle; seconds taken."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    started, next_shot = time.monotonic(), 60.0
    cells = page.locator(".jp-Notebook .jp-CodeCell")
    total = cells.count()
    if not total:
        steps.fail(f"{NOTEBOOK} shows no code cells")
    while True:
        prompts = page.locator(".jp-Notebook .jp-CodeCell .jp-InputArea-prompt").all_inner_texts()
        done = sum(bool(re.fullmatch(r"\s*\[\d+\]:\s*", p)) for p in prompts)
        errors = page.locator(".jp-OutputArea-output", has_text="Traceback (most recent call last)")
        if errors.count():
            steps.fail(f"a cell of {NOTEBOOK} failed:\n{errors.first.inner_text()[-3000:]}")
        if done == total and page.locator(KERNEL_IDLE).count() and not page.locator(KERNEL_BUSY).count():
            return time.monotonic() - started
        elapsed = time.monotonic() - started
        if elapsed > RUN_TIMEOUT_S:
            steps.fail(f"{NOTEBOOK} did not finish within {RUN_TIMEOUT_S} s: {done} of {total} code cells ran")
        if elapsed > next_shot:  # a picture of the progress, in case the run is killed from outside
            steps.shot("running")
            next_shot += 60
        time.sleep(3)


def test_notebook_01_dashboard_in_jupyterlab(lab):
    base, token, home = lab
    timings: dict[str, float] = {}
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.set_default_timeout(UI_TIMEOUT_MS)
            steps = Steps(page, home)
            start = time.monotonic()
            page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}")
            try:
                page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=SERVER_TIMEOUT_S * 1000)
                # the status bar names the kernel once it has started ("Python 3 (ipykernel) | Idle"); before, "No Kernel"
                page.wait_for_selector(KERNEL_IDLE, timeout=SERVER_TIMEOUT_S * 1000)
            except sync_api.TimeoutError:
                steps.fail(f"JupyterLab did not open {NOTEBOOK} with an idle kernel within {SERVER_TIMEOUT_S} s")
            timings["open"] = time.monotonic() - start
            steps.shot("opened")
            timings["run all cells"] = _run_all_cells(page, steps)
            steps.shot("ran")

            dashboard = steps.wait(page.locator(".keditlab-dashboard").first, "attached",
                                   "the run's output has no dashboard (.keditlab-dashboard): the widget did not render")
            dashboard.scroll_into_view_if_needed()
            titles = [t.strip() for t in dashboard.locator(".lm-TabBar-tabLabel").all_inner_texts()]
            if titles[:3] != ["Table", "Charts", "Per edit"]:
                steps.fail(f"the dashboard's tabs are {titles}, not Table, Charts, Per edit")

            def open_tab(title: str) -> None:
                dashboard.locator(".lm-TabBar-tab", has_text=re.compile(f"^{title}$")).click()

            table = dashboard.locator("table.keditlab-table")
            open_tab("Table")
            if not table.is_visible():
                steps.fail("the Table tab shows no results table (table.keditlab-table)")
            text = table.inner_text()
            for word in ("rome", "reliability", "generalization", "locality", "portability"):
                if word not in text:
                    steps.fail(f"the results table has no {word!r}: {text[:500]}")
            steps.shot("table", dashboard)

            open_tab("Charts")
            chart = steps.wait(dashboard.locator("img.keditlab-chart").first, "visible",
                               "the Charts tab shows no chart image (img.keditlab-chart)")
            width = chart.evaluate("img => img.complete ? img.naturalWidth : 0")
            if not width:
                steps.fail("the chart image did not decode (naturalWidth 0)")
            steps.shot("charts", dashboard)

            open_tab("Per edit")
            drill = steps.wait(dashboard.locator(".keditlab-drilldown").first, "visible",
                               "the Per edit tab shows no drill-down (.keditlab-drilldown)")
            kinds = set(drill.locator("tr[data-kind]").evaluate_all("rows => rows.map(r => r.dataset.kind)"))
            if not {"edit prompt", "rephrase", "locality", "portability"} <= kinds:
                steps.fail(f"the drill-down lists the probes {sorted(kinds)}, not the edit prompt, rephrase, locality and portability")
            if not drill.locator(".pass, .fail").count():
                steps.fail("the drill-down marks no probe pass or fail")
            pickers = dashboard.locator("select")
            if pickers.count() < 2:
                steps.fail("the Per edit tab has no method and edit pickers")
            # the second edit, picked as a user would: the drill-down follows
            first_prompt = drill.inner_text()
            pickers.nth(1).select_option(index=1)
            page.wait_for_function("([el, old]) => el.innerText !== old", arg=[drill.element_handle(), first_prompt])
            steps.shot("per-edit", dashboard)
        finally:
            browser.close()
    timings["total"] = time.monotonic() - start
    for name in ("table", "charts", "per-edit"):
        shot = OUT / f"lab-{name}.png"
        assert shot.exists() and shot.stat().st_size > 10_000, f"the {name} screenshot {shot} is missing or blank"
    (OUT / "lab-timings.json").write_text(json.dumps({k: round(v, 1) for k, v in timings.items()}, indent=1))
    print("JupyterLab browser test:", ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
