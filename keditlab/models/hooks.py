"""Forward hooks that are always taken off again: the one place keditlab registers them.

Methods, statistics and causal tracing all read or change what a module
computes by hanging a *hook* on it: a function PyTorch calls with the
module's inputs (a *pre* hook, before ``forward``) or with its inputs and
output (a *forward* hook, after).  A hook left behind by an error or a
``KeyboardInterrupt`` in a notebook silently changes every later forward
pass, so keditlab never registers one by hand: it uses

:func:`hooks`
    a context manager, in the spirit of TransformerLens's ``model.hooks()``
    and nnsight's traced blocks: the hooks are on inside the block and off
    after it, however the block ends (return, exception, interrupt)::

        seen = []
        with hooks(pre=[(model.model.layers[5].mlp.down_proj, lambda _m, inputs: seen.append(inputs[0]))]):
            model(input_ids=ids)
        # the hook is gone here, even if model(...) raised

    A hook may raise :class:`StopForward` once it has read what it needs: the
    rest of the forward pass (the layers above) is skipped, and the ``with``
    block ends there without an error::

        def grab(_module, inputs):
            keys.append(inputs[0])
            raise StopForward
        with hooks(pre=[(module, grab)]), torch.no_grad():
            model(input_ids=ids)          # stops at ``module``

    Blocks nest: an inner block's hooks come off when it ends, the outer
    ones stay until theirs.

:func:`add_hook`
    for a hook that must outlive a block: an adaptor (GRACE, WISE) stays on
    its module while the edit is applied and is taken off by the edit's
    ``restore()``.  It returns a :class:`HookHandle` whose ``remove()`` may be
    called any number of times::

        handle = add_hook(module, adaptor_call)
        ...                       # the edit is on
        handle.remove()           # off; a second remove() does nothing

**Tokens as (batch, tokens, features), whatever the family.**  Hooks on a
block's MLP output projection are written for tensors of shape
``(batch, tokens, features)``.  Some families (OPT) flatten the tokens of a
batch before their MLP, so the projection sees ``(batch × tokens, features)``.
:func:`note_blocks` (called by ``derive_profile``) records which block each
MLP output projection sits in; a hook on such a module then sees its 2-D
inputs and output viewed as ``(batch, tokens, features)``, the shape the block
itself received, and what the hook returns is flattened back.  Families that
do not flatten are untouched.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

#: ``(module, function)``: a hook function and the module it is hung on.
HookSpec = tuple[torch.nn.Module, Callable[..., Any]]


class StopForward(Exception):
    """Raised by a hook once everything wanted is read: later layers need not run (:func:`hooks` ends its block)."""


#: A module whose hooks see tokens as (batch, tokens, features) -> the block it sits in (see :func:`note_blocks`).
_BLOCK_OF: "weakref.WeakKeyDictionary[torch.nn.Module, torch.nn.Module]" = weakref.WeakKeyDictionary()


def note_blocks(pairs: Iterable[tuple[torch.nn.Module, torch.nn.Module]]) -> None:
    """Record ``(module, block)`` pairs: hooks on ``module`` see 2-D token rows as ``(batch, tokens, features)``.

    ``derive_profile`` calls it with each layer's MLP output projection and its
    block.  A module whose inputs already come as ``(batch, tokens, features)``
    is never reshaped, so recording it costs nothing but a block pre-hook
    while one of its hooks is on.
    """
    for module, block in pairs:
        if module is not block:
            _BLOCK_OF[module] = block


class _TokenShape:
    """The ``(batch, tokens)`` of the hidden state a block is being called with, read by a pre-hook on the block."""

    def __init__(self) -> None:
        self.shape: tuple[int, int] | None = None

    def see(self, _block, args, kwargs):
        hidden = args[0] if args else kwargs.get("hidden_states")
        self.shape = tuple(hidden.shape[:2]) if isinstance(hidden, torch.Tensor) and hidden.dim() == 3 else None
        return None

    def unflat(self, x: Any) -> Any:
        """``x`` viewed as ``(batch, tokens, features)`` when it is the block's tokens flattened, else ``x``."""
        if self.shape is None or not isinstance(x, torch.Tensor) or x.dim() != 2:
            return x
        batch, tokens = self.shape
        return x.view(batch, tokens, x.shape[-1]) if x.shape[0] == batch * tokens else x

    @staticmethod
    def flat(x: Any, like: Any) -> Any:
        """``x`` back in the 2-D form of ``like`` when ``like`` was 2-D and ``x`` is its 3-D view."""
        if isinstance(x, torch.Tensor) and isinstance(like, torch.Tensor) and like.dim() == 2 and x.dim() == 3:
            return x.reshape(-1, x.shape[-1])
        return x

    def wrap(self, function: Callable[..., Any], pre: bool, with_kwargs: bool) -> Callable[..., Any]:
        if pre:
            def pre_hook(module, inputs, *rest):
                seen = (self.unflat(inputs[0]), *inputs[1:]) if inputs else inputs
                result = function(module, seen, *rest)
                if with_kwargs and isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], tuple):
                    args, kwargs = result
                    return (self.flat(args[0], inputs[0]), *args[1:]) if args else args, kwargs
                if isinstance(result, tuple) and result and inputs:
                    return (self.flat(result[0], inputs[0]), *result[1:])
                return self.flat(result, inputs[0]) if inputs else result
            return pre_hook

        def forward_hook(module, inputs, *rest):
            *middle, output = rest
            seen = (self.unflat(inputs[0]), *inputs[1:]) if inputs else inputs
            result = function(module, seen, *middle, self.unflat(output))
            return self.flat(result, output)
        return forward_hook


class HookHandle:
    """One registered hook; :meth:`remove` takes it off and is idempotent."""

    def __init__(self, torch_handle: Any, module: torch.nn.Module, kind: str, also: list[Any] | None = None) -> None:
        self._handle = torch_handle
        self._also = also or []   # the block pre-hook that reads the token shape, when there is one
        self.module = module
        self.kind = kind

    @property
    def active(self) -> bool:
        """Whether the hook is still on its module."""
        return self._handle is not None

    def remove(self) -> None:
        """Take the hook off its module; calling it again does nothing."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
            for extra in self._also:
                extra.remove()
            self._also = []

    def __repr__(self) -> str:
        state = "on" if self.active else "removed"
        return f"HookHandle({self.kind} hook on {type(self.module).__name__}, {state})"


def add_hook(module: torch.nn.Module, function: Callable[..., Any], *, pre: bool = False,
             with_kwargs: bool = False) -> HookHandle:
    """Hang ``function`` on ``module`` until :meth:`HookHandle.remove` is called.

    ``pre=False`` (a forward hook): ``function(module, inputs, output)``; a
    value it returns replaces the output.  ``pre=True``: ``function(module,
    inputs)`` before ``forward``; a tuple it returns replaces the inputs.
    ``with_kwargs=True`` passes the keyword arguments of the call as well
    (``function(module, args, kwargs)`` for a pre hook; it may return
    ``(args, kwargs)``).  Prefer :func:`hooks` unless the hook must outlive a
    ``with`` block.
    """
    also = []
    block = _BLOCK_OF.get(module)
    if block is not None:   # tokens may arrive flattened: read their (batch, tokens) where the block is called
        shape = _TokenShape()
        also.append(block.register_forward_pre_hook(shape.see, with_kwargs=True))
        function = shape.wrap(function, pre, with_kwargs)
    if pre:
        handle = module.register_forward_pre_hook(function, with_kwargs=with_kwargs)
    else:
        handle = module.register_forward_hook(function, with_kwargs=with_kwargs)
    return HookHandle(handle, module, "pre-forward" if pre else "forward", also)


@contextlib.contextmanager
def hooks(forward: Iterable[HookSpec] = (), pre: Iterable[HookSpec] = ()) -> Iterator[list[HookHandle]]:
    """Inside the block, each ``(module, function)`` of ``forward`` and ``pre`` is hooked on; after it, none is.

    ``forward`` hooks run after a module's ``forward`` (``function(module,
    inputs, output)``, may return a new output); ``pre`` hooks before it
    (``function(module, inputs)``, may return new inputs).  The hooks are
    removed however the block ends; a :class:`StopForward` raised by a hook
    ends the block quietly (the forward pass stopped where it was wanted).
    Yields the handles, in the order registered (``pre`` first).
    """
    handles: list[HookHandle] = []
    try:
        for module, function in pre:
            handles.append(add_hook(module, function, pre=True))
        for module, function in forward:
            handles.append(add_hook(module, function))
        yield handles
    except StopForward:
        pass
    finally:
        for handle in reversed(handles):
            handle.remove()
