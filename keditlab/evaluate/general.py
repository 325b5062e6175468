"""General ability: what editing cost the rest of the model, measured by lm-evaluation-harness.

Every other measurement in keditlab is about the edits: does the model now say
the new target, for the edit prompt, its paraphrases, its neighbours.  None of
them asks whether the model got worse at everything else.  The KnowEdit study
(Zhang et al., 2024) and LocFT-BF answer that with **lm-evaluation-harness**
(EleutherAI's ``lm-eval`` package, ``pip install 'keditlab[general]'``): run
a few of its tasks on the model before the edits and again after them, and
compare.  ``evaluate: {general: {tasks: [knowns], limit: 100}}`` asks for it;
the runner decides when (:mod:`keditlab.runner.general_run`, docs/protocols.md).

The model is the one keditlab already holds, edits and all, never a second
copy loaded from disk: it is wrapped in the harness's own Hugging Face wrapper,
``lm_eval.models.huggingface.HFLM(pretrained=model, tokenizer=...)``, and
``lm_eval.evaluator.simple_evaluate(model=that_wrapper, tasks=..., limit=...)``
runs the tasks.  The wrapper reads the model's weights at each forward pass, so
a wrapper made once serves before and after every edit.  Two things it does to
what it is given are kept from reaching the run: it may give a tokenizer
without one a pad token (so it gets a copy of the tokenizer), and it puts the
model in eval mode (which is restored after).

Tasks are of two kinds:

* keditlab's **offline tasks** (:data:`~keditlab.vocabulary.GENERAL_TASKS`):
  ``knowns``, ROME's known facts as a multiple-choice task over a local file
  (:mod:`keditlab.evaluate.knowns_task`), handed to the harness as a task
  config, so it needs no network;
* any **task of the harness itself** (``hellaswag``, ``arc_easy``, ...), by
  name; the harness downloads its data from the Hugging Face Hub on first use.
  :meth:`GeneralEvaluator.check_tasks` looks each name up and loads its data
  before a model is loaded, so a typo or a machine without the network fails
  at once, with a message that says so.

Each score is the harness's own: its metric (``acc``, or ``exact_match`` under
a filter, written ``exact_match,strict-match``), its standard error, and how
many examples it read.  A score is reported as the row ``general:<task>``
under the protocol ``lm-eval:<metric>`` (:func:`keditlab.vocabulary.general_row`),
never averaged with an edit metric.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from keditlab.evaluate.knowns_task import KnownsFileError, knowns_docs, knowns_task_config
from keditlab.vocabulary import GENERAL_TASKS, closest, general_row

#: How to install the harness, as a fix says it.
INSTALL = "pip install 'keditlab[general]'   (or: pip install lm-eval)"
#: What a fix says about a task of the harness: its data comes from the Hub, once.
FIRST_USE = ("a harness task downloads its data from the Hugging Face Hub the first time it runs, so that run needs the "
             "network; later runs read the cache (~/.cache/huggingface/datasets)")


class GeneralError(RuntimeError):
    """The harness cannot run what ``evaluate.general`` asks: it is not installed, a task is unknown, or its data cannot be read."""


@dataclass(frozen=True)
class HarnessScore:
    """One of the harness's scores on one task: ``acc`` 0.72 ± 0.03 on ``knowns`` over 200 examples."""

    task: str
    metric: str                 # the harness's name, with its filter when that is not "none": "exact_match,strict-match"
    value: float | None
    stderr: float | None = None
    n: int | None = None        # examples read

    @property
    def row(self) -> tuple[str, str]:
        """``("general:knowns", "lm-eval:acc")``: where the score sits in a summary."""
        return general_row(self.task, self.metric)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "metric": self.metric, "value": self.value, "stderr": self.stderr, "n": self.n}


@dataclass(frozen=True)
class GeneralResult:
    """Every score of one measurement (all the tasks, once) and the seconds it took."""

    scores: tuple[HarnessScore, ...]
    seconds: float

    def values(self) -> dict[tuple[str, str], float | None]:
        """Each score by its row: ``{("general:knowns", "lm-eval:acc"): 0.72}``."""
        return {score.row: score.value for score in self.scores}

    def to_dict(self) -> dict[str, Any]:
        return {"scores": [score.to_dict() for score in self.scores], "seconds": round(self.seconds, 3)}


def harness_version() -> str | None:
    """The installed lm-eval's version, or None when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version("lm_eval")
    except metadata.PackageNotFoundError:
        return None


def require_harness() -> None:
    """Raise :class:`GeneralError` when lm-evaluation-harness cannot be imported."""
    try:
        import lm_eval  # noqa: F401
    except ImportError as exc:
        raise GeneralError(f"evaluate.general runs lm-evaluation-harness, which is not installed here ({exc}). "
                           f"Fix: {INSTALL}, or remove `general` from `evaluate:`") from None


@contextlib.contextmanager
def _quiet_harness() -> Iterator[None]:
    """The harness's log lines at ERROR only while it runs: its INFO and WARNING lines ("pretrained is not a str",
    "custom kwargs can be passed ...") speak of its command line, not of this run.  Its progress bars stay."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@functools.cache
def _task_manager(with_harness_tasks: bool) -> Any:
    """A ``TaskManager``, made once per process: indexing the harness's thousands of task files takes seconds, and
    the index does not change while keditlab runs (offline tasks are handed over as configs, outside it)."""
    from lm_eval.tasks import TaskManager

    with _quiet_harness():
        return TaskManager(include_defaults=with_harness_tasks)


def _number(value: Any) -> float | None:
    """A result value as a float, or None for the harness's ``"N/A"`` and non-finite numbers."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class GeneralEvaluator:
    """Runs ``evaluate.general``'s tasks on a model: :meth:`check_tasks` once, then :meth:`measure` as often as needed.

    ``settings`` is a :class:`~keditlab.spec.types.GeneralSpec` (``tasks``,
    ``limit``, ``knowns_file``); ``batch_size`` is how many requests the
    harness puts through the model at once; ``seed`` seeds the harness's
    draws (few-shot examples), so two measurements read the same prompts.
    """

    def __init__(self, settings: Any, *, batch_size: int = 16, seed: int = 0) -> None:
        require_harness()
        self.settings = settings
        self.batch_size = batch_size
        self.seed = seed
        self._manager: Any = None
        self._wrapped: tuple[int, Any] | None = None   # (id of the model, its HFLM)

    @property
    def harness_tasks(self) -> list[str]:
        """The tasks that are the harness's own (not keditlab's offline ones)."""
        return [task for task in self.settings.tasks if task not in GENERAL_TASKS]

    def task_specs(self) -> list[Any]:
        """What the harness is handed for each task: an offline task's config dict, or a harness task's name."""
        specs: list[Any] = []
        for task in self.settings.tasks:
            if task == "knowns":
                specs.append(knowns_task_config(self.settings.knowns_file))
            else:
                specs.append(task)
        return specs

    def task_manager(self) -> Any:
        """The harness's ``TaskManager``: its index of its own tasks only when one is asked for (building it takes seconds)."""
        if self._manager is None:
            self._manager = _task_manager(bool(self.harness_tasks))
        return self._manager

    def check_tasks(self) -> None:
        """Before any model is loaded: every task exists, and its data can be read (a harness task's downloaded now).

        Raises :class:`GeneralError` naming the task and the fix: a did-you-mean
        for an unknown name, the network for data that cannot be fetched.
        """
        if "knowns" in self.settings.tasks:
            if not self.settings.knowns_file:
                raise GeneralError("evaluate.general: the knowns task has no file (knowns_file is None). Fix: give "
                                   "`knowns_file:` the path of ROME's known_1000.json, or build the spec with keditlab.load")
            try:
                knowns_docs(self.settings.knowns_file)
            except KnownsFileError as exc:
                raise GeneralError(f"evaluate.general: {exc}") from None
        if not self.harness_tasks:
            return
        manager = self.task_manager()
        known = set(manager.all_tasks)
        for task in self.harness_tasks:
            if task not in known:
                meant = closest(task, [*GENERAL_TASKS, *manager.all_tasks])
                hint = f" (did you mean '{meant}'?)" if meant else ""
                raise GeneralError(
                    f"evaluate.general: unknown task {task!r}{hint}: neither one of keditlab's offline tasks "
                    f"({', '.join(GENERAL_TASKS)}) nor one of the {len(known):,} tasks lm-eval {harness_version()} knows. "
                    f"Fix: correct the name (`lm-eval ls tasks` lists the harness's), or use {GENERAL_TASKS[0]}")
        try:
            with _quiet_harness():
                manager.load(self.harness_tasks)
        except Exception as exc:  # noqa: BLE001 - the Hub, the datasets library, a task's own code: said as one line
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise GeneralError(
                f"evaluate.general: the harness could not load the data of {', '.join(self.harness_tasks)} "
                f"({type(exc).__name__}: {reason}); {FIRST_USE}. Fix: run once where the Hugging Face Hub can be "
                f"reached, or use keditlab's offline task {GENERAL_TASKS[0]}") from None

    def _lm(self, model: Any, tokenizer: Any) -> Any:
        """The harness's wrapper of ``model``, made once per model (it reads the weights as they are at each call)."""
        if self._wrapped is None or self._wrapped[0] != id(model):
            from lm_eval.models.huggingface import HFLM

            with _quiet_harness():
                lm = HFLM(pretrained=model, tokenizer=copy.deepcopy(tokenizer), batch_size=self.batch_size)
            self._wrapped = (id(model), lm)
        return self._wrapped[1]

    def measure(self, model: Any, tokenizer: Any) -> GeneralResult:
        """Every task once on ``model`` as it is now: the harness's scores, and the seconds they took.

        The model's weights are only read; its training mode is put back as it was.
        """
        from lm_eval.evaluator import simple_evaluate

        was_training = model.training
        start = time.perf_counter()
        try:
            lm = self._lm(model, tokenizer)
            with _quiet_harness():
                out = simple_evaluate(model=lm, tasks=self.task_specs(), limit=self.settings.limit,
                                      task_manager=self.task_manager(), log_samples=False, bootstrap_iters=1000,
                                      random_seed=self.seed, numpy_random_seed=self.seed, torch_random_seed=self.seed,
                                      fewshot_random_seed=self.seed)
        finally:
            model.train(was_training)
        return GeneralResult(scores=tuple(read_scores(out, self.settings.tasks)), seconds=time.perf_counter() - start)


def read_scores(out: dict[str, Any], tasks: Any) -> list[HarnessScore]:
    """The scores of ``simple_evaluate``'s result ``out`` for the ``tasks`` a spec named.

    A task that is a group (``mmlu``) gives the group's scores, not its
    subtasks'; a name that is a tag (a set of tasks without scores of its own)
    gives each of its tasks'.  Each metric's standard error sits beside it as
    ``<metric>_stderr``; ``n`` is the examples read (a group's: its subtasks').
    """
    results, groups = out.get("results", {}), out.get("groups", {})
    subtasks = out.get("group_subtasks", {})
    samples = out.get("n-samples", {})
    named = [task for task in tasks if task in groups or task in results]
    inside = {sub for task in named for sub in _leaves(task, subtasks)}
    shown = named + [name for name in results if name not in named and name not in inside and name not in groups]
    scores = []
    for task in shown:
        entry = groups.get(task) or results.get(task, {})
        count = samples.get(task, {}).get("effective")
        if count is None:
            counts = [samples.get(sub, {}).get("effective") for sub in _leaves(task, subtasks)]
            count = sum(counts) if counts and None not in counts else None
        for key, value in entry.items():
            if "," not in key:
                continue
            metric, where = key.split(",", 1)
            if metric.endswith("_stderr"):
                continue
            name = metric if where == "none" else f"{metric},{where}"
            scores.append(HarnessScore(task, name, _number(value), _number(entry.get(f"{metric}_stderr,{where}")),
                                       int(count) if count is not None else None))
    return scores


def _leaves(task: str, subtasks: dict[str, list[str]]) -> list[str]:
    """The tasks under a group, its subgroups' included (empty for a task)."""
    found = []
    for sub in subtasks.get(task, []):
        found += [sub, *_leaves(sub, subtasks)]
    return found
