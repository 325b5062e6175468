"""``keditlab.show(training)``: a training's loss curves and validation figures (``keditlab train``).

A training folder (:mod:`keditlab.runner.train_run`) holds ``losses.jsonl``
(every step's losses) and ``validation.jsonl`` (the figures every
``validate_every`` steps).  :func:`training_html` draws both as one page: the
curves (a moving mean over the steps, so a noisy loss still shows its trend)
and the validation table.  It reads the files only, so it also shows a
training that is still going on, or one that was stopped: run the cell again
to see it move.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def is_training_folder(folder: Any) -> bool:
    """Whether ``folder`` is a folder ``keditlab train`` wrote (its manifest says so)."""
    manifest = Path(folder) / "manifest.json"
    try:
        return json.loads(manifest.read_text()).get("format", "").startswith("keditlab.train/")
    except (OSError, ValueError):
        return False


def loss_figure(folder: Path, smooth: int = 20) -> Any:
    """The losses (moving mean over ``smooth`` steps) and the validation figures of the training in ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses, checks = _rows(folder / "losses.jsonl"), _rows(folder / "validation.jsonl")
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key in [k for k in (losses[0] if losses else {}) if k not in ("step", "seconds", "step_size")]:
        values = [r[key] for r in losses]
        mean = [sum(values[max(0, i - smooth + 1):i + 1]) / len(values[max(0, i - smooth + 1):i + 1]) for i in range(len(values))]
        left.plot([r["step"] for r in losses], mean, label=key)
    left.set(xlabel="step", title=f"training losses (mean of {smooth} steps)")
    if losses:
        left.set_yscale("log")
        left.legend(fontsize="small")
    for key in [k for k in (checks[0] if checks else {}) if k != "step"]:
        right.plot([r["step"] for r in checks], [r[key] for r in checks], marker="o", label=key)
    right.set(xlabel="step", title="validation records", ylim=(0, 1.05))
    if checks:
        right.legend(fontsize="small")
    figure.tight_layout()
    return figure


def training_html(folder: Any) -> str:
    """The training in ``folder`` (a folder, or a ``TrainRun``) as one self-contained HTML page."""
    import matplotlib.pyplot as plt

    folder = Path(getattr(folder, "path", folder))
    manifest = json.loads((folder / "manifest.json").read_text())
    figure = loss_figure(folder)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    image = base64.b64encode(buffer.getvalue()).decode()
    checks = _rows(folder / "validation.jsonl")
    header = "".join(f"<th>{k}</th>" for k in (checks[0] if checks else {}))
    body = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in row.values()) + "</tr>" for row in checks)
    steps = _rows(folder / "losses.jsonl")
    state = manifest.get("status", "?")
    summary = (f"<b>{manifest.get('editor')}</b> on {manifest.get('model', {}).get('name')}: {state}, "
               f"{steps[-1]['step'] if steps else 0} steps in {steps[-1]['seconds'] / 60 if steps else 0:.1f} min")
    archive = f"<br>archive: <code>{manifest['archive']}</code>" if manifest.get("archive") else ""
    return (f"<div>{summary}{archive}<br><img src='data:image/png;base64,{image}'/>"
            f"<table><tr>{header}</tr>{body}</table></div>")
