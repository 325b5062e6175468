"""Editing methods, registered by name behind one interface (:class:`EditMethod`).

Adding a method is one module in this folder and one ``register_method`` line
below; the spec schema's list of method names and their settings is generated
from this registry (``python -m keditlab.devtools.generate --write``).
"""

from __future__ import annotations

import difflib

from keditlab.methods.base import Capabilities, EditContext, EditHandle, EditMethod, MethodConfig, MethodConfigError, MethodPlan
from keditlab.methods.transaction import EditFailed, NonFiniteEdit, RollbackIncomplete

_REGISTRY: dict[str, type[EditMethod]] = {}


def register_method(cls: type[EditMethod]) -> type[EditMethod]:
    """Make ``cls`` available under ``cls.name`` (usable as a decorator)."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"an editing method named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def get_method(name: str) -> EditMethod:
    """An instance of the method registered as ``name``; a typo gets a did-you-mean."""
    try:
        return _REGISTRY[name]()
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown editing method {name!r}.{hint} Known methods: {', '.join(method_names())}") from None


def trained_editors() -> list[str]:
    """The methods that must be trained before they edit (``keditlab train``): those whose class names a trainer."""
    return sorted(name for name, cls in _REGISTRY.items() if getattr(cls, "trainer_class", None) is not None)


def auto_layer_method(setting: str) -> EditMethod:
    """The first registered method whose config marks ``setting`` (``layer`` or ``layers``) as one that may be ``auto``.

    For callers that hold a method's settings but not its name: the methods
    sharing such a setting share its rule (the ROME family for ``layer``,
    the MEMIT family for ``layers``), see :meth:`EditMethod.auto_layer_settings`.
    """
    import dataclasses

    for cls in _REGISTRY.values():
        if any(f.name == setting and f.metadata.get("auto_layer") for f in dataclasses.fields(cls.config_class)):
            return cls()
    raise MethodConfigError(f"no editing method accepts {setting}: auto. Fix: name the layers as a list of layer numbers.")


# The method zoo.  One line per method.
from keditlab.methods.rome import Rome  # noqa: E402
from keditlab.methods.finetune import FineTuneL, FineTuneM  # noqa: E402
from keditlab.methods.memit import Memit  # noqa: E402
from keditlab.methods.emmet import Emmet  # noqa: E402
from keditlab.methods.alphaedit import AlphaEdit  # noqa: E402
from keditlab.methods.rrome import RRome  # noqa: E402
from keditlab.methods.grace import Grace  # noqa: E402
from keditlab.methods.wise import Wise  # noqa: E402
from keditlab.methods.tpatcher import TPatcher  # noqa: E402
from keditlab.methods.ultraedit import UltraEdit  # noqa: E402
from keditlab.methods.locft_bf import LocFTBF  # noqa: E402
from keditlab.methods.ike import IKE  # noqa: E402
from keditlab.methods.lora import AdaLoRA, LoRA  # noqa: E402
from keditlab.methods.kn import KnowledgeNeurons  # noqa: E402
from keditlab.methods.mend import Mend  # noqa: E402
from keditlab.methods.serac import Serac  # noqa: E402

register_method(Rome)
register_method(RRome)
register_method(FineTuneL)
register_method(FineTuneM)
register_method(Memit)
register_method(Emmet)
register_method(AlphaEdit)
register_method(Grace)
register_method(Wise)
register_method(TPatcher)
register_method(UltraEdit)
register_method(LocFTBF)
register_method(IKE)
register_method(LoRA)
register_method(AdaLoRA)
register_method(KnowledgeNeurons)
register_method(Mend)
register_method(Serac)

__all__ = [
    "Capabilities",
    "EditContext",
    "EditFailed",
    "EditHandle",
    "EditMethod",
    "MethodConfig",
    "MethodConfigError",
    "MethodPlan",
    "NonFiniteEdit",
    "RollbackIncomplete",
    "auto_layer_method",
    "get_method",
    "method_names",
    "register_method",
    "trained_editors",
]
