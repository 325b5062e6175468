"""What lifelong methods carry from one ``apply`` call to the next, and the settings that say how much of it they hold.

In sequential editing (``run.mode: sequential``, or a user calling ``apply``
again in a notebook) a method may keep state between calls in
:attr:`EditContext.memory <keditlab.methods.base.EditContext.memory>`: the
keys of the edits made so far, so that a later call does not overwrite them
(AlphaEdit's ``K_p K_pᵀ``, UltraEdit's and LocFT-BF's ``keep_earlier``), or
running statistics (UltraEdit's mean and variance).  Every such state is a
*sum of the calls' shares*, and restoring a call must take exactly its share
back out.  :class:`HeldSums` is that state, written once::

    held = context.memory.setdefault("my-method", HeldSums())
    earlier = held.get(layer)                  # the earlier calls' keys (None before the first)
    ...                                         # solve with them
    held.hold(layer, KeySum.of(keys), handle)   # this call's keys join them; handle.restore() takes them out

Restoring handles last-first (as the runner does) gives the state back bit
for bit; restoring one out of order subtracts its share.

The settings of the *preservation* terms shared by UltraEdit, LocFT-BF, FT-M
and FT-L (``preserve``, ``preserve_weight``, ``keep_earlier``) are declared
here too, by :func:`preserve_setting`, :func:`preserve_weight_setting` and
:func:`keep_earlier_setting`, so that every method describes the unrelated
texts (and a spec's ``stats.unrelated``) and the earlier calls' keys in the
same words.  The fine-tuning methods' penalty itself, MEMIT's preservation
term, is in :mod:`keditlab.methods.preservation`.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, NamedTuple

import torch

from keditlab.methods.base import EditHandle


class KeySum(NamedTuple):
    """``Σ k kᵀ`` over some keys and how many they are; adds and subtracts as a sum (not as a tuple)."""

    gram: torch.Tensor
    count: int

    @classmethod
    def of(cls, keys: torch.Tensor) -> "KeySum":
        """The sum over the rows of ``keys`` ``(n, d)``, in their dtype."""
        return cls(keys.T @ keys, len(keys))

    def second_moment(self) -> torch.Tensor:
        """``Σ k kᵀ / n``: the keys' uncentred second moment."""
        return self.gram / self.count

    def __add__(self, other: "KeySum") -> "KeySum":  # type: ignore[override]
        return KeySum(self.gram + other.gram, self.count + other.count)

    def __sub__(self, other: "KeySum") -> "KeySum":
        return KeySum(self.gram - other.gram, self.count - other.count)


class HeldSums(dict):
    """``layer → the sum of the shares of the calls still applied``, kept in ``EditContext.memory``.

    A value is anything with ``+`` and ``-`` (a tensor, a :class:`KeySum`,
    running statistics).  :meth:`hold` adds one call's share and registers
    its removal on the call's handle:

    * if nothing was held since, the value before the call is put back (the
      same object: bit for bit, whatever the rounding of ``+`` and ``-``);
    * otherwise (a handle restored out of order) the share is subtracted;
    * when no call's share is left, the layer is forgotten (unless ``start``
      said what it holds before any call).

    It is a ``dict``, so ``held[layer]``, ``held.get(layer)`` and
    ``held == {}`` read as they look.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: How many calls' shares each layer's value holds.
        self.shares: dict[int, int] = {}

    def hold(self, layer: int, share: Any, handle: EditHandle, start: Any = None) -> Any:
        """Add ``share`` to ``layer``'s value (``start``, else nothing, before the first); return the new value."""
        before = self.get(layer, start)
        after = share if before is None else before + share
        self[layer] = after
        self.shares[layer] = self.shares.get(layer, 0) + 1

        def take_back() -> None:
            self.shares[layer] -= 1
            now = self.get(layer)
            if now is after:                    # nothing held since: the value as it was, bit for bit
                if before is None:
                    self.pop(layer)
                else:
                    self[layer] = before
            elif not self.shares[layer]:        # the last share out of order: nothing is held any more
                self.pop(layer, None)
            elif now is not None:               # restored out of order: subtract this call's share
                self[layer] = now - share
            if not self.shares[layer]:
                del self.shares[layer]

        handle.on_restore.append(take_back)
        return after

    def __reduce__(self) -> tuple:
        """Pickled as its values and shares (a sequential run saves a method's memory with each call)."""
        return (_held_sums, (dict(self), dict(self.shares)))


def _held_sums(values: dict, shares: dict[int, int]) -> HeldSums:
    held = HeldSums(values)
    held.shares = shares
    return held


#: What a method's memory between calls may be made of besides tensors, numbers, strings and the
#: built-in containers: the classes :func:`keditlab.methods.saved.load_memory` lets a saved memory
#: rebuild (``torch.load(weights_only=True)`` refuses every other class, so a memory file cannot run code).
#: A method whose memory holds a class of its own adds it here, next to the class.
MEMORY_CLASSES: list[Any] = [KeySum, _held_sums]


# -- the preservation settings of UltraEdit, LocFT-BF, FT-M and FT-L ------------------------------------

def preserve_setting(default: int, held: str, without: str) -> Any:
    """The ``preserve`` field: how many unrelated texts (or a spec's ``stats.unrelated`` pairs) the method holds.

    ``held`` says what the method does with their keys; ``without`` what
    ``preserve: 0`` leaves (the paper's method).  The keys are read by
    :func:`~keditlab.methods.adaptors.preserved_keys`.
    """
    return field(
        default=default,
        metadata={"minimum": 0,
                  "help": f"{held}; with a spec's stats.unrelated, at most this many of its questions and answers instead "
                          f"(keditlab's; 0: {without})."},
    )


def preserve_weight_setting(default: float, weighs: str) -> Any:
    """The ``preserve_weight`` field: the weight of the preservation term (``weighs`` says against what)."""
    return field(default=default, metadata={"minimum": 0, "help": f"Weight of {weighs}"})


def keep_earlier_setting(default: float, holds: str, note: str, later: str) -> Any:
    """The ``keep_earlier`` field: the weight with which the keys of the stream's earlier calls are held (:class:`HeldSums`).

    ``holds`` says how they are held, ``note`` what the method adds to the
    paper's, ``later`` what the paper's method (``keep_earlier: 0``) lets later calls do.
    """
    return field(
        default=default,
        metadata={"minimum": 0, "help": f"{holds} (keditlab's{note}; 0: the paper's, {later})."},
    )
