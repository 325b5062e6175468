"""Saved edits: what a method call wrote into the weights, on disk, to load again bit for bit.

An edit that writes weights (ROME, MEMIT, fine-tuning, LoRA merged, …) is
fully described by the new values of the parameters it wrote.  :func:`save_edits`
keeps those values (as safetensors, in the dtype the model holds them) together
with a fingerprint of the values they replaced; :func:`load_edits` checks that
the model it is given holds exactly those replaced values, writes the saved
ones, and returns an :class:`~keditlab.methods.base.EditHandle` that undoes it::

    handle = keditlab.load_edits(model, "runs/quickstart-…/edits/rome/call-0000")
    ...                      # the model holds the edit, bit for bit as the run made it
    handle.restore()         # and is its own again

Saving the values rather than the change (``W + ΔW``) is what makes loading
bit-exact: adding a saved ΔW back can round differently.  Edits made one on
top of another (a sequential run) are saved per call, each against the model
as that call found it, so they load in the order they were made.

The fingerprint is a SHA-256 of each replaced parameter's bytes: a model that
differs there (another checkpoint, another dtype, an edit still on it) is
refused with the parameter named, never silently edited.  Methods that keep
their edits outside the weights (GRACE and WISE adaptors, IKE's prompts) cannot
be saved this way yet: :func:`saveable` says so before a run starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from keditlab.methods.base import EditHandle

#: The version of the saved-edits folder layout (``edits.json`` ``format``).
SAVED_FORMAT = 1
TENSORS, MANIFEST = "edits.safetensors", "edits.json"


class SavedEditsError(ValueError):
    """Saved edits cannot be written or loaded: the message names why and the fix."""


def saveable(method: Any) -> str | None:
    """Why ``method``'s edits cannot be saved (None when they can): only weight edits are saved so far."""
    if not method.capabilities.changes_weights:
        return (f"{method.name} keeps its edits outside the model's weights (an adaptor or a prompt), which "
                "keditlab cannot save yet. Fix: leave run.save_edits out for it, or save a weight-editing method's edits")
    return None


def _digest(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's bytes, whatever its dtype (bfloat16 included) and device."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return hashlib.sha256(flat.view(torch.uint8).numpy().tobytes()).hexdigest()


def save_edits(handles: list[EditHandle], folder: str | os.PathLike[str], *, method: str, settings: dict[str, Any],
               cases: list[str]) -> Path:
    """Write the weights ``handles`` (one method call's, applied and not restored) wrote into a new ``folder``.

    ``method``, ``settings`` and ``cases`` (the case ids) are recorded beside
    them.  The folder must not exist: saved edits are never overwritten.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    if folder.exists():
        raise SavedEditsError(f"{folder} already exists; saved edits are never overwritten. Fix: choose a new folder.")
    if not handles or any(handle.restored for handle in handles):
        raise SavedEditsError("save_edits needs the handles of edits that are on the model (applied, not restored).")
    model = handles[0].model
    unedited: dict[str, torch.Tensor] = {}
    for handle in handles:                    # the value before the first handle that wrote a parameter
        for name, original in handle.originals.items():
            unedited.setdefault(name, original)
    params = dict(model.named_parameters())
    tensors = {name: params[name].detach().to("cpu").contiguous() for name in sorted(unedited)}
    record = {
        "format": SAVED_FORMAT, "method": method, "settings": settings, "cases": list(cases),
        "model_type": getattr(model.config, "model_type", None),
        "parameters": {name: {"shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch."),
                              "unedited_sha256": _digest(unedited[name]), "edited_sha256": _digest(value)}
                       for name, value in tensors.items()},
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        save_file(tensors, str(staging / TENSORS), metadata={"keditlab": f"saved edits, format {SAVED_FORMAT}"})
        (staging / MANIFEST).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        os.rename(staging, folder)            # whole or not at all
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return folder


def read_saved(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``edits.json`` of a saved-edits folder (method, settings, cases, parameters)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise SavedEditsError(f"{folder} holds no saved edits (no {MANIFEST}). Fix: pass a folder under a run's edits/, "
                              "written with run.save_edits: true.")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SavedEditsError(f"{path} is damaged ({exc}). Fix: run the spec again with run.save_edits: true.") from None
    if record.get("format") != SAVED_FORMAT:
        raise SavedEditsError(f"{path} is in format {record.get('format')!r}; this keditlab reads format {SAVED_FORMAT}. "
                              "Fix: load it with the keditlab version that saved it, or run the spec again.")
    return record


def load_edits(model: torch.nn.Module, folder: str | os.PathLike[str]) -> EditHandle:
    """Write the saved edits in ``folder`` into ``model``; the returned handle's ``restore()`` undoes them.

    Refused, with the model unchanged, when ``model`` does not hold exactly the
    values the edits replaced (another checkpoint or dtype, or an earlier edit
    of a sequential run not loaded first), or when the files are damaged.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    record = read_saved(folder)
    try:
        saved = load_file(str(Path(folder) / TENSORS))
    except (OSError, SafetensorError) as exc:
        raise SavedEditsError(f"{Path(folder) / TENSORS} cannot be read ({exc}). Fix: run the spec again with "
                              "run.save_edits: true.") from None
    params = dict(model.named_parameters())
    for name, facts in record["parameters"].items():
        param, value = params.get(name), saved.get(name)
        if value is None or _digest(value) != facts["edited_sha256"]:
            raise SavedEditsError(f"{folder}: the saved values of {name} are missing or damaged. Fix: run the spec "
                                  "again with run.save_edits: true.")
        if param is None or tuple(param.shape) != tuple(facts["shape"]) or param.dtype != value.dtype:
            found = "no such parameter" if param is None else f"shape {tuple(param.shape)}, {param.dtype}"
            raise SavedEditsError(
                f"these edits were made on another model: {name} was shape {tuple(facts['shape'])}, {facts['dtype']}; "
                f"this model has {found}. Fix: load the model the run used (its manifest.json names it, with its dtype).")
        if _digest(param) != facts["unedited_sha256"]:
            raise SavedEditsError(
                f"this model's {name} is not the value these edits replaced (another checkpoint, or edits already on it; "
                "a sequential run's calls load in the order they were made). Fix: load the run's model unedited, "
                "and the saved calls before this one first.")
    handle = EditHandle(f"saved:{record['method']}", model,
                        {name: params[name].detach().clone() for name in record["parameters"]},
                        config=record.get("settings", {}), details={"saved_edits": str(folder), "cases": record["cases"]})
    with torch.no_grad():
        for name in record["parameters"]:
            params[name].copy_(saved[name].to(params[name].device))
    return handle
