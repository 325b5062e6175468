"""The shared machinery of the methods: held sums taken back on restore, layer rules, auto layers, the (out, in) weight view, progress."""

from __future__ import annotations

import pytest
import torch

from keditlab.methods import EditContext, EditHandle, MethodConfigError, auto_layer_method, get_method
from keditlab.methods.base import EditMethod
from keditlab.methods.layers import (
    adaptor_layer, factual_recall_layer, late_layers, memit_window, tuning_layer, upper_half, window_ending_at,
)
from keditlab.methods.lifelong import HeldSums, KeySum
from keditlab.methods.progress import progress_bar
from keditlab.models import derive_profile
from tests.conftest import make_tiny_model


def _handle() -> EditHandle:
    return EditHandle("test", torch.nn.Linear(1, 1), {})


def test_held_sums_restored_last_first_are_bit_for_bit():
    held = HeldSums()
    a, b = torch.randn(4, 4, dtype=torch.float64), torch.randn(4, 4, dtype=torch.float64) * 1e-9
    first, second = _handle(), _handle()
    held.hold(0, a, first)
    after_first = held[0]
    held.hold(0, b, second)
    torch.testing.assert_close(held[0], a + b)
    second.restore()
    assert held[0] is after_first                  # the very value before: no rounding of (a + b) - b
    first.restore()
    assert held == {} and held.shares == {}


def test_held_sums_restored_out_of_order_subtract_their_share():
    held = HeldSums()
    first, second = _handle(), _handle()
    held.hold(3, KeySum.of(torch.ones(2, 3)), first)
    held.hold(3, KeySum.of(2 * torch.ones(5, 3)), second)
    assert held[3].count == 7 and held[3][1] == 7    # a KeySum reads as (gram, count)
    first.restore()                                  # not the latest: its share is subtracted
    assert held[3].count == 5
    torch.testing.assert_close(held[3].second_moment(), 4 * torch.ones(3, 3))
    second.restore()
    assert held == {}                                # no share left: the layer is forgotten


def test_held_sums_with_a_start_keep_it_after_the_last_restore():
    held = HeldSums()
    start = torch.zeros(2, 2)
    handle = _handle()
    held.hold(1, torch.eye(2), handle, start=start)
    handle.restore()
    assert held[1] is start                          # AlphaEdit's running sum is zero before any edit, and after


def test_layer_rules_pick_the_same_layers_as_before():
    assert factual_recall_layer(30) == 5 and factual_recall_layer(1) == 0
    assert memit_window(30) == [1, 2, 3, 4, 5] and memit_window(2) == [0]
    assert late_layers(30) == list(range(18, 29)) and late_layers(3) == [2]
    assert tuning_layer(30) == 21 and adaptor_layer(30) == 24
    assert upper_half(30) == list(range(15, 30))
    assert window_ending_at(2, 5) == [0, 1, 2, 3, 4] and window_ending_at(9, 3) == [7, 8, 9]


def test_auto_layers_are_what_each_method_says():
    assert get_method("rome").auto_layer_settings(7, 30) == {"layer": 7}
    assert get_method("r-rome").auto_layer_settings(7, 30) == {"layer": 7}
    assert get_method("memit").auto_layer_settings(7, 30) == {"layers": [3, 4, 5, 6, 7]}
    assert get_method("alphaedit").auto_layer_settings(2, 30) == {"layers": [0, 1, 2, 3, 4]}
    assert type(auto_layer_method("layer")).__name__ == "Rome"
    assert auto_layer_method("layers").name == "memit"
    with pytest.raises(MethodConfigError, match="cannot be 'auto'"):
        get_method("ultraedit").auto_layer_settings(7, 30)


def test_a_method_card_in_the_class_statement():
    from keditlab.methods.base import Capabilities, MethodConfig

    class Probe(EditMethod, name="probe", family="test", paper="nobody", config_class=MethodConfig,
                capabilities=Capabilities(batch=True)):
        """A method that is only a card.

        Later paragraphs are not the summary.
        """

    class Renamed(Probe, name="renamed"):
        pass

    assert (Probe.name, Probe.family, Probe.paper, Probe.capabilities.batch) == ("probe", "test", "nobody", True)
    assert Probe.summary == "A method that is only a card."
    assert (Renamed.name, Renamed.family, Renamed.summary) == ("renamed", "test", Probe.summary)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_mlp_out_weight_is_out_by_in_and_the_writer_adds_there(model_type):
    model = make_tiny_model(model_type)
    profile = derive_profile(model)
    weight = profile.mlp_out_weight(model, 1)
    assert weight.shape == (profile.hidden_size, profile.mlp_size)   # (out, in) whatever the storage
    key = torch.randn(profile.mlp_size)
    module = model.get_submodule(profile.mlp_out_module(1))
    before = module(key[None]).detach()
    update = torch.outer(torch.randn(profile.hidden_size), torch.randn(profile.mlp_size)).double()
    profile.add_to_mlp_out(model, 1, update)
    torch.testing.assert_close(module(key[None]).detach() - before, (update.float() @ key)[None], rtol=1e-4, atol=1e-4)


def test_progress_bars_follow_the_context():
    with progress_bar(EditContext(progress=False), total=3, desc="quiet") as bar:
        bar.update()
        assert bar.disable
    with progress_bar(EditContext(progress=True), total=3, desc="shown") as bar:
        assert not bar.disable
    with progress_bar(False, total=1, desc="plain bool") as bar:
        assert bar.disable


def test_locft_bf_span_names_the_late_layers_by_depth():
    config = get_method("locft-bf").config_class
    assert config().resolved_layers(30) == [21]                                   # the paper's one layer
    assert config(span="late").resolved_layers(30) == late_layers(30) == list(range(18, 29))
    assert config(span="late").resolved_layers(18) == late_layers(18) == list(range(11, 17))
    assert config(span="late", layers=[3, 4]).resolved_layers(18) == [3, 4]      # named layers win
