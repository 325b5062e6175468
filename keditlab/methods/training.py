"""The one training loop of the editors that must be trained before they edit (MEND, SERAC).

An editor's training is an :class:`EditorTrainer`: it holds the base model
(frozen) and the training records, and answers three questions: the loss of
a batch of records (:meth:`EditorTrainer.loss`), its figures on the
validation records (:meth:`EditorTrainer.validate`) and its tensors
(:meth:`EditorTrainer.state_dict`).  :func:`train_editor` does the rest, the
same for every editor:

* Adam on the trainer's parameters, batches of records drawn without
  replacement, epoch after epoch, from a seeded generator;
* a budget of ``steps`` and/or ``minutes``, whichever ends first;
* every ``validate_every`` steps the validation figures, written to
  ``validation.jsonl`` (and shown on the progress bar with the running loss);
  every step's losses (and the learning rate) go to ``losses.jsonl``;
* every ``checkpoint_every`` steps a checkpoint (the editor's tensors, Adam's
  moments, the batch generator and the clock), written atomically: a run
  killed at any moment resumes from its last checkpoint with
  ``resume=True`` and continues exactly as it would have (the loss records
  after the checkpoint are dropped and written again);
* ``lr_schedule: cosine`` lowers every learning rate along half a cosine, to
  zero at ``steps`` (computed from the step, so a resumed training follows
  the same curve);
* ``keep: best`` makes the archive the state with the best validation score
  (:meth:`EditorTrainer.score`, by default the mean of the figures) instead of
  the last one; the best state travels in the checkpoint too.

The caller (``keditlab train``, :mod:`keditlab.runner.train_run`) turns the
result into an archive (:mod:`keditlab.methods.archives`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from keditlab.methods.archives import atomic_save
from keditlab.methods.base import MethodConfig, choice_setting
from keditlab.methods.progress import progress_bar


@dataclass
class TrainConfig(MethodConfig):
    """The settings every editor's training has; an editor's own training config adds to them."""

    steps: int = field(default=3000, metadata={"minimum": 1, "help": "Most optimiser steps (training also stops when `minutes` is spent)."})
    minutes: float | None = field(default=None, metadata={"exclusive_minimum": 0, "help": "Time budget in minutes; empty: `steps` alone ends training."})
    batch_size: int = field(default=8, metadata={"minimum": 1, "help": "Training records per step."})
    lr: float = field(default=1e-4, metadata={"exclusive_minimum": 0, "help": "Adam's learning rate for the editor's parameters."})
    seed: int = field(default=0, metadata={"minimum": 0, "help": "Seed of the editor's initial weights and of the order records are drawn in."})
    validate_every: int = field(default=250, metadata={"minimum": 1, "help": "Steps between two measurements on the validation records."})
    checkpoint_every: int = field(default=250, metadata={"minimum": 1, "help": "Steps between two checkpoints (a killed training resumes from the last)."})
    lr_schedule: str = choice_setting("constant", ("constant", "cosine"), "Learning rates over the training: constant, or "
                                      "lowered along half a cosine to zero at `steps`.")
    keep: str = choice_setting("last", ("last", "best"), "Which state becomes the archive: the last, or the one with the best "
                               "validation score (measured every `validate_every` steps).")


class EditorTrainer:
    """Base class of an editor's training (see the module docstring); a subclass implements the four methods."""

    editor: str = ""

    def parameters(self) -> list[torch.nn.Parameter]:  # pragma: no cover
        raise NotImplementedError

    def loss(self, records: list[int]) -> dict[str, torch.Tensor]:  # pragma: no cover
        """The losses of a batch of training records (indices); ``"loss"`` is the one minimised, the others are reported."""
        raise NotImplementedError

    def validate(self) -> dict[str, float]:  # pragma: no cover
        """Figures on the validation records (``edit_success``, ``locality``, ...), without gradients."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def score(self, figures: dict[str, float]) -> float:
        """One number to rank validation figures by (``keep: best``): their mean, every figure being better higher."""
        return sum(figures.values()) / max(1, len(figures))

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:  # pragma: no cover
        raise NotImplementedError

    @property
    def num_records(self) -> int:  # pragma: no cover
        raise NotImplementedError


@dataclass
class TrainResult:
    """What a training did: steps taken, seconds spent (every segment of a resumed one), why it stopped, last figures."""

    steps: int
    seconds: float
    stopped_by: str           # "steps" or "minutes"
    validation: dict[str, float] = field(default_factory=dict)
    resumed_from: int = 0     # the checkpoint's step, 0 for a fresh training
    kept_step: int | None = None  # with ``keep: best``, the step whose state was kept (``validation`` is its figures)


CHECKPOINT = "checkpoint.pt"
LOSSES = "losses.jsonl"
VALIDATION = "validation.jsonl"


def _kept_lines(path: Path, last_step: int) -> None:
    """Drop the records written after ``last_step`` (a resumed training writes them again)."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in lines))


class _Batches:
    """Record indices in batches, each epoch a fresh seeded permutation; its state goes into the checkpoint."""

    def __init__(self, count: int, size: int, seed: int) -> None:
        self.count, self.size = count, min(size, count)
        self.generator = torch.Generator().manual_seed(seed)
        self.order: list[int] = []

    def next(self) -> list[int]:
        if len(self.order) < self.size:
            self.order += torch.randperm(self.count, generator=self.generator).tolist()
        batch, self.order = self.order[:self.size], self.order[self.size:]
        return batch

    def state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "order": torch.tensor(self.order, dtype=torch.long)}

    def load(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.order = state["order"].tolist()


def train_editor(trainer: EditorTrainer, config: TrainConfig, folder: Path, *, resume: bool = False,
                 progress: bool = True, log: Callable[[str], None] = lambda _m: None) -> TrainResult:
    """Train ``trainer`` under ``config``, recording into ``folder``; continue from its checkpoint when ``resume``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    params = trainer.parameters()
    optimiser = torch.optim.Adam(params, lr=config.lr)
    base_lrs = [group["lr"] for group in optimiser.param_groups]
    batches = _Batches(trainer.num_records, config.batch_size, config.seed)
    step, spent = 0, 0.0
    best: dict[str, Any] | None = None    # keep: best — {"step", "score", "figures", "editor"}
    checkpoint = folder / CHECKPOINT
    if resume and checkpoint.exists():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        trainer.load_state_dict(saved["editor"])
        optimiser.load_state_dict(saved["optimiser"])
        batches.load(saved["batches"])
        step, spent = int(saved["step"]), float(saved["seconds"])
        best = saved.get("best")
        log(f"resuming from the checkpoint at step {step} ({spent / 60:.1f} min spent)")
    resumed_from = step
    for name in (LOSSES, VALIDATION):
        _kept_lines(folder / name, step) if resume else (folder / name).unlink(missing_ok=True)

    def save_checkpoint() -> None:
        atomic_save({"step": step, "seconds": spent, "editor": trainer.state_dict(),
                     "optimiser": optimiser.state_dict(), "batches": batches.state(), "best": best}, checkpoint)

    def measure() -> dict[str, float]:
        nonlocal best
        figures = trainer.validate()
        with open(folder / VALIDATION, "a") as out:
            out.write(json.dumps({"step": step, **{k: round(v, 4) for k, v in figures.items()}}) + "\n")
        if config.keep == "best" and figures:
            score = trainer.score(figures)
            if best is None or score > best["score"]:
                best = {"step": step, "score": score, "figures": dict(figures), "editor": trainer.state_dict()}
        return figures

    def set_learning_rates() -> None:
        factor = 0.5 * (1 + math.cos(math.pi * step / config.steps)) if config.lr_schedule == "cosine" else 1.0
        for group, base in zip(optimiser.param_groups, base_lrs):
            group["lr"] = base * factor

    budget = None if config.minutes is None else config.minutes * 60
    started = time.perf_counter() - spent
    figures: dict[str, float] = {}
    running: float | None = None
    stopped_by = "steps"
    with progress_bar(progress, total=config.steps, desc=f"{trainer.editor}: training") as bar, \
            open(folder / LOSSES, "a") as losses:
        bar.update(step)
        while step < config.steps:
            if budget is not None and spent >= budget:
                stopped_by = "minutes"
                break
            parts = trainer.loss(batches.next())
            set_learning_rates()
            optimiser.zero_grad()
            parts["loss"].backward()
            optimiser.step()
            step += 1
            spent = time.perf_counter() - started
            values = {k: float(f"{float(v.detach()):.5g}") for k, v in parts.items()}
            losses.write(json.dumps({"step": step, **values, "lr": float(f"{optimiser.param_groups[0]['lr']:.5g}"),
                                     "seconds": round(spent, 2)}) + "\n")
            running = values["loss"] if running is None else 0.95 * running + 0.05 * values["loss"]
            if step % config.validate_every == 0:
                losses.flush()
                figures = measure()
            if step % config.checkpoint_every == 0:
                losses.flush()
                save_checkpoint()
            bar.update()
            bar.set_postfix(loss=f"{running:.3f}", **{k: f"{v:.2f}" for k, v in figures.items()})
    if not figures or step % config.validate_every:
        figures = measure()
    save_checkpoint()
    kept = None
    if config.keep == "best" and best is not None:
        trainer.load_state_dict(best["editor"])
        figures, kept = best["figures"], best["step"]
        log(f"keeping the state of step {kept} (best validation score {best['score']:.3f})")
    return TrainResult(step, spent, stopped_by, figures, resumed_from, kept)
