"""Transactional edits on the real embedded model: a call interrupted at its last forward pass leaves no trace.

One method per family (locate-then-edit ``rome`` and ``memit``, fine-tuning
``ft-m``, peft's ``lora``, the adaptor ``grace``).  After a first call (its
one-off work done), the forward passes of a second are counted through the
last block; the same call is then stopped by a
``KeyboardInterrupt`` at its last forward pass, after the method has written
(ROME and MEMIT measure what they wrote, fine-tuning is on its last step, LoRA's
adapter is trained and GRACE's codebook holds the edit).  Every weight, the
module tree and the greedy answer must be the model's own again
(tests/unit/test_transactions.py interrupts every method on tiny models).
"""

from __future__ import annotations

import pytest
import torch

import keditlab
from keditlab.evaluate import greedy_generate
from keditlab.spec.types import EditCase

pytestmark = pytest.mark.integration

CASE = EditCase(prompt="The Statue of Liberty is located in the city of", subject="Statue of Liberty", target="London",
                ground_truth="New York", case_id="liberty")


@pytest.mark.parametrize("method", ["rome", "memit", "ft-m", "lora", "grace"])
def test_a_call_interrupted_at_its_last_forward_pass_leaves_the_model_as_it_was(embedded, method):
    model, tokenizer, profile = embedded
    last_block = model.get_submodule(profile.layer_module(profile.num_layers - 1))   # every pass goes through it
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    tree = [(name, type(module).__name__) for name, module in model.named_modules()]
    answer = greedy_generate(model, tokenizer, [CASE.prompt], max_new_tokens=3)

    keditlab.apply_edit(method, model, tokenizer, profile, [CASE]).restore()   # one-off work (statistics, prefixes) done
    count = [0]
    counter = last_block.register_forward_pre_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    try:
        keditlab.apply_edit(method, model, tokenizer, profile, [CASE]).restore()
    finally:
        counter.remove()
    seen = [0]

    def interrupt(*_):
        seen[0] += 1
        if seen[0] == count[0]:
            raise KeyboardInterrupt("test: interrupted at the call's last forward pass")

    hook = last_block.register_forward_pre_hook(interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            keditlab.apply_edit(method, model, tokenizer, profile, [CASE])
    finally:
        hook.remove()
    assert count[0] > 1 and seen[0] == count[0]
    assert [(name, type(module).__name__) for name, module in model.named_modules()] == tree
    for name, param in model.named_parameters():
        assert torch.equal(param.detach(), weights[name]), name
    assert greedy_generate(model, tokenizer, [CASE.prompt], max_new_tokens=3) == answer
