"""``keditlab sweep`` on a tiny model: the local and Ray executors, failing cells, kill and resume, the merged table.

The tiny model is random, so its figures prove nothing about a method; these
tests check the plumbing: every cell an ordinary run folder, ``sweep.json``
telling each cell's state, one merged table, the same from both executors.
"""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from keditlab.runner.sweep_result import SweepResult, merged_run, read_sweep
from keditlab.runner.sweep_run import resume_sweep, sweep_spec
from keditlab.spec import parse_sweep

ROOT = Path(__file__).resolve().parents[2]

GRID = """\
keditlab: 1
name: grid
model: {model}
evaluate: {{metrics: [reliability, generalization, locality], protocols: [teacher_forced]}}
sweep:
  method: [{{name: ft-m, steps: {steps}}}, {{name: lora, steps: {steps}}}]
  edits:
    - {{dataset: zsre, file: zsre/zsre_mend_eval_portability_gpt4.json, limit: {limit}}}
    - {{dataset: counterfact, file: counterfact/counterfact_500.json, limit: {limit}}}
  run.seed: [0, 1]
"""


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tokenizer):
    from tests.conftest import make_tiny_model

    folder = tmp_path_factory.mktemp("tiny") / "llama"
    make_tiny_model("llama", vocab_size=49152).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster started in the test process (two CPUs), as a user's `ray.init()` would."""
    ray = pytest.importorskip("ray", reason='the ray executor needs pip install "keditlab[ray]"')
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def grid_text(model: Path, steps: int = 8, limit: int = 2) -> str:
    return GRID.format(model=model, steps=steps, limit=limit)


def table(folder: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((folder / "table.csv").read_text())))


def same_tables(a: list[dict[str, str]], b: list[dict[str, str]]) -> None:
    assert [{k: v for k, v in r.items() if k not in ("pre", "post")} for r in a] == \
           [{k: v for k, v in r.items() if k not in ("pre", "post")} for r in b]
    for x, y in zip(a, b):
        for key in ("pre", "post"):
            assert float(x[key]) == pytest.approx(float(y[key]), abs=1e-4), (x, y)


def test_the_ray_executor_runs_the_eight_cells_into_the_table_the_local_one_gives(tmp_path, tiny_dir, shared_datasets,
                                                                                  ray_cluster):
    sweep = parse_sweep(grid_text(tiny_dir), str(tmp_path / "grid.yaml"))
    assert len(sweep) == 8   # 2 methods x 2 datasets x 2 seeds
    local = sweep_spec(sweep, tmp_path / "local", log=lambda message: None)
    remote = sweep_spec(sweep, tmp_path / "ray", executor="ray", log=lambda message: None)
    for result in (local, remote):
        record = read_sweep(result.path)
        assert record["status"] == "complete" and result.counts()["complete"] == 8
        assert [cell["status"] for cell in record["cells"]] == ["complete"] * 8
        folders = sorted(p.name for p in (result.path / "cells").iterdir())
        assert folders == sorted(Path(cell["folder"]).name for cell in record["cells"]) and len(folders) == 8
        assert all(cell["seconds"] > 0 and cell["node"] for cell in record["cells"])
    assert read_sweep(remote.path)["executor"] == "ray"
    rows = table(local.path)
    assert {(r["method"], r["dataset"], r["run.seed"]) for r in rows} == {
        (m, d, s) for m in ("ft-m", "lora") for d in ("zsre", "counterfact") for s in ("0", "1")}
    same_tables(rows, table(remote.path))
    # every cell is an ordinary run folder, and the table is made of their summaries
    cell = read_sweep(local.path)["cells"][5]
    run = SweepResult.load(local.path).runs()[5]
    assert run.path == local.path / cell["folder"] and run.summary["methods"].keys() == {"lora"}
    assert run.metric("lora", "locality") == pytest.approx(float(next(
        r["post"] for r in rows if r["cell"] == "5" and r["metric"] == "locality")))
    markdown = (local.path / "table.md").read_text()
    assert "| method | model | dataset | metric | teacher_forced | probability | generation | seeds |" in markdown
    assert markdown.count("| ft-m |") == 2 * 4   # two datasets x four metrics (locality_accuracy too), seeds merged
    # the dashboard of a sweep: one entry per cell and method, with that cell's edits
    merged = merged_run(local.path)
    assert list(merged.summary["methods"])[:2] == ["ft-m · zsre · 0", "ft-m · zsre · 1"]
    assert len([c for c in merged.cases if c["method"] == "lora · counterfact · 1"]) == 2
    from keditlab.widgets import static_html

    for given in (local.path, local):   # a sweep folder, or the SweepResult keditlab.sweep returns
        page = static_html(given)
        assert "lora · counterfact · 1" in page and "ft-m · zsre · 0" in page
    shown = subprocess.run([sys.executable, "-m", "keditlab", "show", str(local.path)], capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0 and "Sweep grid: 8 of 8 cells complete" in shown.stdout, shown.stderr


def test_a_cell_that_fails_is_recorded_with_its_error_and_the_others_complete(tmp_path, tiny_dir, shared_datasets):
    text = grid_text(tiny_dir, limit=1).replace("  run.seed: [0, 1]\n", f"  model: [{tiny_dir}, {tmp_path / 'gone'}]\n")
    sweep = parse_sweep(text, str(tmp_path / "grid.yaml"))   # no model checks here: the missing one fails at run time
    result = sweep_spec(sweep, tmp_path / "runs", log=lambda message: None)
    cells = read_sweep(result.path)["cells"]
    assert result.status == "failed"
    assert [c["status"] for c in cells] == ["complete", "failed"] * 4
    assert all("gone" in c["error"] for c in cells if c["status"] == "failed")
    assert len(table(result.path)) == 4 * 4
    text = (result.path / "table.md").read_text()
    assert "4 of 8 cells complete" in text and "- cell 1 (method=ft-m, edits=zsre, model=gone) failed: " in text
    assert "keditlab sweep --resume" in str(result)


def test_a_killed_sweep_resumed_runs_only_the_cells_that_were_not_complete(tmp_path, tiny_dir, shared_datasets,
                                                                            ray_cluster):
    spec = tmp_path / "grid.yaml"
    spec.write_text(grid_text(tiny_dir, steps=30, limit=3), encoding="utf-8")
    runs = tmp_path / "runs"
    process = subprocess.Popen([sys.executable, "-m", "keditlab", "sweep", str(spec), "--out", str(runs)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    record: dict = {}
    while time.time() < deadline and process.poll() is None:
        found = list(runs.glob("*/sweep.json"))
        if found:
            try:
                record = json.loads(found[0].read_text())
            except json.JSONDecodeError:
                continue
            if sum(c["status"] == "complete" for c in record["cells"]) >= 2:
                process.send_signal(signal.SIGKILL)
                break
        time.sleep(0.05)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the sweep finished before it could be killed"
    (folder,) = runs.iterdir()
    before = read_sweep(folder)
    done = {c["index"]: c for c in before["cells"] if c["status"] == "complete"}
    assert before["status"] == "running" and 2 <= len(done) < 8
    result = resume_sweep(folder, executor="ray", log=lambda message: None)
    after = read_sweep(folder)
    assert result.status == "complete" and [c["status"] for c in after["cells"]] == ["complete"] * 8
    for index, cell in done.items():   # the complete cells were not run again
        assert after["cells"][index] == cell
    assert after["resumed"] is True and after["executor"] == "ray"
    assert len(table(folder)) == 8 * 4


def test_sweep_command_line_errors_are_one_readable_line(tmp_path, tiny_dir):
    def keditlab(*args):
        return subprocess.run([sys.executable, "-m", "keditlab", "sweep", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)

    bad = tmp_path / "bad.yaml"
    bad.write_text(grid_text(tiny_dir).replace("run.seed", "run.sead"), encoding="utf-8")
    result = keditlab(str(bad), "--out", str(tmp_path / "runs"))
    assert result.returncode == 2 and "bad.yaml:10:3: run.sead: unknown key 'sead' (did you mean 'seed'?)" in result.stderr
    assert not (tmp_path / "runs").exists() and "Traceback" not in result.stderr
    result = keditlab("--resume", str(tmp_path))
    assert result.returncode == 1 and "is not a sweep folder" in result.stderr and "Traceback" not in result.stderr
    result = keditlab()
    assert result.returncode == 2 and "give a spec" in result.stderr
    plain = tmp_path / "plain.yaml"
    plain.write_text(grid_text(tiny_dir).split("sweep:")[0] + "method: ft-m\nedits:\n  - {prompt: 'a b', subject: a, target: c}\n"
                     "sweep:\n  run.seed: [0]\n", encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "keditlab", "run", str(plain)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2 and "a sweep of 1 cells, not one run" in run.stderr and "keditlab sweep" in run.stderr


def test_a_bundle_named_like_a_table_column_gets_a_column_of_its_own(tmp_path, tiny_dir, shared_datasets):
    text = textwrap.dedent(f"""\
        keditlab: 1
        name: bundle
        model: {tiny_dir}
        method: {{name: ft-m, steps: 2}}
        sweep:
          dataset:
            - {{label: zsre-qa, edits: {{dataset: zsre, file: zsre/zsre_mend_eval_portability_gpt4.json, limit: 1}},
               evaluate: {{metrics: [reliability], protocols: [teacher_forced], context: qa}}}}
            - {{label: counterfact, edits: {{dataset: counterfact, file: counterfact/counterfact_500.json, limit: 1}},
               evaluate: {{metrics: [reliability, locality], protocols: [teacher_forced]}}}}
        """)
    result = sweep_spec(parse_sweep(text, str(tmp_path / "bundle.yaml")), tmp_path / "runs", log=lambda message: None)
    rows = table(result.path)
    assert [(r["sweep.dataset"], r["dataset"], r["metric"]) for r in rows] == [
        ("zsre-qa", "zsre", "reliability"), ("counterfact", "counterfact", "reliability"),
        ("counterfact", "counterfact", "locality"), ("counterfact", "counterfact", "locality_accuracy")]
    header = (result.path / "table.md").read_text().splitlines()[2]
    assert header == "| method | model | dataset | sweep.dataset | metric | teacher_forced | probability | generation |"
