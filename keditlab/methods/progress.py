"""A progress bar for the long phases of an edit, shown only when the context asks for it.

Value optimisation, training steps and read-and-solve passes can take from a
few seconds to minutes; without a bar a notebook cell or a run looks hung.
Every method uses the one helper below, so ``EditContext(progress=False)``
silences all of them at once::

    with progress_bar(context, total=config.steps, desc="ft-m: steps") as bar:
        for step in range(config.steps):
            ...
            bar.update()

The bar is ``tqdm.auto``'s, so it is a widget in Jupyter and text in a
terminal; it disappears once its phase is done (``leave=False``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def progress_bar(context: Any, total: int | None, desc: str, unit: str = "step") -> Any:
    """A ``tqdm.auto`` bar over ``total`` units, disabled (it still accepts ``update()``) when ``context.progress`` is false.

    ``context`` is an :class:`~keditlab.methods.base.EditContext`, or a plain
    bool for helpers that receive no context.  Use it as a context manager.
    """
    from tqdm.auto import tqdm

    enabled = context if isinstance(context, bool) else bool(getattr(context, "progress", False))
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False)


def progress_cases(context: Any, cases: list[Any], desc: str) -> Iterator[Any]:
    """The cases one by one, with a bar over them (for methods that write a call's edits one after another)."""
    with progress_bar(context, total=len(cases), desc=desc, unit="edit") as bar:
        for case in cases:
            yield case
            bar.update()
