"""Transactional edits (keditlab/methods/transaction.py): a method call that does not complete leaves the model as it was.

For every method, on a tiny random Llama, a ``KeyboardInterrupt`` (a student
pressing Interrupt) is raised at two moments of the call: the first write into
one of the model's weights (seen by a ``TorchFunctionMode`` watching every
in-place operation on a parameter's storage), and the middle forward pass of
the call (counted on an uninterrupted call first).  Both in single mode (on
the unedited model) and in sequential mode (on top of an earlier edit that
stays applied).  Afterwards every parameter and buffer is bit for bit what it
was, with the module tree, hooks, ``requires_grad`` flags and ``state_dict``
keys; the earlier edit of a sequential run is still there and restores.
An error other than an interrupt is re-raised as ``EditFailed`` naming the
method and the edit; a NaN update is refused as ``NonFiniteEdit``.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.overrides import TorchFunctionMode

from keditlab.methods import EditContext, EditFailed, NonFiniteEdit, get_method, method_names
from keditlab.models import derive_profile
from keditlab.spec.types import EditCase
from tests.unit.test_architecture_matrix import CASE, FAST, MOVABLE, _state, cache, corpus_file, fast  # noqa: F401 - fixtures

EARLIER = EditCase(prompt="The Colosseum stands in the city of", subject="Colosseum", target="Berlin",
                   ground_truth="Rome", rephrase=("Where is the Colosseum? In",), case_id="colosseum")
#: Names of in-place tensor operations that are not writes into the tensor's values.
NOT_WRITES = {"requires_grad_", "share_memory_", "retain_grad", "pin_memory"}


class InterruptAtFirstWrite(TorchFunctionMode):
    """Raise ``KeyboardInterrupt`` at the first in-place operation on the storage of one of ``model``'s parameters."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.fired = False

    def _touches(self, value) -> bool:
        if isinstance(value, torch.Tensor):
            return value.untyped_storage().data_ptr() in self.storages
        if isinstance(value, (list, tuple)):
            return any(self._touches(v) for v in value)
        return False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        writes = (name.endswith("_") and not name.endswith("__") and name not in NOT_WRITES) or name in (
            "__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__")
        if not self.fired and writes and args and self._touches(args[0]):
            self.fired = True
            raise KeyboardInterrupt(f"test: interrupted at the first write ({name})")
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def tiny(tokenizer, corpus_file, cache):  # noqa: F811 - the fixtures imported above
    from keditlab.devtools.architectures import tiny_model
    from keditlab.stats import CovarianceProvider

    model = tiny_model("llama", vocab_size=49152, **MOVABLE)
    profile = derive_profile(model)
    with torch.no_grad():   # transformers hangs its output-capturing hooks on first use: before any state is read
        model(input_ids=torch.tensor([[1, 2, 3]]), output_hidden_states=True)
    provider = CovarianceProvider(model, tokenizer, profile, corpus=corpus_file, num_tokens=1000, max_length=32)
    return model, profile, provider


def _apply(method, tiny, tokenizer, case, memory):
    model, profile, provider = tiny
    return get_method(method).apply(model, tokenizer, profile, [case], fast(method, model, tokenizer, profile),
                                    EditContext(covariance=provider, progress=False, memory=memory))


def _forwards(model):
    """A counter of forward passes (each one goes through the input embeddings) and the hook that counts them."""
    count = [0]
    hook = model.get_input_embeddings().register_forward_pre_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    return count, hook


def _interrupt_at_forward(model, at: int):
    count = [0]

    def hook(*_):
        count[0] += 1
        if count[0] == at:
            raise KeyboardInterrupt(f"test: interrupted at forward pass {at}")

    return model.get_input_embeddings().register_forward_pre_hook(hook)


def _assert_same(state, model):
    tree, flags, params, buffers, keys = state
    now_tree, now_flags, now_params, now_buffers, now_keys = _state(model)
    assert now_tree == tree and now_flags == flags and now_keys == keys
    assert params.keys() == now_params.keys() and all(torch.equal(params[n], now_params[n]) for n in params), \
        [n for n in params if not torch.equal(params[n], now_params[n])]
    assert all(torch.equal(buffers[n], now_buffers[n]) for n in buffers)


@pytest.mark.parametrize("mode", ["single", "sequential"])
@pytest.mark.parametrize("moment", ["first write", "middle forward"])
@pytest.mark.parametrize("method", method_names())
def test_an_interrupted_call_leaves_the_model_as_it_was(method, moment, mode, tiny, tokenizer):
    model = tiny[0]
    memory: dict = {}
    original = _state(model)
    earlier = _apply(method, tiny, tokenizer, EARLIER, memory) if mode == "sequential" else None
    try:
        before = _state(model)
        if moment == "first write":
            guard, hook = InterruptAtFirstWrite(model), None
        else:   # count the forward passes of the same call, uninterrupted, then stop it at the middle one
            count, counter = _forwards(model)
            _apply(method, tiny, tokenizer, CASE, memory).restore()
            counter.remove()
            _assert_same(before, model)
            guard, hook = contextlib.nullcontext(), _interrupt_at_forward(model, max(1, count[0] // 2))
        try:
            with guard:
                handle = _apply(method, tiny, tokenizer, CASE, memory)
        except KeyboardInterrupt:
            handle = None
        finally:
            if hook is not None:
                hook.remove()
        if handle is not None:   # the call completed: only a method that writes no weight has no first write
            assert moment == "first write" and handle.changed_parameters == [], (method, handle.changed_parameters)
            handle.restore()
        _assert_same(before, model)
        if earlier is not None:   # the stream goes on: the next edit applies and restores cleanly
            with _apply(method, tiny, tokenizer, CASE, memory):
                pass
            _assert_same(before, model)
    finally:
        if earlier is not None:
            earlier.restore()
    _assert_same(original, model)


def test_an_error_inside_a_call_names_the_method_and_the_edit_and_rolls_back(tiny, tokenizer):
    model = tiny[0]
    before = _state(model)
    calls = [0]

    def fail_at_third(*_):
        calls[0] += 1
        if calls[0] == 3:   # after FT-M's first optimiser steps have written its weights
            raise RuntimeError("a fault inside the forward pass")

    hook = model.get_input_embeddings().register_forward_pre_hook(fail_at_third)
    try:
        with pytest.raises(EditFailed) as raised:
            _apply("ft-m", tiny, tokenizer, CASE, {})
    finally:
        hook.remove()
    text = str(raised.value)
    assert "ft-m failed on edit 'eiffel'" in text and "RuntimeError: a fault inside the forward pass" in text, text
    assert "rolled back" in text
    _assert_same(before, model)


def test_a_non_finite_update_is_refused_and_rolled_back(tiny, tokenizer, monkeypatch):
    model, profile, provider = tiny
    before = _state(model)
    import keditlab.methods.memit as memit

    real = memit.Memit.solve

    def poisoned(self, *args, **kwargs):
        change = real(self, *args, **kwargs)
        change[0, 0] = float("nan")
        return change

    monkeypatch.setattr(memit.Memit, "solve", poisoned)
    with pytest.raises(NonFiniteEdit) as raised:
        _apply("memit", tiny, tokenizer, CASE, {})
    text = str(raised.value)
    assert "memit computed a non-finite update" in text and "'eiffel'" in text and "rolled back" in text, text
    _assert_same(before, model)


def test_a_call_made_inside_another_is_undone_when_the_outer_one_fails(tiny, tokenizer, monkeypatch):
    """A method whose call makes another method's call (none does today; a user's may): the outer rollback undoes both."""
    import keditlab.methods.finetune as finetune

    model = tiny[0]
    before = _state(model)
    real = finetune.FineTuneM._apply

    def rome_first_then_fail(self, model, *args, **kwargs):
        _apply("rome", tiny, tokenizer, EARLIER, {})   # completes: its handle goes to the outer transaction
        real(self, model, *args, **kwargs)
        raise RuntimeError("the outer call fails after the inner one completed")

    monkeypatch.setattr(finetune.FineTuneM, "_apply", rome_first_then_fail)
    with pytest.raises(EditFailed, match="the outer call fails"):
        _apply("ft-m", tiny, tokenizer, CASE, {})
    _assert_same(before, model)
