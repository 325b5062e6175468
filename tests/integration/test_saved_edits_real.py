"""Saved edits and ``keditlab export`` on the embedded model: a run's edits, loaded again and written out as a model.

A sequential FT-M run of two quickstart edits with ``run.save_edits: true``
saves each call; the two calls load into the unedited model in order (bit for
bit the run's final weights are checked in tests/unit/test_saved_edits.py for
every method) and make it say both targets; ``keditlab export`` writes a folder
that plain ``transformers`` loads and that says both targets too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import keditlab
from keditlab.evaluate import greedy_generate

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SPEC = """
keditlab: 1
name: saved
model: smollm2-135m
method: ft-m
edits:
  - {id: eiffel, prompt: "The Eiffel Tower is located in the city of", subject: Eiffel Tower, target: Rome}
  - {id: fuji, prompt: "Mount Fuji is located in the country of", subject: Mount Fuji, target: Brazil}
evaluate: {protocols: [teacher_forced], metrics: [reliability]}
run: {mode: sequential, save_edits: true}
"""


def _says(model, tokenizer, prompt: str) -> str:
    return greedy_generate(model, tokenizer, [prompt], max_new_tokens=3)[0]


def test_saved_edits_load_again_and_export_as_a_plain_transformers_model(embedded, tmp_path):
    model, tokenizer, profile = embedded
    unedited = {name: p.detach().clone() for name, p in model.named_parameters()}
    run = keditlab.run_text(SPEC, tmp_path / "runs", loaded=embedded, log=lambda message: None)
    calls = sorted((run.path / "edits" / "ft-m").iterdir())
    assert [p.name for p in calls] == ["call-0000", "call-0001"]
    assert json.loads((calls[1] / "edits.json").read_text())["cases"] == ["fuji"]
    assert all(torch.equal(p.detach(), unedited[n]) for n, p in model.named_parameters())   # the run restored it

    handles = [keditlab.load_edits(model, call) for call in calls]
    try:
        assert _says(model, tokenizer, "The Eiffel Tower is located in the city of").strip().startswith("Rome")
        assert _says(model, tokenizer, "Mount Fuji is located in the country of").strip().startswith("Brazil")
        edited = {name: p.detach().clone() for name, p in model.named_parameters()}
    finally:
        for handle in reversed(handles):
            handle.restore()
    assert all(torch.equal(p.detach(), unedited[n]) for n, p in model.named_parameters())

    out = tmp_path / "edited-model"
    done = subprocess.run([sys.executable, "-m", "keditlab", "export", str(run.path), "--method", "ft-m", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    again = subprocess.run([sys.executable, "-m", "keditlab", "export", str(run.path), "--method", "ft-m", "--out", str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 1 and "never overwrites" in again.stderr

    from transformers import AutoModelForCausalLM, AutoTokenizer

    exported = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    exported_tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert all(torch.equal(p.detach(), edited[n]) for n, p in exported.named_parameters() if n in edited)
    assert _says(exported, exported_tokenizer, "The Eiffel Tower is located in the city of").strip().startswith("Rome")
    assert _says(exported, exported_tokenizer, "Mount Fuji is located in the country of").strip().startswith("Brazil")
    assert json.loads((out / "keditlab-export.json").read_text())["cases"] == ["eiffel", "fuji"]
