"""The run folder: where a run's results live, never overwriting anything.

A run writes a fresh folder ``<out>/<spec name>-<YYYYmmdd-HHMMSS>[-N]``
(created with ``mkdir``, which fails rather than reuse an existing folder):

``manifest.json``  the resolved spec, package versions, seed, device, start and
                   end times, status (``running`` until the run completes);
``cases.jsonl``    one line per (method, case, evaluation point): the edit, where
                   it stands in the schedule (mode, batch, edits on the model),
                   every probe's pre and post values, the generations, timings
                   and method details;
``summary.json``   per method and metric, pre and post means (see
                   :mod:`keditlab.runner.summary`);
``table.csv``, ``table.md``  the same means as files (:mod:`keditlab.runner.table_files`).

This module only creates the folder and reads and writes its files; what
goes into the manifest is :mod:`keditlab.runner.manifest`, and a saved run is
read back as a :class:`~keditlab.runner.result.Run` by
:func:`keditlab.runner.result.load_run`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def new_run_folder(out: str | os.PathLike[str], name: str) -> Path:
    """Create and return a new, empty folder for a run under ``out``."""
    parent = Path(out).expanduser()
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = safe_name(name) or "run"
    for attempt in range(1, 1000):
        folder = parent / (f"{safe}-{stamp}" if attempt == 1 else f"{safe}-{stamp}-{attempt}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run folder under {parent}")


def safe_name(name: str) -> str:
    """``name`` as a file name: letters, digits and ``-_.`` kept, anything else a dash."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def saved_call(folder: Path, label: str, batch: int) -> Path:
    """Where a run saves one method call's edits (``run.save_edits``): ``edits/<label>/call-NNNN``."""
    return folder / "edits" / safe_name(label) / f"call-{batch:04d}"


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(plain_json(data), handle, indent=2, ensure_ascii=False, allow_nan=False)
            handle.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(plain_json(record), ensure_ascii=False, allow_nan=False) + "\n")


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Write ``records`` as JSON lines atomically (a resumed run's kept records): a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(plain_json(record), ensure_ascii=False, allow_nan=False) + "\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def plain_json(value: Any) -> Any:
    """``value`` as strict JSON data: tuples and sets as lists, paths as strings, tensors and arrays as lists,
    and a number that is not finite (NaN, infinity) as ``null``, which every JSON parser reads
    (Python's ``NaN``/``Infinity`` literals are not JSON, and strict parsers reject the whole file)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, dict):
        return {key: plain_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain_json(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return plain_json(value.tolist())
    return str(value)
