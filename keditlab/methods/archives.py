"""Trained editors' archives: what ``keditlab train`` writes and ``method: mend`` / ``method: serac`` read.

Some editors must be trained before they can edit (MEND's networks, SERAC's
scope classifier).  What training produces is an *archive*: one file holding
the editor's tensors and the facts that say what it is good for::

    {"format": "keditlab-editor", "version": 1,
     "editor": "mend",
     "model": {"name": "smollm2-135m", "fingerprint": "smollm2-135m-3f2a...", "architecture": "llama"},
     "training": {"records": ..., "settings": ..., "steps": 3000, "seconds": 1404.2, "validation": {...}},
     "build": {...},        # how to build the editor's modules again (sizes)
     "state": {name: tensor}}

An archive belongs to one checkpoint: it is keyed by the base model's
fingerprint (:func:`keditlab.stats.model_fingerprint`, the key of the
covariance statistics too), and :func:`load_archive` refuses one trained for
another model, by name.  Archives trained by ``keditlab train`` go to the
cache, ``$KEDITLAB_CACHE/editors/<fingerprint>/<editor>-<training>-<key>.pt``,
where ``training`` is the training spec's name and ``key`` digests the
training records and settings, so that two trainings with different settings
never overwrite each other.  A method's ``archive:`` names a file, or a
training by its spec name (``archive: train-mend-counterfact``: the newest
archive that training put in the cache); a method that names none takes the
newest archive in the cache for its model and editor.

Files are written atomically (a temporary file renamed into place), and read
with ``torch.load(weights_only=True)``: an archive holds tensors and plain
data only, so loading one runs no code.
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from keditlab.methods.base import MethodConfigError
from keditlab.stats import cache_dir, model_fingerprint
from keditlab.models.sampling import device_of
from keditlab.stats.covariance import atomic_save
from keditlab.vocabulary import did_you_mean

ARCHIVE_FORMAT = "keditlab-editor"
ARCHIVE_VERSION = 1


class ArchiveError(MethodConfigError):
    """No archive, an unreadable one, or one trained for another model or editor."""


def archives_dir(fingerprint: str) -> Path:
    """Where the cache keeps the archives trained for the model with this fingerprint."""
    return cache_dir() / "editors" / fingerprint


def training_key(editor: str, records: Any, settings: dict[str, Any]) -> str:
    """Twelve hex digits naming one training: the editor, its records (their description and digest) and settings."""
    text = json.dumps({"editor": editor, "records": records, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cached_archive_path(fingerprint: str, editor: str, key: str, training: str | None = None) -> Path:
    """Where the cache keeps one training's archive; ``training`` is the training spec's name (found by it later)."""
    return archives_dir(fingerprint) / (f"{editor}-{training}-{key}.pt" if training else f"{editor}-{key}.pt")


def _named(path: str) -> bool:
    """Whether an ``archive:`` value names a training (``train-mend-counterfact``) rather than a file."""
    return not path.endswith(".pt") and "/" not in path and "\\" not in path


def model_facts(model: Any, name: str) -> dict[str, Any]:
    """What an archive records about its base model: the name it was loaded by, its fingerprint and architecture."""
    return {"name": name, "fingerprint": model_fingerprint(model),
            "architecture": getattr(model.config, "model_type", "?")}


def save_archive(path: Path, editor: str, model: dict[str, Any], training: dict[str, Any], build: dict[str, Any],
                 state: dict[str, torch.Tensor]) -> Path:
    """Write an archive (atomically); ``model`` is :func:`model_facts`."""
    atomic_save({"format": ARCHIVE_FORMAT, "version": ARCHIVE_VERSION, "editor": editor, "model": model,
                 "training": training, "build": build,
                 "state": {k: v.detach().to("cpu").contiguous() for k, v in state.items()}}, Path(path))
    return Path(path)


def _train_hint(editor: str) -> str:
    return (f"keditlab train specs/train/{editor}.yaml (trains one for the embedded model and puts it in the cache; "
            f"docs/methods.md gives the time), or name a trained archive with `archive: PATH` in the method's settings")


def find_archive(model: Any, editor: str, path: str | os.PathLike | None = None) -> Path:
    """The archive a method should read, for ``archive: path``: the file ``path``; the newest archive in the cache
    for this model and editor that the training named ``path`` wrote; without ``path``, the newest for them."""
    if path:
        given = Path(path).expanduser()
        if given.is_file():
            return given
        if not _named(str(path)):
            raise ArchiveError(f"{editor}: no archive at {given}. Fix: give the path of a file that `keditlab train` "
                               f"wrote (the last line of its output names it), or leave `archive` out to use the cache.")
    fingerprint = model_fingerprint(model)
    candidates = sorted(archives_dir(fingerprint).glob(f"{editor}-*.pt"), key=lambda p: p.stat().st_mtime)
    if path:
        trainings = {p.stem.rsplit("-", 1)[0][len(editor) + 1:] for p in candidates} - {""}
        candidates = [p for p in candidates if p.stem.rsplit("-", 1)[0] == f"{editor}-{path}"]
        if not candidates:
            raise ArchiveError(
                f"{editor}: no archive trained by a training named {str(path)!r} is in the cache for this model "
                f"(fingerprint {fingerprint}){did_you_mean(str(path), sorted(trainings))}; trainings with archives there: "
                f"{', '.join(sorted(trainings)) or 'none'}. Fix: run the `keditlab train` spec whose `name:` is {str(path)!r}, "
                f"or give the path of an archive file.")
        return candidates[-1]
    if not candidates:
        raise ArchiveError(
            f"{editor} must be trained for this model before it can edit, and no trained {editor} archive is in the "
            f"cache for it (model fingerprint {fingerprint}, looked in {archives_dir(fingerprint)}). Fix: {_train_hint(editor)}.")
    return candidates[-1]


def load_archive(path: Path, editor: str, model: Any | None = None) -> dict[str, Any]:
    """Read an archive, checking that it is an archive of ``editor`` trained for ``model`` (when given)."""
    try:
        archive = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear error
        raise ArchiveError(f"{editor}: {path} is not a readable keditlab archive ({type(exc).__name__}: {exc}). "
                           f"Fix: train it again with {_train_hint(editor)}.") from None
    if not isinstance(archive, dict) or archive.get("format") != ARCHIVE_FORMAT:
        raise ArchiveError(f"{editor}: {path} is not a keditlab editor archive. Fix: {_train_hint(editor)}.")
    if archive.get("editor") != editor:
        raise ArchiveError(f"{path} is an archive of {archive.get('editor')!r}, not of {editor!r}. "
                           f"Fix: use it with `method: {archive.get('editor')}`, or train a {editor} archive: {_train_hint(editor)}.")
    if model is not None:
        theirs, ours = archive["model"].get("fingerprint"), model_fingerprint(model)
        if theirs != ours:
            raise ArchiveError(
                f"{editor}: {path} was trained for the model {archive['model'].get('name')!r} (fingerprint {theirs}), "
                f"not for this one (fingerprint {ours}); an editor trained on one model's gradients does not carry over "
                f"to another's. Fix: train one for this model: {_train_hint(editor)}.")
    return archive


#: Editors built from archives, kept while their model lives: model → {(editor, path, modified time): (archive, module)}.
_loaded: "weakref.WeakKeyDictionary[Any, dict[tuple[str, str, float], tuple[dict, torch.nn.Module]]]" = weakref.WeakKeyDictionary()


def loaded_editor(model: Any, path: Path, editor: str,
                  build: Callable[[dict[str, Any]], torch.nn.Module]) -> tuple[dict[str, Any], torch.nn.Module]:
    """The archive at ``path`` (checked by :func:`load_archive`) and its module, built by ``build(archive["build"])``
    with the archive's tensors, on the model's device, in eval mode; read once per model and file version."""
    key = (editor, str(path), Path(path).stat().st_mtime)
    per_model = _loaded.setdefault(model, {})
    if key not in per_model:
        archive = load_archive(path, editor, model)
        module = build(archive["build"])
        module.load_state_dict(archive["state"])
        per_model[key] = (archive, module.to(device_of(model)).eval())
    return per_model[key]
