"""How many layers a model has, and its config, found cheaply: no torch, no network.

The spec validator checks layer indices (``layers: [40]`` on a 30-layer model)
while staying instant, so this reads only small files that are already on
disk: a ``config.json``, or the GGUF header of the embedded model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from keditlab.spec.model_needs import config_num_experts  # noqa: F401  (read here by the model layer)
from keditlab.models.embedded import SMOLLM2, embedded_cache_dir, embedded_model, find_embedded_gguf, is_embedded_name, is_valid_cache

LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
"""Config keys that hold the number of blocks, in the order they are tried."""


def layers_from_config_dict(config: dict[str, Any]) -> int | None:
    """The layer count in a config dict (also inside ``text_config``), or None."""
    for key in LAYER_COUNT_KEYS:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    text_config = config.get("text_config")
    if isinstance(text_config, dict):
        return layers_from_config_dict(text_config)
    return None


def _config_dict(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _from_config_file(path: str | os.PathLike[str]) -> int | None:
    data = _config_dict(path)
    return layers_from_config_dict(data) if data is not None else None


def _from_gguf(path: Path) -> int | None:
    """Read ``<arch>.block_count`` from a GGUF header."""
    try:
        from gguf import GGUFReader
    except ImportError:
        return None
    try:
        reader = GGUFReader(str(path))
        arch_field = reader.fields.get("general.architecture")
        arch = "llama"
        if arch_field is not None:
            arch = bytes(arch_field.parts[arch_field.data[0]]).decode("utf-8")
        field = reader.fields.get(f"{arch}.block_count")
        if field is None:
            return None
        return int(field.parts[field.data[0]][0])
    except Exception:  # a damaged or unexpected file: "unknown" is the honest answer
        return None


def peek_num_layers(name_or_path: str) -> int | None:
    """Number of layers of a model, or None when it cannot be known without loading.

    * an embedded model (``"smollm2-135m"``, ``"gemma3-270m"``): the converted cache's
      ``config.json``; else SmolLM2's GGUF header (Gemma's GGUF exists only in chunks
      until it is converted: unknown until then);
    * a local directory: its ``config.json``;
    * a Hugging Face id: ``config.json`` in the local HF cache, if downloaded before.
    """
    if is_embedded_name(name_or_path):
        embedded = embedded_model(name_or_path)
        cached = embedded_cache_dir(embedded.name)
        if is_valid_cache(cached):
            found = _from_config_file(cached / "config.json")
            if found is not None:
                return found
        gguf = find_embedded_gguf() if embedded is SMOLLM2 else None
        return _from_gguf(gguf) if gguf is not None else None

    found = _config_file(name_or_path)
    return _from_config_file(found) if found is not None else None


def peek_config(name_or_path: str) -> dict[str, Any] | None:
    """A model's ``config.json`` as a dict, or None when it is not on disk (nothing is downloaded).

    * an embedded model (``"smollm2-135m"``, ``"gemma3-270m"``): its converted cache's ``config.json``
      (None before the first conversion);
    * a local directory: its ``config.json``;
    * a Hugging Face id: ``config.json`` in the local HF cache, if downloaded before.

    The spec validator reads from it what a model's structure is (:mod:`keditlab.spec.model_needs`).
    """
    if is_embedded_name(name_or_path):
        cached = embedded_cache_dir(name_or_path)
        return _config_dict(cached / "config.json") if (cached / "config.json").is_file() else None
    found = _config_file(name_or_path)
    return _config_dict(found) if found is not None else None


def _config_file(name_or_path: str) -> Path | str | None:
    """Where a local folder's or an already downloaded hub model's ``config.json`` is, or None (nothing is downloaded)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path / "config.json"
    if path.exists():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        hit = try_to_load_from_cache(name_or_path, "config.json")
    except Exception:  # not a valid repo id, for instance
        return None
    return hit if isinstance(hit, str) else None
