"""The quickstart spec, run end to end on the real embedded model (the acceptance check).

One run of ``specs/quickstart.yaml`` (ROME and FT-M on six real facts) is shared
by the tests below; each reads the run folder it wrote, as a user would.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

import keditlab
from keditlab.runner import Run

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
#: The README sentence the example table follows.
README_ANCHOR = "`keditlab run specs/quickstart.yaml` (what `make demo` runs) prints a table"
#: Rows whose values are timings: compared by their label and shape only (they vary with the machine and the cache).
TIMING_ROWS = {"seconds per edit": r"\d+\.\d \+ \d+\.\d eval", "one-off set-up (s)": r"\d+\.\d"}


@pytest.fixture(scope="module")
def quickstart(embedded, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return keditlab.run(ROOT / "specs" / "quickstart.yaml", out, loaded=embedded, log=lambda _m: None)


def test_run_folder_has_the_three_records(quickstart):
    folder = quickstart.path
    assert sorted(p.name for p in folder.iterdir()) == ["cases.jsonl", "manifest.json", "summary.json", "table.csv", "table.md"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["seed"] == 0 and manifest["device"] == "cpu"
    assert manifest["versions"]["torch"] and manifest["versions"]["transformers"]
    assert manifest["started"] <= manifest["finished"]
    # the resolved spec has every default filled in, and is a valid spec that resolves to the one that ran
    assert manifest["format"] == "keditlab.manifest/2"
    written = keditlab.load(ROOT / "specs" / "quickstart.yaml")
    assert keditlab.load(manifest["spec"]) == dataclasses.replace(written, source="<dict>")
    assert manifest["spec"]["evaluate"]["max_new_tokens"] > 0
    assert manifest["spec"]["stats"]["corpus"] == "model-samples"
    assert manifest["statistics"][0]["corpus"].startswith("model-samples")
    assert manifest["methods"]["rome"]["settings"]["v_steps"] == 25  # every method setting, defaults included
    lines = (folder / "cases.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 6


def test_rome_meets_the_acceptance_bar(quickstart):
    summary = json.loads((quickstart.path / "summary.json").read_text())
    assert summary["format"] == "keditlab.summary/1"
    rome = summary["methods"]["rome"]["metrics"]
    assert rome["reliability"]["teacher_forced"]["post"] >= 0.9
    assert rome["reliability"]["teacher_forced"]["pre"] <= 0.2, "the model must not already say the targets"
    assert rome["locality"]["teacher_forced"]["post"] >= 0.8
    assert rome["generalization"]["teacher_forced"]["post"] >= 0.5
    assert rome["reliability"]["probability"]["post"] >= 0.9


@pytest.mark.parametrize("method", ["rome", "ft-m"])
def test_edited_model_generates_the_new_target(quickstart, method):
    """Greedy generation from the edit prompt starts with the new target for at least 4 of 5 edits."""
    records = [r for r in quickstart.cases if r["method"] == method]
    hits = sum(r["post"]["generations"][0]["text"].strip().startswith(r["edit"]["target"]) for r in records)
    before = sum(r["pre"]["generations"][0]["text"].strip().startswith(r["edit"]["target"]) for r in records)
    assert before == 0
    assert hits >= 4 * len(records) / 5, [r["post"]["generations"][0]["text"] for r in records]


def test_model_is_restored_after_the_run(quickstart, embedded):
    model, tokenizer, _ = embedded
    from keditlab.evaluate import greedy_generate

    assert greedy_generate(model, tokenizer, ["The Eiffel Tower is located in the city of"], max_new_tokens=2)[0].strip().startswith("Paris")


def test_saved_run_reloads_and_renders(quickstart):
    again = Run.load(quickstart.path)
    assert again.summary == quickstart.summary
    assert keditlab.load_run(quickstart.path).cases == again.cases == json.loads(json.dumps(quickstart.cases))
    assert again.metric("rome", "reliability") == quickstart.metric("rome", "reliability")
    html = again._repr_html_()
    assert "<table" in html and "rome" in html and "ft-m" in html and "Rome" in html
    text = str(again)
    assert "reliability (tf)" in text and "→" in text


def readme_table() -> list[str]:
    """The lines of the README's example block: the fenced block after :data:`README_ANCHOR`."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(README_ANCHOR)
    opening = text.index("```\n", start) + len("```\n")
    return text[opening:text.index("\n```", opening)].splitlines()


def table_cells(lines: list[str]) -> list[list[str]]:
    """Each line as its cells (columns are two or more spaces apart), without the one-off set-up row and the path.

    The one-off set-up row is there only when some set-up ran in this process
    (statistics not yet cached), so whether it is printed depends on the cache,
    not on the run; the results path differs on every run.
    """
    rows = []
    for line in lines:
        cells = re.split(r" {2,}", line.strip())
        if cells[0] == "one-off set-up (s)" or cells[0].startswith("results: "):
            continue
        rows.append(cells)
    return rows


def test_the_readme_example_is_what_the_quickstart_prints(quickstart):
    """Row labels, columns, scores (two decimals, as printed), "target not said" counts and the legend match a real
    run exactly; timings match in shape.  The run is seeded and deterministic on a CPU."""
    printed = str(quickstart).splitlines()
    shown = "\n".join(printed).replace(str(quickstart.path), "runs/quickstart-…")
    readme, real = table_cells(readme_table()), table_cells(printed)
    assert [row[0] for row in readme] == [row[0] for row in real], f"the README's rows differ; the run printed:\n{shown}"
    for want, got in zip(readme, real):
        if set(want[0]) == {"-"}:  # the rule under the header: as wide as the widest cell, a timing among them
            assert len(want) == len(got) and all(set(cell) == {"-"} for cell in got)
        elif want[0] in TIMING_ROWS:
            assert len(want) == len(got) and all(re.fullmatch(TIMING_ROWS[want[0]], cell) for cell in want[1:] + got[1:]), \
                f"{want} / {got}"
        else:
            assert want == got, f"README {want} != run {got}; the run printed:\n{shown}"
    assert readme_table()[-1] == "results: runs/quickstart-…"
