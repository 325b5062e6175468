"""``keditlab train SPEC``: train the editor a spec's ``train:`` section names, and put its archive in the cache.

The run folder holds

* ``manifest.json``: the resolved spec, model, device, versions, command line, times, status;
* ``losses.jsonl``: every step's losses (``{"step", "loss", ..., "lr", "seconds"}``);
* ``validation.jsonl``: the validation figures every ``validate_every`` steps;
* ``checkpoint.pt``: the latest checkpoint; ``keditlab train --resume FOLDER`` continues from it;
* ``losses.png``: the loss curves and the validation figures;
* ``training.json``: the result, with the archive's path.

The archive goes to the cache (:mod:`keditlab.methods.archives`), where
``method: NAME`` finds it for the same model; with ``train.archive`` it is
also written to that path, which must not exist yet (nothing a user made is
overwritten).  docs/training.md describes the settings and the costs.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keditlab.methods import get_method, trained_editors
from keditlab.methods.archives import cached_archive_path, model_facts, save_archive, training_key
from keditlab.methods.base import MethodConfigError
from keditlab.methods.training import LOSSES, VALIDATION, TrainResult, train_editor
from keditlab.models import LoadedModel, load_model
from keditlab.models.sampling import device_of, seeded
from keditlab.runner import folder as run_folder
from keditlab.runner.manifest import command_line, package_versions, timestamp
from keditlab.spec import Spec

#: Version of a training folder's layout.
TRAIN_FORMAT = "keditlab.train/1"


@dataclass
class TrainRun:
    """A finished (or resumed and finished) training: its result, the archive written, the folder."""

    result: TrainResult
    archive: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    copies: list[Path] = field(default_factory=list)

    def __str__(self) -> str:
        r = self.result
        figures = ", ".join(f"{k} {v:.2f}" for k, v in r.validation.items())
        lines = [f"{self.manifest.get('editor')}: {r.steps} steps in {r.seconds / 60:.1f} min (stopped by {r.stopped_by})"
                 + (f", resumed from step {r.resumed_from}" if r.resumed_from else ""),
                 f"validation: {figures}" + (f" (the state of step {r.kept_step}, the best validated)"
                                             if r.kept_step is not None else ""),
                 f"archive: {self.archive}"]
        lines += [f"also written to: {copy}" for copy in self.copies]
        if self.path:
            lines.append(f"results: {self.path}")
        return "\n".join(lines)


def records_digest(cases: Any) -> str:
    """SHA-256 of the records' texts (prompt, target, rephrasings, probes): what an archive was trained on."""
    digest = hashlib.sha256()
    for case in cases:
        digest.update(json.dumps([case.prompt, case.target, list(case.rephrase),
                                  [(p.prompt, str(p.answer)) for p in case.locality]]).encode())
    return digest.hexdigest()


def _check_editor(spec: Spec) -> Any:
    train = spec.train
    if train is None:
        raise ValueError(f"spec {spec.name!r} has no `train:` section. Fix: add one (docs/training.md), or run its edits "
                         "with `keditlab run`.")
    if train.editor not in trained_editors():
        raise MethodConfigError(f"train.editor: {train.editor!r} is not trained before it edits; the editors that are: "
                                f"{', '.join(trained_editors())}.")
    method = get_method(train.editor)
    return method, method.train_config_class.from_params(dict(train.params))


def train_spec(spec: Spec, out: str | Path | None = "runs", *, loaded: LoadedModel | None = None, log: Any = print,
               resume: str | Path | None = None, progress: bool = True, cache: bool = True) -> TrainRun:
    """Run ``spec.train``: train in a new run folder under ``out`` (or continue the one named by ``resume``).

    The archive goes to the cache, where ``method: NAME`` finds it; with
    ``cache=False`` (a trial in a notebook, which should not become the
    default archive) it is written into the training folder instead, as
    ``archive.pt``, and a method must name it (``archive: PATH``).
    """
    method, config = _check_editor(spec)
    train = spec.train
    copy = Path(train.archive) if train.archive else None
    if copy is not None and copy.exists():   # refused before any work, never overwritten
        raise FileExistsError(f"train.archive: {copy} exists already. Fix: name a new file, or move that one away "
                              "(keditlab never overwrites an archive).")
    started = time.time()
    if loaded is None:
        log(f"Loading {spec.model.name} …")
        loaded = load_model(spec.model.name, device=spec.run.device, dtype=spec.model.dtype, profile=spec.model.profile)
    model, tokenizer, profile = loaded
    config.check_layers(profile.num_layers)
    if resume is not None:
        folder = Path(resume)
        manifest = json.loads((folder / "manifest.json").read_text())
    else:
        folder = run_folder.new_run_folder(out or "runs", spec.name)
        manifest = {"format": TRAIN_FORMAT, "status": "running", "editor": train.editor, "spec": spec.to_spec_data(),
                    "model": {"name": spec.model.name, "source": getattr(loaded, "source", None), "profile": profile.to_dict()},
                    "settings": config.to_dict(), "device": str(device_of(model)), "versions": package_versions(),
                    "command": command_line(), "started": timestamp(started)}
    manifest["status"] = "running"
    run_folder.write_json(folder / "manifest.json", manifest)
    left_out, left_out_validation = train.excluded
    records = {"records": train.records_from.describe(len(train.records) + left_out), "count": len(train.records),
               "sha256": records_digest(train.records),
               "validation": (train.validation_from.describe(len(train.validation) + left_out_validation)
                              if train.validation_from else None)}
    if train.exclude_from is not None:
        records["excluded"] = {"records": left_out, "validation": left_out_validation,
                               "apart_from": train.exclude_from.describe(train.exclude_count)}
        log(f"Left out {left_out} training and {left_out_validation} validation records about the subjects or with the "
            f"prompts of {records['excluded']['apart_from']}.")
    log(f"Training {train.editor} on {records['records']} …")
    try:
        with seeded(model, config.seed), method.trainer_class(model, tokenizer, profile, list(train.records),
                                                              list(train.validation), config) as trainer:
            result = train_editor(trainer, config, folder, resume=resume is not None, progress=progress, log=log)
            build = trainer.build()
            state = trainer.state_dict()
    except BaseException:
        manifest["status"] = "interrupted"
        run_folder.write_json(folder / "manifest.json", manifest)
        raise
    facts = model_facts(model, spec.model.name)
    training = {**records, "name": spec.name, "settings": config.to_dict(), "steps": result.steps, "seconds": round(result.seconds, 1),
                "stopped_by": result.stopped_by, "validation": result.validation, "folder": str(folder)}
    if result.kept_step is not None:
        training["kept_step"] = result.kept_step
    archive = (cached_archive_path(facts["fingerprint"], train.editor, training_key(train.editor, records, config.to_dict()),
                                   run_folder.safe_name(spec.name))
               if cache else folder / "archive.pt")
    save_archive(archive, train.editor, facts, training, build, state)
    copies = []
    if copy is not None and not copy.exists():
        copies.append(save_archive(copy, train.editor, facts, training, build, state))
    _plot(folder)
    manifest.update(status="complete", finished=timestamp(time.time()), seconds=round(time.time() - started, 3),
                    archive=str(archive))
    run_folder.write_json(folder / "training.json", {**training, "archive": str(archive), "copies": [str(c) for c in copies]})
    run_folder.write_json(folder / "manifest.json", manifest)
    return TrainRun(result, archive, manifest, folder, copies)


def resume_training(folder: str | Path, *, loaded: LoadedModel | None = None, log: Any = print,
                    progress: bool = True) -> TrainRun:
    """Continue the training recorded in ``folder`` from its last checkpoint (``keditlab train --resume FOLDER``)."""
    from keditlab.spec import spec_from_dict

    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{folder} is not a training folder (no manifest.json). Fix: give the folder "
                                "`keditlab train` printed when it started.")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != TRAIN_FORMAT:
        raise ValueError(f"{folder} was not written by `keditlab train`. Fix: continue an editing run with "
                         "`keditlab run --resume`, or give a training folder.")
    spec = spec_from_dict(manifest["spec"], source=str(folder / "manifest.json"))
    return train_spec(spec, None, loaded=loaded, log=log, resume=folder, progress=progress)


def training_records(folder: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A training folder's ``losses.jsonl`` and ``validation.jsonl`` records as they are now (empty when not written yet)."""
    return tuple(run_folder.read_jsonl(folder / name) if (folder / name).exists() else [] for name in (LOSSES, VALIDATION))


def loss_figure(folder: Path, smooth: int = 20) -> Any:
    """The losses (moving mean over ``smooth`` steps) and the validation figures of the training in ``folder``.

    Saved as the folder's ``losses.png``, and drawn again in a notebook
    (:mod:`keditlab.widgets.training`) from the files as they are then, so a
    training still going on shows how far it has got.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses, checks = training_records(folder)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key in [k for k in (losses[0] if losses else {}) if k not in ("step", "seconds", "step_size", "lr")]:
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


def _plot(folder: Path) -> None:
    """``losses.png``: :func:`loss_figure`, saved."""
    import matplotlib.pyplot as plt

    figure = loss_figure(folder)
    figure.savefig(folder / "losses.png", dpi=100)
    plt.close(figure)
