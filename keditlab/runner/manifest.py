"""``manifest.json``: what a run was (spec, model, settings, versions, times), written before any work.

The manifest is written when the run folder is created, with ``status:
running``, and rewritten at the end with ``status: complete``, the finishing
time and the covariance statistics used, so an interrupted run still says
what it was.  docs/results.md names every key; ``format`` versions the
layout (version 2: ``spec`` is written in the spec language, version 1 held
the dataclass fields).
"""

from __future__ import annotations

import platform
import sys
import time
from importlib import metadata
from typing import Any

#: Version 2: ``spec`` is written in the spec language (version 1 held the dataclass fields).
MANIFEST_FORMAT = "keditlab.manifest/2"
#: The packages whose versions a manifest records (``None`` when one is not installed), and Python's.
PACKAGES = ("keditlab", "torch", "transformers", "peft", "gguf", "safetensors", "jsonschema", "numpy")


def start_manifest(spec: Any, loaded: Any, methods: dict[str, dict[str, Any]], *, chat: bool, started: float) -> dict[str, Any]:
    """The manifest of a run that is starting: the resolved ``spec``, the ``loaded`` model, the ``methods``.

    ``methods`` maps each method's label to what the manifest says of it
    (``name``, every ``settings`` value, ``traced_layer`` evidence for a
    ``layer: auto``); ``chat`` says whether prompts went through the chat
    template; ``started`` is the start time (``time.time()``).
    """
    from keditlab.models.precision import precision_warnings

    model, _, profile = loaded
    first = next(model.parameters())
    return {
        "format": MANIFEST_FORMAT,
        "status": "running",
        "spec": spec.to_spec_data(),
        "edits": edits_record(spec),  # inline, or which benchmark file (its sha256 and source), window and how many
        "model": {"name": spec.model.name, "source": getattr(loaded, "source", None), "profile": profile.to_dict(),
                  "chat_template": "on" if chat else "off", "dtype": str(first.dtype),
                  "precision_warnings": precision_warnings(model)},
        "methods": methods,
        "seed": spec.run.seed,
        "device": str(first.device),
        "versions": package_versions(),
        "command": command_line(),
        "started": timestamp(started),
        "statistics": [],
    }


def edits_record(spec: Any) -> dict[str, Any]:
    """``spec.edits_origin()``, and for edits read from a benchmark file what identifies that file.

    ``sha256`` and ``bytes`` of the file, hashed when it was read, and
    ``source``: the pinned public file it is a copy of (URL, revision, pinned
    sha256 and whether the bytes are the pinned ones), or null for a local
    file of no known source (:func:`keditlab.data.datasets.file_provenance`).
    """
    origin = spec.edits_origin()
    if origin["from"] == "records":
        from keditlab.data.datasets import file_provenance

        provenance = file_provenance(origin["records"]) or {"sha256": None, "bytes": None, "source": None}
        origin.update(provenance)
    return origin


def finish_manifest(manifest: dict[str, Any], statistics: list[Any], started: float, status: str = "complete",
                    error: BaseException | None = None) -> dict[str, Any]:
    """``manifest`` closed with ``status`` (``complete``, or ``failed`` / ``interrupted`` with the ``error`` that stopped
    the run): the statistics used, the finishing time and the run's seconds."""
    now = time.time()
    manifest["statistics"] = statistics
    manifest.update(status=status, finished=timestamp(now), seconds=round(now - started, 3))
    if error is not None:
        manifest["error"] = f"{type(error).__name__}: {error}"
    return manifest


def package_versions() -> dict[str, str | None]:
    """The installed version of each of :data:`PACKAGES` (None when absent), and ``python``."""
    versions: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    versions["python"] = platform.python_version()
    return versions


def command_line() -> list[str]:
    """The command that started this process, as typed."""
    return list(sys.argv)


def timestamp(seconds: float) -> str:
    """Local time with its offset, e.g. ``2025-01-01T12:00:00+0100``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(seconds))
