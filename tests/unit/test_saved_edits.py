"""Saved edits (keditlab/methods/saved.py): what a method call wrote, on disk, loaded again bit for bit.

For every method whose edits are a state of the model (its weights, or
GRACE's and WISE's adaptors), on a tiny random Llama: an edit is applied and
saved, the model restored, and the saved edit loaded: every parameter, every
adaptor's state and the model's logits are bit for bit what the edit made
them, and the returned handle restores the model bit for bit.  A second edit made on top of the first
(sequential) loads only after the first.  Another model, an edited model and
damaged files are refused with the model unchanged; the methods whose edits
live outside the weights are named before any work.
"""

from __future__ import annotations

import json

import pytest
import torch

import keditlab
from keditlab.methods import EditContext, get_method, method_names
from keditlab.methods.saved import SavedEditsError, load_edits, save_edits, saveable
from tests.unit.test_architecture_matrix import CASE, FAST, cache, corpus_file, fast  # noqa: F401 - fixtures
from tests.unit.test_transactions import EARLIER, tiny  # noqa: F401 - fixtures

WEIGHT_METHODS = [name for name in method_names() if saveable(get_method(name)) is None]


PROBE = torch.tensor([[1, 50, 300, 7, 900, 12]])


def _params(model):
    """Every parameter, every adaptor's state (modules added by GRACE and WISE) and the logits on a probe."""
    from keditlab.methods.adaptors import Adaptor

    state = {name: p.detach().clone() for name, p in model.named_parameters()}
    state.update({f"adaptor {name}": module.state_digest() for name, module in model.named_modules() if isinstance(module, Adaptor)})
    with torch.no_grad():
        state["logits"] = model(input_ids=PROBE).logits.clone()
    return state


def _equal(model, values):
    now = _params(model)
    return now.keys() == values.keys() and all(
        torch.equal(v, values[k]) if isinstance(v, torch.Tensor) else v == values[k] for k, v in now.items())


def test_which_methods_can_be_saved():
    assert sorted(set(method_names()) - set(WEIGHT_METHODS)) == ["ike", "serac"]
    assert "by what the model reads (a prompt)" in saveable(get_method("ike"))
    assert "by what the model reads (a prompt)" in saveable(get_method("serac"))


@pytest.mark.parametrize("method", WEIGHT_METHODS)
def test_a_saved_edit_loads_bit_for_bit_and_restores(method, tiny, tokenizer, tmp_path):
    model, profile, provider = tiny
    unedited = _params(model)
    context = EditContext(covariance=provider, progress=False, memory={})
    settings = fast(method, model, tokenizer, profile, tmp_path)
    first = get_method(method).apply(model, tokenizer, profile, [EARLIER], settings, context)
    save_edits([first], tmp_path / "first", method=method, settings={}, cases=["colosseum"])   # right after the call,
    after_first = _params(model)                                                                 # as a run saves it
    assert not _equal(model, unedited), f"{method} left the model unchanged"
    second = get_method(method).apply(model, tokenizer, profile, [CASE], settings, context)
    save_edits([second], tmp_path / "second", method=method, settings={}, cases=[CASE.case_id])
    after_both = _params(model)
    second.restore()
    first.restore()
    assert _equal(model, unedited)

    with pytest.raises(SavedEditsError, match="the saved calls before this one first"):
        load_edits(model, tmp_path / "second")            # made on top of the first: refused without it
    assert _equal(model, unedited)
    loaded_first = load_edits(model, tmp_path / "first")
    loaded_second = load_edits(model, tmp_path / "second")
    assert _equal(model, after_both)
    loaded_second.restore()
    assert _equal(model, after_first)
    loaded_first.restore()
    assert _equal(model, unedited)


def test_another_model_or_damaged_files_are_refused_with_the_model_unchanged(tiny, tokenizer, tmp_path):
    from keditlab.devtools.architectures import tiny_model
    from tests.unit.test_architecture_matrix import MOVABLE

    model, profile, provider = tiny
    handle = get_method("ft-m").apply(model, tokenizer, profile, [CASE], FAST["ft-m"],
                                      EditContext(covariance=provider, progress=False))
    saved = save_edits([handle], tmp_path / "edit", method="ft-m", settings={"steps": 2}, cases=[CASE.case_id])
    with pytest.raises(SavedEditsError, match="never overwritten"):
        save_edits([handle], saved, method="ft-m", settings={}, cases=[])
    with pytest.raises(SavedEditsError, match="not the value these edits replaced"):
        load_edits(model, saved)                          # the edit is still on: loading twice is refused
    handle.restore()

    other = tiny_model("llama", vocab_size=49152, **MOVABLE)   # the same shapes, other weights
    torch.nn.init.normal_(other.model.layers[0].mlp.down_proj.weight)
    for p in other.parameters():
        p.data.add_(1.0)
    before = _params(other)
    with pytest.raises(SavedEditsError, match="Fix: load the run's model unedited"):
        load_edits(other, saved)
    assert _equal(other, before)
    with pytest.raises(SavedEditsError, match="made on another model"):
        load_edits(other.to(torch.bfloat16), saved)

    record = json.loads((saved / "edits.json").read_text())
    assert record["method"] == "ft-m" and record["settings"] == {"steps": 2} and record["cases"] == [CASE.case_id]
    (saved / "edits.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SavedEditsError, match="cannot be read"):
        load_edits(model, saved)
    with pytest.raises(SavedEditsError, match="holds no saved edits"):
        load_edits(model, tmp_path)
    assert keditlab.load_edits is not None


def test_save_edits_in_a_spec_names_methods_that_cannot_be_saved():
    from keditlab.spec import SpecValidationError, parse_spec

    text = "keditlab: 1\nname: s\nmethod: [ft-m, ike]\nedits:\n  - {prompt: The Eiffel Tower is in, subject: Eiffel Tower, target: Rome}\nrun: {save_edits: true}\n"
    with pytest.raises(SpecValidationError) as error:
        parse_spec(text, "s.yaml")
    assert "'ike' makes its edits by what the model reads (a prompt)" in str(error.value)
    assert parse_spec(text.replace(", ike", ", grace"), "s.yaml").run.save_edits is True


def test_a_load_interrupted_halfway_leaves_the_model_as_it_was(tiny, tokenizer, tmp_path, monkeypatch):
    """Ctrl-C while a saved GRACE edit loads (weights written, its codebook installed): nothing of it stays."""
    from keditlab.methods.grace import GraceCodebook

    model, profile, provider = tiny
    unedited = _params(model)
    handle = get_method("grace").apply(model, tokenizer, profile, [CASE], FAST["grace"],
                                       EditContext(covariance=provider, progress=False))
    saved = save_edits([handle], tmp_path / "grace", method="grace", settings={}, cases=[CASE.case_id])
    handle.restore()

    def interrupted(self, tensors, facts):
        raise KeyboardInterrupt

    monkeypatch.setattr(GraceCodebook, "load_state", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_edits(model, saved)
    assert _equal(model, unedited)


class _Foreign:
    """A class no memory is made of: a memory file holding one is refused, not unpickled."""

    def __init__(self) -> None:
        self.value = 1


def test_a_memory_file_holds_only_tensors_containers_and_the_memory_classes(tmp_path):
    from keditlab.methods.lifelong import HeldSums, KeySum
    from keditlab.methods.saved import MEMORY, load_memory

    assert load_memory(tmp_path) is None                  # a call saved without memory
    held = HeldSums({3: KeySum.of(torch.ones(2, 4))})
    held.shares = {3: 1}
    torch.save({"earlier": held, "anchors": {3: (torch.zeros(2), torch.ones(2))}}, tmp_path / MEMORY)
    back = load_memory(tmp_path)
    assert isinstance(back["earlier"], HeldSums) and back["earlier"].shares == {3: 1}
    assert torch.equal(back["earlier"][3].gram, held[3].gram) and back["earlier"][3].count == 2
    torch.save({"earlier": _Foreign()}, tmp_path / MEMORY)
    with pytest.raises(SavedEditsError, match=r"memory\.pt cannot be read .*Fix: resume without it"):
        load_memory(tmp_path)
    (tmp_path / MEMORY).write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(SavedEditsError, match="cannot be read"):
        load_memory(tmp_path)
