"""On the real model: a wrong ground truth, an edit that does not take and one that changes nothing are reported, not hidden."""

from __future__ import annotations

import re

import pytest

from keditlab.runner import run_spec
from keditlab.spec import spec_from_dict

pytestmark = pytest.mark.integration


def test_wrong_ground_truth_and_an_edit_that_did_not_take_are_reported(embedded):
    spec = spec_from_dict({
        "keditlab": 1,
        "name": "warnings",
        "method": [{"name": "rome", "label": "rome-0-steps", "v_steps": 1}],  # one step: δ stays 0, nothing is written
        "edits": [{"id": "eiffel", "prompt": "The Eiffel Tower is located in the city of", "subject": "Eiffel Tower",
                   "target": "Rome", "ground_truth": "Berlin"}],
        "evaluate": {"metrics": ["reliability"], "max_new_tokens": 4},
    })
    messages: list[str] = []
    run = run_spec(spec, None, loaded=embedded, log=messages.append)

    warnings = [m for m in messages if m.startswith("warning:")]
    assert any("ground_truth 'Berlin'" in m and "it says 'Paris" in m for m in warnings), warnings
    assert any("[rome-0-steps] edit 'eiffel' did not take" in m for m in warnings), warnings
    record = run.cases[0]
    assert any("[rome-0-steps] edit 'eiffel' left the model's outputs unchanged" in m for m in warnings), warnings
    assert [w["code"] for w in record["warnings"]] == ["ground_truth_not_said", "outputs_unchanged", "target_not_said"]
    assert run.summary["methods"]["rome-0-steps"]["warnings"] == {"outputs_unchanged": 1, "target_not_said": 1, "ground_truth_not_said": 1,
                                                                         "edit_failed": 0}
    assert re.search(r"target not said \(edits\) +1/1", run.table())
    assert re.search(r"OUTPUTS UNCHANGED \(edits\) +1/1", run.table())
    # one-off work is reported apart from the seconds per edit
    assert record["setup_seconds"] >= 0 and record["edit_seconds"] > 0
