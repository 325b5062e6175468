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
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

#: ``(module, function)``: a hook function and the module it is hung on.
HookSpec = tuple[torch.nn.Module, Callable[..., Any]]


class StopForward(Exception):
    """Raised by a hook once everything wanted is read: later layers need not run (:func:`hooks` ends its block)."""


class HookHandle:
    """One registered hook; :meth:`remove` takes it off and is idempotent."""

    def __init__(self, torch_handle: Any, module: torch.nn.Module, kind: str) -> None:
        self._handle = torch_handle
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
    if pre:
        handle = module.register_forward_pre_hook(function, with_kwargs=with_kwargs)
    else:
        handle = module.register_forward_hook(function, with_kwargs=with_kwargs)
    return HookHandle(handle, module, "pre-forward" if pre else "forward")


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
