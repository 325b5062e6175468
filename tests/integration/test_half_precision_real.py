"""ROME and MEMIT on the embedded model loaded in bfloat16: the edits take, and undo bit for bit.

Ten CounterFact records (0-9), default settings, teacher-forced reliability
only (the other metrics and the float32 comparison are in
docs/performance.md, "Half precision").  The statistics are the checkpoint's:
the float32 model's, found in the cache under the same fingerprint (touched
here with the float32 ``embedded`` model first, so a cache filled by an
earlier keditlab is adopted and nothing is recomputed in bfloat16).
"""

from __future__ import annotations

import pytest
import torch

from keditlab.data.records import counterfact_cases
from keditlab.evaluate import measure
from keditlab.evaluate.measurement import mean_scores
from keditlab.methods import EditContext, get_method
from keditlab.methods.layers import factual_recall_layer, memit_window
from keditlab.spec.types import EvalSpec
from keditlab.stats import CovarianceProvider

pytestmark = pytest.mark.integration

TF = EvalSpec(metrics=("reliability",), protocols=("teacher_forced",), batch_size=64)
RELIABILITY = ("reliability", "teacher_forced")


@pytest.fixture(scope="module")
def half(embedded):
    from keditlab.models import load_model

    model, tokenizer, profile = embedded
    layers = [factual_recall_layer(profile.num_layers), *memit_window(profile.num_layers)]
    CovarianceProvider(model, tokenizer, profile).for_layers(layers)   # float32 statistics, cached (or adopted)
    return load_model("smollm2-135m", dtype="bfloat16")


@pytest.fixture(scope="module")
def records(shared_datasets):
    return counterfact_cases(str(shared_datasets / "counterfact" / "counterfact_500.json"), limit=10, offset=0)


def test_rome_and_memit_in_bfloat16_take_and_restore_bit_for_bit(half, records):
    model, tokenizer, profile = half
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    covariance = CovarianceProvider(model, tokenizer, profile)
    context = EditContext(covariance=covariance, progress=False)
    pre = measure(model, tokenizer, records, TF, text=False)
    assert mean_scores(pre)[RELIABILITY] < 0.5   # the targets were not said before

    rome = []
    for case, case_pre in zip(records, pre):   # single mode: each edit alone on the unedited model
        handle = get_method("rome").apply(model, tokenizer, profile, [case], {}, context)
        try:
            assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
            rome += measure(model, tokenizer, [case], TF, reference=[case_pre], text=False)
        finally:
            handle.restore()
    assert mean_scores(rome)[RELIABILITY] >= 0.9

    handle = get_method("memit").apply(model, tokenizer, profile, records, {}, context)   # one batch of ten
    try:
        memit = measure(model, tokenizer, records, TF, reference=pre, text=False)
    finally:
        handle.restore()
    assert mean_scores(memit)[RELIABILITY] >= 0.9

    assert all(stats.loaded_from_cache for stats in covariance.stats.values())   # the float32 statistics, shared
    for name, param in model.named_parameters():
        assert param.dtype == torch.bfloat16 and torch.equal(param.detach(), before[name]), name
