"""Running a row's δ-free prefix once and the rest against its cache gives the full forward's numbers."""

from __future__ import annotations

import pytest
import torch

from keditlab.methods.frozen_prefix import FrozenPrefixes
from keditlab.methods.keyvalue import _passes
from tests.conftest import make_tiny_model


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "mistral", "gpt2", "gptj", "gpt_neox"])
def test_rest_on_cached_prefix_equals_the_whole_row(model_type):
    model = make_tiny_model(model_type)
    g = torch.Generator().manual_seed(1)
    rows = [torch.randint(1, 128, (n,), generator=g).tolist() for n in (9, 4, 12, 6, 3)]
    cut = [5, 0, 8, 1, 2]  # different prefix lengths in one pass, one row with nothing to cache
    prefixes = FrozenPrefixes(model, rows, cut, pad_id=0, passes=_passes)
    part = [2, 0, 1, 4, 3]
    with torch.no_grad():
        rest = model.base_model(**prefixes.inputs(part)).last_hidden_state
        for i, r in enumerate(part):
            whole = model.base_model(input_ids=torch.tensor([rows[r]])).last_hidden_state[0, cut[r]:]
            assert torch.isfinite(rest[i]).all()
            assert torch.allclose(rest[i, : len(rows[r]) - cut[r]], whole, atol=1e-5), (model_type, r)


def test_rows_without_prefixes_need_no_cache():
    model = make_tiny_model("llama")
    prefixes = FrozenPrefixes(model, [[5, 6, 7], [8, 9]], [0, 0], pad_id=0, passes=_passes)
    inputs = prefixes.inputs([0, 1])
    assert "past_key_values" not in inputs
    assert inputs["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0]]
