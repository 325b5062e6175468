"""Transactional edits: a method call either completes or leaves the model exactly as it found it.

A method changes a model in three ways: it writes into existing weights
(ROME, MEMIT, fine-tuning), it adds modules and hooks beside them (GRACE,
WISE; peft's LoRA while it trains), and it keeps state between calls
(:mod:`keditlab.methods.lifelong`).  Each method records how to undo its own
work on the :class:`~keditlab.methods.base.EditHandle` it creates at the start
of its call (copies of the weights it will write, ``on_restore`` callbacks).
If the call stops halfway (an error, a ``KeyboardInterrupt`` from a student
pressing Interrupt, a timeout) that handle is never returned to the caller, so
nobody could undo it.  :class:`Transaction` closes that gap::

    with Transaction(model, method="rome", cases=cases) as transaction:
        handle = method._apply(...)          # may raise anywhere
        transaction.check(handle)            # a NaN or infinite update is refused here
    # leaving the block by an exception: every handle made inside it is restored, the module tree,
    # hooks and requires_grad flags are put back, and the model is bit for bit what it was

How it knows what to undo, at no cost in memory:

* **Handles made during the call.**  Every :class:`EditHandle` created while a
  transaction is open registers itself with it; rollback restores them last
  first, which puts back the weights they copied and runs their ``on_restore``
  callbacks (adaptor stacks, held key sums).
* **The module tree.**  Before the call, each module's children, parameters,
  buffers and hook tables are recorded by reference (no tensor is copied);
  rollback puts back any table the call changed, so an adaptor or a peft
  layer that was installed and not yet undone disappears.
* **A last check.**  Each parameter's in-place version counter is read before
  the call; after rollback, a parameter that was written but that no handle
  copied cannot be put back, and rollback says so by name instead of hiding
  it (a method bug: every method snapshots what it writes before writing).

:meth:`Transaction.check` is the finite check: every tensor the call changed or
added must be finite; otherwise the call is rolled back and
:class:`NonFiniteEdit` names the method, the edit and the tensor.
"""

from __future__ import annotations

import contextvars
from typing import Any

import torch

#: The transaction open in this thread (``None`` outside a method call).
_OPEN: contextvars.ContextVar["Transaction | None"] = contextvars.ContextVar("keditlab_transaction", default=None)

#: The per-module tables a method may change by adding or removing something.
_TABLES = ("_modules", "_parameters", "_buffers", "_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
           "_backward_pre_hooks", "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called")


class EditFailed(RuntimeError):
    """A method call stopped by an error; the model was rolled back to what it was before the call."""


class NonFiniteEdit(EditFailed):
    """A method computed a NaN or infinite update; it was rolled back, not kept."""


class RollbackIncomplete(RuntimeError):
    """A failed call wrote a tensor that nothing had copied, so it could not be put back (a method bug)."""


def register_handle(handle: Any) -> None:
    """Called by every new ``EditHandle``: the open transaction, if any, will restore it should the call fail."""
    transaction = _OPEN.get()
    if transaction is not None:
        transaction.handles.append(handle)


def describe_edit(cases: list[Any]) -> str:
    """``edit 'id' ('prompt' → 'target')`` for one case, ``N edits starting with ...`` for several."""
    if not cases:
        return "no edit"
    first = cases[0]
    name = f"edit {first.case_id!r} ({first.prompt!r} → {first.target!r})" if getattr(first, "case_id", None) \
        else f"edit {first.prompt!r} → {first.target!r}"
    return name if len(cases) == 1 else f"{len(cases)} edits starting with {name}"


class Transaction:
    """Record a model before a method call; roll everything back if the call does not complete (module docstring)."""

    def __init__(self, model: torch.nn.Module, method: str = "the method", cases: list[Any] | None = None,
                 passthrough: tuple[type[BaseException], ...] = ()) -> None:
        """``passthrough``: errors re-raised as they are after rollback (settings the user can fix, whose messages say how)."""
        self.model = model
        self.passthrough = passthrough
        self.method = method
        self.cases = list(cases or [])
        self.handles: list[Any] = []
        self.rolled_back = False
        self._token: contextvars.Token | None = None
        self._modules = dict(model.named_modules())
        self._tables = {name: {table: dict(getattr(module, table)) for table in _TABLES if hasattr(module, table)}
                        for name, module in self._modules.items()}
        self._training = {name: module.training for name, module in self._modules.items()}
        params = dict(model.named_parameters())
        self._flags = {name: p.requires_grad for name, p in params.items()}
        self._versions = {name: p._version for name, p in params.items()}
        self._tensors = {name: p for name, p in params.items()}
        self._buffers = {name for name, _ in model.named_buffers()}

    # -- the context manager -------------------------------------------------------------------------------
    def __enter__(self) -> "Transaction":
        self._token = _OPEN.set(self)
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        _OPEN.reset(self._token)
        if kind is None:
            outer = _OPEN.get()
            if outer is not None:   # a call inside another call: the outer one undoes this one too if it fails later
                outer.handles.extend(self.handles)
            return False
        self.rollback()
        if isinstance(error, (EditFailed, *self.passthrough)) or not isinstance(error, Exception):
            return False   # already named, a setting the user can fix, or a stop the user asked for (KeyboardInterrupt)
        raise EditFailed(f"{self.method} failed on {describe_edit(self.cases)}: {type(error).__name__}: {error}. "
                         "The model was rolled back and is as it was before the call.") from error

    # -- what the call changed ----------------------------------------------------------------------------
    def changed_tensors(self) -> dict[str, torch.Tensor]:
        """Parameters written in place or added during the call, and every tensor of modules the call added."""
        changed = {}
        for name, p in self.model.named_parameters():
            if name not in self._tensors or p is not self._tensors[name] or p._version != self._versions[name]:
                changed[name] = p
        for name, buffer in self.model.named_buffers():
            if name not in self._buffers:
                changed[name] = buffer
        return changed

    def check(self, handle: Any) -> None:
        """Refuse an update with a NaN or an infinity: roll the call back and raise :class:`NonFiniteEdit`."""
        for name, tensor in self.changed_tensors().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor.detach()).all()):
                if not any(h is handle for h in self.handles):   # by identity: handles hold tensors, == is not defined
                    self.handles.append(handle)
                self.rollback()
                raise NonFiniteEdit(f"{self.method} computed a non-finite update (NaN or infinity in {name}) for "
                                    f"{describe_edit(self.cases)}; it was rolled back, the model is as it was before the call. "
                                    "Fix: check the method's settings (a learning rate, a weight or a ridge that is too large or too small).")

    # -- rollback -------------------------------------------------------------------------------------------
    def rollback(self) -> None:
        """Undo the call: restore its handles last first, then put back the module tree, flags and modes (once)."""
        if self.rolled_back:
            return
        self.rolled_back = True
        restored: set[str] = set()
        for handle in reversed(self.handles):
            restored.update(handle.originals)
            try:
                handle.restore()
            except Exception:  # noqa: BLE001 - a handle undone out of order; the tables below still put the tree back
                pass
        self.handles.clear()
        for name, module in self._modules.items():
            for table, before in self._tables[name].items():
                current = getattr(module, table)
                if current.keys() != before.keys() or any(current[k] is not v for k, v in before.items()):
                    current.clear()
                    current.update(before)
            module.training = self._training[name]
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, p in params.items():
                if name in self._flags:
                    p.requires_grad_(self._flags[name])
        lost = [name for name, p in params.items()
                if name in self._versions and p._version != self._versions[name] and name not in restored]
        if lost:
            raise RollbackIncomplete(f"{self.method} wrote {', '.join(sorted(lost))} before copying it, so the failed call "
                                     "could not be undone: reload the model. This is a bug in the method; please report it.")
