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
refused with the parameter named, never silently edited.

Methods that keep their edits in an adaptor beside a layer (GRACE's codebook,
WISE's side memory, :mod:`keditlab.methods.adaptors`) are saved the same way:
the adaptor's whole state after the call (its tensors, and plain facts such as
GRACE's labels), with the SHA-256 of its state before the call and of the
weights of the module it sits on; loading installs or updates the adaptor.
IKE's edits are a prompt, not a state of the model: :func:`saveable` says so
before a run starts.
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
from keditlab.models.sampling import device_of

#: The version of the saved-edits folder layout (``edits.json`` ``format``).
SAVED_FORMAT = 1
TENSORS, MANIFEST, MEMORY = "edits.safetensors", "edits.json", "memory.pt"


class SavedEditsError(ValueError):
    """Saved edits cannot be written or loaded: the message names why and the fix."""


def saveable(method: Any) -> str | None:
    """Why ``method``'s edits cannot be saved (None when they can): weights and adaptors are saved, prompts (IKE) not."""
    if not method.capabilities.saveable:
        return (f"{method.name} makes its edits by what the model reads (a prompt), not by a state of the model, so "
                "there is nothing to save. Fix: leave run.save_edits out for it")
    return None


def _digest(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's bytes, whatever its dtype (bfloat16 included) and device."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return hashlib.sha256(flat.view(torch.uint8).numpy().tobytes()).hexdigest()


def save_edits(handles: list[EditHandle], folder: str | os.PathLike[str], *, method: str, settings: dict[str, Any],
               cases: list[str], call: dict[str, Any] | None = None, memory: Any = None) -> Path:
    """Write the weights ``handles`` (one method call's, applied and not restored) wrote into a new ``folder``.

    ``method``, ``settings`` and ``cases`` (the case ids) are recorded beside
    them, and ``call``: what the run knows of the call (its handle's
    ``details`` and seconds, whether the method kept memory for later calls),
    so that a resumed run can stand the loaded call in for the one it made.
    ``memory``, when given, is the method's memory between calls as the call
    left it (:attr:`~keditlab.methods.base.EditContext.memory`), written to
    ``memory.pt`` for :func:`load_memory`.
    The folder must not exist: saved edits are never overwritten.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    if folder.exists():
        raise SavedEditsError(f"{folder} already exists; saved edits are never overwritten. Fix: choose a new folder.")
    if not handles or any(handle.restored for handle in handles):
        raise SavedEditsError("save_edits needs the handles of edits that are on the model (applied, not restored).")
    model = handles[0].model
    adaptors = _adaptors_of(handles, model)
    unedited: dict[str, torch.Tensor] = {}
    for handle in handles:                    # the value before the first handle that wrote a parameter
        for name, original in handle.originals.items():
            unedited.setdefault(name, original)
    params = dict(model.named_parameters())
    tensors = {name: params[name].detach().to("cpu").contiguous() for name in sorted(unedited)}
    for path, facts in adaptors.items():
        tensors.update({f"{path}::{key}": value for key, value in facts.pop("tensors").items()})
    record = {
        "format": SAVED_FORMAT, "method": method, "settings": settings, "cases": list(cases), "call": call or {},
        "model_type": getattr(model.config, "model_type", None),
        "parameters": {name: {"shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch."),
                              "unedited_sha256": _digest(unedited[name]), "edited_sha256": _digest(value)}
                       for name, value in tensors.items() if name in unedited},
        "adaptors": adaptors,
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        save_file(tensors, str(staging / TENSORS), metadata={"keditlab": f"saved edits, format {SAVED_FORMAT}"})
        (staging / MANIFEST).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if memory is not None:
            torch.save(memory, staging / MEMORY)
        os.rename(staging, folder)            # whole or not at all
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return folder


def _adaptors_of(handles: list[EditHandle], model: torch.nn.Module) -> dict[str, dict[str, Any]]:
    """The adaptors the handles wrote into, each with its state now, its state before the first handle, and
    the fingerprint of the weights of the module it sits on."""
    found: dict[str, dict[str, Any]] = {}
    for handle in handles:
        where = handle.details.get("adaptor")
        if not isinstance(where, dict) or where["path"] in found:
            continue
        adaptor = model.get_submodule(where["path"])
        host = model.get_submodule(where["path"].rsplit(".", 1)[0])
        tensors, facts = adaptor.saved_state()
        found[where["path"]] = {
            "class": type(adaptor).__name__, "layer": adaptor.layer, "build": adaptor.build_args(), "facts": facts,
            "before_sha256": where["before_sha256"], "after_sha256": adaptor.state_digest(),
            "host_sha256": {name: _digest(p) for name, p in host.named_parameters()},
            "tensors": {key: value.detach().to("cpu").contiguous().clone() for key, value in tensors.items()},
        }
    return found


def load_memory(folder: str | os.PathLike[str], device: Any = "cpu") -> Any:
    """The method's memory between calls saved with the call in ``folder`` (its tensors on ``device``); None when none was.

    Read with ``torch.load(weights_only=True)``: tensors, numbers, strings, the
    built-in containers and the classes of
    :data:`~keditlab.methods.lifelong.MEMORY_CLASSES`, nothing else (a memory
    file cannot run code).
    """
    from keditlab.methods.lifelong import MEMORY_CLASSES

    path = Path(folder) / MEMORY
    if not path.is_file():
        return None
    try:
        with torch.serialization.safe_globals(MEMORY_CLASSES):
            return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:   # noqa: BLE001 - a damaged or foreign file, whatever torch raises for it
        raise SavedEditsError(f"{path} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
                              "Fix: resume without it (delete the file: the stream is then done again from its start), "
                              "or run the spec again.") from None


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
    for path, facts in record.get("adaptors", {}).items():
        _check_adaptor(model, path, facts, folder)
    call = record.get("call") or {}
    handle = EditHandle(f"saved:{record['method']}", model,
                        {name: params[name].detach().clone() for name in record["parameters"]},
                        config=record.get("settings", {}),
                        details=call.get("details") or {"saved_edits": str(folder), "cases": record["cases"]},
                        seconds=call.get("seconds", 0.0), setup_seconds=call.get("setup_seconds", 0.0))
    try:
        with torch.no_grad():
            for name in record["parameters"]:
                params[name].copy_(saved[name].to(params[name].device))
        for path, facts in record.get("adaptors", {}).items():
            _load_adaptor(model, path, facts, {key.split("::", 1)[1]: value for key, value in saved.items()
                                               if key.startswith(f"{path}::")}, handle)
    except BaseException:   # an error or Ctrl-C halfway: the model is put back as it was
        handle.restore()
        raise
    return handle


def _check_adaptor(model: torch.nn.Module, path: str, facts: dict[str, Any], folder: Any) -> None:
    """Refuse (before anything is written) a model whose adaptor host or adaptor state is not what the edit found."""
    host_name, child = path.rsplit(".", 1)
    try:
        host = model.get_submodule(host_name)
    except AttributeError:
        host = None
    weights = {name: _digest(p) for name, p in host.named_parameters()} if host is not None else None
    if weights != facts["host_sha256"]:
        raise SavedEditsError(f"these edits were made on another model: the weights of {host_name}, where the "
                              f"{facts['class']} sits, differ. Fix: load the model the run used (its manifest.json names it, "
                              "with its dtype).")
    existing = host._modules.get(child)
    current = existing.state_digest() if existing is not None and getattr(existing, "undo_stack", None) else None
    if current != facts["before_sha256"]:
        raise SavedEditsError(f"{folder}: the {facts['class']} at {host_name} does not hold what it held before these edits "
                              "(edits already on it, or missing: a sequential run's calls load in the order they were made). "
                              "Fix: load the run's model unedited, and the saved calls before this one first.")


def _load_adaptor(model: torch.nn.Module, path: str, facts: dict[str, Any], tensors: dict[str, torch.Tensor],
                  handle: EditHandle) -> None:
    """Install (or update) the adaptor at ``path`` with the saved state; ``handle.restore()`` puts back what was there."""
    from keditlab.methods.adaptors import ADAPTOR_CLASSES, find_or_install

    host_name, child = path.rsplit(".", 1)
    kind = ADAPTOR_CLASSES[facts["class"]]
    device = device_of(model)
    adaptor, new = find_or_install(model, host_name, child, facts["layer"],
                                   lambda: kind(facts["layer"], device=device, **facts["build"]), kind)
    previous = None
    if not new:   # what it holds now, copied: later edits change its tensors in place
        tensors_now, facts_now = adaptor.saved_state()
        previous = ({key: value.clone() for key, value in tensors_now.items()}, json.loads(json.dumps(facts_now)))
    adaptor.push(handle, lambda: previous is not None and adaptor.load_state(*previous))
    adaptor.load_state(tensors, facts["facts"])
    if adaptor.state_digest() != facts["after_sha256"]:
        handle.restore()
        raise SavedEditsError(f"the saved {facts['class']} state at {host_name} did not load as it was saved. Fix: run the "
                              "spec again with run.save_edits: true.")
