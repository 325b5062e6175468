"""The per-edit table never prints ``nan`` where a record has no value (seen in JupyterLab by the browser test)."""

from __future__ import annotations

import pytest

pd = pytest.importorskip("pandas")


def test_a_probe_without_answer_shows_none():
    from keditlab.widgets.static import edit_html

    common = {"method": "rome", "case_id": "colosseum", "subject": "Colosseum", "ground_truth": None, "target": "London",
              "generation_before": "Rome, Italy.", "generation_after": "London, and"}
    rows = pd.DataFrame([
        {**common, "kind": "edit prompt", "protocol": "teacher_forced", "prompt": "The Colosseum is located in the city of",
         "answer": "London", "pre": 0.0, "post": 1.0, "passed": True},
        {**common, "kind": "generation", "protocol": "generation", "prompt": "The Colosseum is located in the city of",
         "answer": float("nan"), "pre": 4.31, "post": 4.45, "passed": None},  # what pandas holds for a missing answer
    ])
    page = edit_html(rows)
    assert "nan" not in page.lower()
    assert "<b>London</b>" in page
