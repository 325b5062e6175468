"""Models: loading them and knowing where things live inside them.

* ``load_model(name)`` -> ``(model, tokenizer, profile)``; ``"smollm2-135m"``
  is the embedded default that needs no network, ``"gemma3-270m"`` the second
  embedded model (see ``keditlab.models.embedded``);
* ``derive_profile(model)`` -> ``ModelProfile`` (module paths and sizes);
* ``peek_num_layers(name)`` -> layer count without loading anything heavy.

Importing this package does not import torch: heavy imports happen inside the
functions that need them, so the spec validator stays instant.
"""

from keditlab.models.derive import derive_profile
from keditlab.models.embedded import EMBEDDED_MODELS, EMBEDDED_NAME, cache_root, embedded_cache_dir
from keditlab.models.errors import ModelLoadError, ProfileError, UnknownArchitectureError
from keditlab.models.loader import LoadedModel, load_model
from keditlab.models.peek import peek_num_layers
from keditlab.models.profile import ModelProfile

__all__ = [
    "EMBEDDED_MODELS",
    "EMBEDDED_NAME",
    "LoadedModel",
    "ModelLoadError",
    "ModelProfile",
    "ProfileError",
    "UnknownArchitectureError",
    "cache_root",
    "derive_profile",
    "embedded_cache_dir",
    "load_model",
    "peek_num_layers",
]
