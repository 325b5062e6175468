"""``keditlab.show(training)``: a training's loss curves and validation figures (``keditlab train``).

A training folder (:mod:`keditlab.runner.train_run`) holds ``losses.jsonl``
(every step's losses) and ``validation.jsonl`` (the figures every
``validate_every`` steps).  :func:`training_html` draws both as one page: the
curves (:func:`keditlab.runner.train_run.loss_figure`, the figure of the
folder's ``losses.png``) and the validation table.  It reads the files only, so it also shows a
training that is still going on, or one that was stopped: run the cell again
to see it move.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any


def is_training_folder(folder: Any) -> bool:
    """Whether ``folder`` is a folder ``keditlab train`` wrote (its manifest says so)."""
    manifest = Path(folder) / "manifest.json"
    try:
        return json.loads(manifest.read_text()).get("format", "").startswith("keditlab.train/")
    except (OSError, ValueError):
        return False


def training_html(folder: Any) -> str:
    """The training in ``folder`` (a folder, or a ``TrainRun``) as one self-contained HTML page."""
    import matplotlib.pyplot as plt

    from keditlab.runner.train_run import loss_figure, training_records   # the figure of the folder's losses.png

    folder = Path(getattr(folder, "path", folder))
    manifest = json.loads((folder / "manifest.json").read_text())
    figure = loss_figure(folder)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    image = base64.b64encode(buffer.getvalue()).decode()
    steps, checks = training_records(folder)
    header = "".join(f"<th>{k}</th>" for k in (checks[0] if checks else {}))
    body = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in row.values()) + "</tr>" for row in checks)
    state = manifest.get("status", "?")
    summary = (f"<b>{manifest.get('editor')}</b> on {manifest.get('model', {}).get('name')}: {state}, "
               f"{steps[-1]['step'] if steps else 0} steps in {steps[-1]['seconds'] / 60 if steps else 0:.1f} min")
    archive = f"<br>archive: <code>{manifest['archive']}</code>" if manifest.get("archive") else ""
    return (f"<div>{summary}{archive}<br><img src='data:image/png;base64,{image}'/>"
            f"<table><tr>{header}</tr>{body}</table></div>")
