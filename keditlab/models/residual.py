"""How an MLP's output reaches the residual stream: as it is, or through a norm.

In most decoder blocks (GPT-2, Llama, Qwen, Mistral) the MLP's output
projection writes straight into the residual stream::

    h = h + mlp(norm(h))

so a change ``Δ`` of the projection's output is the same change of the
residual stream.  Some families normalise the MLP's output first, a
*post-feedforward norm* (Gemma 2 and 3, OLMo 2)::

    h = h + post_norm(mlp(pre_norm(h)))

Then a change ``Δ`` of the projection's output moves the residual stream by
``post_norm(m + Δ) − post_norm(m)``, which is not ``Δ``: an RMS norm divides
by the output's own scale and multiplies by its gain, so the same ``Δ`` can
move the residual stream ten times more or less than it says, and only in
directions the norm lets through.  A method that computes a wanted change of
the residual stream (MEMIT spreads one over several layers) must translate it
into the projection's output space through that map
(:func:`keditlab.methods.keyvalue.value_change_for`).

:func:`mlp_output_map` finds the map by structure, not by name: it runs one
short forward pass and follows the projection's output tensor through the
modules of its block that take it as their input (a norm, a dropout), in
order.  When those modules leave the tensor as it is (none, or a dropout in
eval mode), there is no map and callers take the fast, exact path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from keditlab.models.hooks import StopForward, hooks
from keditlab.models.sampling import device_of


def mlp_output_map(model: torch.nn.Module, profile: Any, layer: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """What the block at ``layer`` applies to its MLP output before adding it to the residual stream, or None (nothing).

    The returned function maps rows of the MLP output projection's output
    ``(rows, hidden)`` to the rows the block adds to the residual stream.
    Found by following, in one forward pass of three tokens stopped after the
    block, the projection's output tensor into every module of the block that
    takes that very tensor as its input, and then that module's output, and
    so on (Gemma 3: ``mlp.down_proj`` → ``post_feedforward_layernorm``).  An
    MoE block's output is followed the same way.  None when the chain is empty
    or, checked on the tensor seen, leaves it unchanged (a dropout in eval mode).
    """
    block = model.get_submodule(profile.layer_module(layer))
    value = model.get_submodule(profile.mlp_out_module(layer))
    chain: list[torch.nn.Module] = []
    seen: dict[str, Any] = {}

    def first(output: Any) -> Any:
        return output[0] if isinstance(output, tuple) else output

    def after_value(_module, _inputs, output):
        seen["tensor"], seen["value"] = first(output), first(output)

    def before(module):
        def check(_module, inputs):
            if inputs and seen.get("tensor") is not None and inputs[0] is seen["tensor"]:
                chain.append(module)
                seen["follow"] = module
        return check

    def after(module):
        def take(_module, _inputs, output):
            if seen.get("follow") is module:
                seen["tensor"], seen["follow"] = first(output), None
        return take

    def stop(_module, _inputs, _output):
        raise StopForward

    inside_value = {id(m) for m in value.modules()}
    others = [m for m in block.modules() if m is not block and id(m) not in inside_value]
    device = device_of(model)
    forward = [(value, after_value), *[(m, after(m)) for m in others], (block, stop)]
    with hooks(forward=forward, pre=[(m, before(m)) for m in others]), torch.no_grad():
        model(input_ids=torch.tensor([[1, 2, 3]], device=device))
    if not chain:
        return None

    def apply(rows: torch.Tensor) -> torch.Tensor:
        """The map on ``rows``; gradients reach ``rows`` only, never the model's parameters."""
        parameters = [p for module in chain for p in module.parameters()]
        flags = [p.requires_grad for p in parameters]
        try:
            for p in parameters:
                p.requires_grad_(False)
            out = rows
            for module in chain:
                out = first(module(out))
            return out
        finally:
            for p, flag in zip(parameters, flags):
                p.requires_grad_(flag)

    sample = seen["value"].detach()
    with torch.no_grad():
        if torch.equal(apply(sample), sample):
            return None
    return apply
