"""What a method needs of a model, and whether a model's config says it has it: checked before any weight loads.

A method declares what it needs (``EditMethod.model_needs``, carried into the
spec schema as ``x-keditlab-model-needs``); each need is described here once,
with the rule that reads from a model's ``config.json`` (a plain dict, as
:func:`keditlab.models.peek.peek_config` finds it) why a model lacks it.  The
spec validator asks these rules of the model a spec names and refuses a
method whose need is not met, naming why and which methods can edit that
model instead.  Nothing here looks at a model's name: only at what its config
says about its structure.  No torch, so ``keditlab validate`` stays instant;
it sits in the spec layer, which asks it, and the layers above read it too.

:data:`PROFILE_NEEDS` are what every method needs today because the model's
profile (:func:`keditlab.models.derive_profile`) needs them to be derived.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Config keys that give the number of experts a block's MLP is routed through (mixture-of-experts models).
EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")


@dataclass(frozen=True)
class ModelNeed:
    """One thing a method may need of a model: ``lacking(config)`` says why a model lacks it, or None."""

    name: str
    says: str                                         # what is needed, as a noun phrase
    lacking: Callable[[Mapping[str, Any]], str | None]
    kind: str                                         # the kind of model that lacks it, in a few words (docs/models.md)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _configs(config: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The config and the text model's config inside it (multimodal checkpoints keep the decoder's there)."""
    inner = config.get("text_config")
    return [config, inner] if isinstance(inner, Mapping) else [config]


def config_num_experts(config: Any) -> int:
    """The routed experts per MoE layer a config declares (0 for a dense model); a dict or a config object."""
    read = config.get if isinstance(config, Mapping) else (lambda key: getattr(config, key, None))
    for key in EXPERT_KEYS:
        value = read(key)
        if _whole(value) and value > 1:
            return value
    text = read("text_config")
    return config_num_experts(text) if text is not None and not isinstance(text, (int, str, float, bool)) else 0


def _experts(config: Mapping[str, Any]) -> str | None:
    for part in _configs(config):
        for key in EXPERT_KEYS:
            value = part.get(key)
            if _whole(value) and value > 1:
                return f"its blocks route the MLP through {value} experts (config `{key}`)"
    return None


#: Every need a method may declare, by name.
NEEDS: dict[str, ModelNeed] = {
    need.name: need
    for need in (
        ModelNeed("dense_mlp", "one dense MLP output projection per block", _experts, "mixture of experts"),
    )
}

#: What every method needs, whatever it edits: the model's profile cannot be derived without it (nothing since the
#: profile recognises mixture-of-experts blocks, :mod:`keditlab.models.experts`).
PROFILE_NEEDS: tuple[str, ...] = ()


def unmet(config: Mapping[str, Any], needs: Sequence[str]) -> list[tuple[ModelNeed, str]]:
    """The needs in ``needs`` that ``config`` shows are not met, each with why; unknown names are skipped."""
    found = []
    for name in needs:
        need = NEEDS.get(name)
        reason = need.lacking(config) if need is not None else None
        if reason:
            found.append((need, reason))
    return found


def first_unmet(method_needs: Sequence[str], config: Mapping[str, Any]) -> tuple[ModelNeed, str, bool] | None:
    """``(need, why the model lacks it, whether the method itself declares it)`` for the first unmet need, or None.

    The model profile's needs (:data:`PROFILE_NEEDS`) come first: every method needs them.
    """
    for need, reason in unmet(config, [*PROFILE_NEEDS, *(n for n in method_needs if n not in PROFILE_NEEDS)]):
        return need, reason, need.name in method_needs
    return None


def refusal(method: str, method_needs: Sequence[str], config: Mapping[str, Any]) -> str | None:
    """Why ``method`` (declaring ``method_needs``) cannot edit the model of ``config``, or None when nothing says so.

    Names the need that is not met and whose it is: the method's own, or the
    model profile's (which every method needs).
    """
    found = first_unmet(method_needs, config)
    if found is None:
        return None
    need, reason, own = found
    return f"{reason}, and {method if own else 'keditlab' + chr(39) + 's model profile'} needs {need.says}"


def methods_that_fit(config: Mapping[str, Any], needs_of: Mapping[str, Sequence[str]]) -> list[str]:
    """The methods (``name -> declared needs``) with no need that ``config`` shows unmet, sorted."""
    return sorted(name for name, needs in needs_of.items() if refusal(name, needs, config) is None)
