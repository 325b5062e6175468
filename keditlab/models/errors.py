"""The errors ``keditlab.models`` raises on purpose.

They are ``ValueError`` subclasses with messages written for the person who
typed the model name or the spec, so a notebook shows one readable line
instead of a deep ``transformers`` traceback.
"""

from __future__ import annotations


class ModelLoadError(ValueError):
    """A model could not be loaded (not found, not cached while offline, missing package)."""


class ProfileError(ValueError):
    """A ``ModelProfile`` could not be built, or an override in ``model.profile`` is wrong."""


class UnknownArchitectureError(ProfileError):
    """keditlab could not find the blocks, MLP output, norm, head or embedding of a model."""
