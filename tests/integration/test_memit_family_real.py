"""MEMIT, EMMET, AlphaEdit and r-ROME on the real embedded model and real CounterFact records.

Each method must write its edits (a method that leaves the model unchanged
fails here), keep unrelated facts, undo bit for bit, and the run modes must
measure on the model ``docs/runs.md`` says they do.  Batches are small (three
records) to keep the tier fast; the acceptance figures on 100 records are
``benchmarks/locate_then_edit.py``'s.
"""

from __future__ import annotations

import pytest
import torch

import keditlab
from keditlab.data.records import counterfact_cases
from keditlab.evaluate import measure
from keditlab.evaluate.measurement import mean_scores
from keditlab.methods import EditContext, get_method
from keditlab.runner import run_spec
from keditlab.spec.types import EvalSpec, MethodSpec, ModelSpec, RunSettings, Spec
from keditlab.stats import CovarianceProvider

pytestmark = pytest.mark.integration

TF = EvalSpec(metrics=("reliability", "generalization", "locality"), protocols=("teacher_forced",), batch_size=64)  # the generation protocol has its own tests


@pytest.fixture(scope="module")
def records(shared_datasets):
    return counterfact_cases(str(shared_datasets / "counterfact" / "counterfact_500.json"), limit=3, offset=10)


def _weights(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("method", ["memit", "emmet", "alphaedit"])
def test_batch_of_real_records_is_written_kept_local_and_undone(embedded, records, method):
    model, tokenizer, profile = embedded
    before = _weights(model)
    pre = measure(model, tokenizer, records, TF, text=False)
    handle = keditlab.apply_edit(method, model, tokenizer, profile, records)
    try:
        post = mean_scores(measure(model, tokenizer, records, TF, reference=pre, text=False))
        assert post[("reliability", "teacher_forced")] >= 0.9, post
        assert post[("locality", "teacher_forced")] >= 0.8, post
        assert mean_scores(pre)[("reliability", "teacher_forced")] < 0.5   # the targets were not said before
        assert len(handle.details["per_layer"]) == len(handle.details["layers"]) == 5
        for entry in handle.details["cases"]:
            assert entry["target_nll"][-1] < entry["target_nll"][0]
            assert entry["target_reached"][0] > 0.5, entry   # the layers together deliver most of δ at the bare prompt
    finally:
        handle.restore()
    for name, param in model.named_parameters():
        assert torch.equal(param.detach(), before[name]), name


def test_r_rome_writes_a_real_edit_with_consistent_keys(embedded, records):
    model, tokenizer, profile = embedded
    pre = measure(model, tokenizer, records[:1], TF, text=False)
    with keditlab.apply_edit("r-rome", model, tokenizer, profile, records[:1]) as handle:
        post = mean_scores(measure(model, tokenizer, records[:1], TF, reference=pre, text=False))
        assert handle.config["update_keys"] == "mean"
        assert post[("reliability", "teacher_forced")] == 1.0, post


def test_modes_measure_on_the_model_they_document(embedded, records):
    """A sequential run evaluated after all measures every edit on the model holding all of them; the run ends unedited."""
    model, tokenizer, profile = embedded
    before = _weights(model)
    spec = Spec(name="modes", model=ModelSpec(), methods=(MethodSpec("alphaedit"),), edits=tuple(records[:2]), evaluate=TF,
                run=RunSettings(mode="sequential", batch_size=1, evaluate_at="after_all"))
    run = run_spec(spec, out=None, loaded=embedded, log=lambda *a: None)
    for name, param in model.named_parameters():
        assert torch.equal(param.detach(), before[name]), name
    assert [r["edits_applied"] for r in run.cases] == [2, 2]

    # by hand: the same two edits one after another, then both measured
    context = EditContext(covariance=CovarianceProvider(model, tokenizer, profile))
    pre = measure(model, tokenizer, records[:2], TF, text=False)
    first = get_method("alphaedit").apply(model, tokenizer, profile, records[:1], {}, context)
    second = get_method("alphaedit").apply(model, tokenizer, profile, records[1:2], {}, context)
    by_hand = measure(model, tokenizer, records[:2], TF, reference=pre, text=False)
    second.restore()
    first.restore()
    assert context.memory["alphaedit"] and all(float(m.abs().max()) < 1e-6 for m in context.memory["alphaedit"].values())
    for record, expected in zip(run.cases, by_hand):
        got = {(s["metric"], s["protocol"]): s["post"] for s in record["scores"]}
        for key, value in expected.scores().items():
            assert got[key] == pytest.approx(value, abs=1e-6), key
