"""How an MLP's output reaches the residual stream (models/residual.py), and MEMIT's translation of a gap through it.

Gemma 2/3 and OLMo 2 normalise the MLP's output before adding it to the
residual stream; the other families add it as it is.  The map is found by
structure (one short forward pass), and ``value_change_for`` turns a wanted
change of the residual stream into a change of the MLP output through it.
"""

from __future__ import annotations

import pytest
import torch

from keditlab.devtools.architectures import tiny_model
from keditlab.methods.keyvalue import value_change_for
from keditlab.models import derive_profile
from keditlab.models.residual import mlp_output_map


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt", "qwen3_moe"])
def test_no_map_where_the_mlp_output_is_added_as_it_is(family):
    model = tiny_model(family)
    assert mlp_output_map(model, derive_profile(model), 0) is None


@pytest.mark.parametrize("family", ["gemma3_text", "gemma2", "olmo2"])
def test_the_post_feedforward_norm_is_found_by_structure(family):
    model = tiny_model(family, initializer_range=0.2)
    profile = derive_profile(model)
    layer = profile.num_layers - 1
    found = mlp_output_map(model, profile, layer)
    assert found is not None
    norm = model.get_submodule(f"{profile.layer_module(layer)}.post_feedforward_layernorm")   # the test may name it
    rows = torch.randn(5, profile.hidden_size)
    assert torch.equal(found(rows), norm(rows))
    # gradients reach the rows, never the model's parameters
    rows.requires_grad_(True)
    found(rows).sum().backward()
    assert rows.grad is not None and all(p.grad is None for p in model.parameters())


def test_a_gap_the_norm_can_reach_is_met():
    model = tiny_model("gemma3_text", initializer_range=0.2)
    profile = derive_profile(model)
    found = mlp_output_map(model, profile, 0)
    torch.manual_seed(0)
    values = torch.randn(6, profile.hidden_size)
    wanted = values + 0.3 * torch.randn_like(values)   # a nearby output: its image is reachable by construction
    gaps = (found(wanted) - found(values)).double()
    delta = value_change_for(found, values, gaps)
    missing = (found((values.double() + delta).float()) - found(values)).double() - gaps
    assert float((missing.norm(dim=1) / gaps.norm(dim=1)).max()) < 1e-3
    # the change is not the gap itself: the norm's gains and scale are undone
    assert float((delta - gaps).norm() / gaps.norm()) > 0.1


def test_without_a_map_the_change_is_the_gap():
    gaps = torch.randn(3, 8, dtype=torch.float64)
    assert value_change_for(None, torch.randn(3, 8), gaps) is gaps
