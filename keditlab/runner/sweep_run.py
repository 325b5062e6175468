"""``keditlab sweep``: run every cell of a sweep (:mod:`keditlab.spec.sweep`), here or on a Ray cluster.

A sweep writes a new sweep folder (:mod:`keditlab.runner.sweep_result` lists
its files) and runs each cell as an ordinary run (:func:`~keditlab.runner.run.run_spec`)
whose run folder goes under ``cells/``.  ``sweep.json`` is rewritten, atomically,
whenever a cell starts or ends, so it always says which cells are
``pending``, ``running``, ``complete`` or ``failed``, with their times and
errors.  A cell that fails is recorded with its error and the sweep goes on;
the merged ``table.md``/``table.csv`` are written at the end, and whenever the
sweep stops (an error, Ctrl-C, ``kill``), from the cells that completed.

Resuming (``keditlab sweep --resume SWEEP_FOLDER``, :func:`resume_sweep`)
expands the cells again from the folder's own ``spec.yaml`` (never from the
file you may have changed since) and runs only the cells that are not
complete.  A cell whose run stopped part way is continued in its own run
folder (:func:`keditlab.runner.resume.resume_run`) when its run can be, else run
again in a new folder beside the old one: nothing is overwritten.

Two executors run the cells:

``local`` (the default)
    one cell after another in this process.  Cells on the same model share
    one loaded model (each run gives it back unedited, bit for bit), and all
    share the statistics, trace and archive caches on disk.  One cell at a
    time is the right speed on a laptop: two torch jobs on the same cores
    slow each other down several times.

``ray``
    each cell a Ray task (``pip install "keditlab[ray]"``; Moritz et al.,
    *Ray: A Distributed Framework for Emerging AI Applications*, OSDI 2018).
    A cell whose device is CUDA (``run.device: cuda``, or ``auto`` on a
    cluster with GPUs) asks for ``gpus_per_cell`` GPUs (one by default; a
    fraction such as 0.5 puts two small-model cells on one GPU), any other
    cell for one CPU, and torch in that task uses that many threads.  The
    task writes its run folder on its node and sends it back packed, so the
    sweep folder fills on this machine with or without a shared file
    system.  The caches live on each node's disk (``$KEDITLAB_CACHE``), under
    file locks: a node computes a model's statistics once, for all its cells.
    ``address`` is passed to ``ray.init``: ``None`` starts a local cluster
    (or joins the one this process already started), ``"auto"`` joins the
    cluster of this machine, ``"ray://host:10001"`` a remote one
    (docs/sweeps.md says how to start one).
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import socket
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock, Timeout

from keditlab.runner.folder import new_run_folder, write_json
from keditlab.runner.manifest import timestamp
from keditlab.runner.schedule import RunError
from keditlab.runner.sweep_result import (SWEEP_FILE, SWEEP_FORMAT, SweepResult, cell_label, merged_csv, merged_markdown,
                                          read_sweep)
from keditlab.spec import SweepSpec, parse_sweep
from keditlab.spec.sweep import Cell

EXECUTORS = ("local", "ray")
CELLS = "cells"
SPEC_COPY = "spec.yaml"
LOCK = ".sweep.lock"


@dataclass
class Job:
    """One cell to run: its number, coordinates, resolved spec, and the run folder a previous attempt left (if any)."""

    cell: Cell
    spec: Any
    previous: Path | None = None


def sweep_spec(sweep: SweepSpec, out: str | Path = "runs", *, executor: str = "local", address: str | None = None,
               gpus_per_cell: float = 1.0, loaded: Any = None, log: Any = print) -> SweepResult:
    """Run every cell of ``sweep`` into a new sweep folder under ``out``; return the :class:`SweepResult`.

    ``loaded`` (the local executor only): a model you hold (``keditlab.load_model``), used by the cells whose
    ``model`` is the name it was loaded as; it is given back unedited, like ``keditlab.run(..., loaded=)``.
    """
    _check_executor(executor, gpus_per_cell)
    folder = new_run_folder(out, f"{sweep.name}-sweep")
    (folder / CELLS).mkdir()
    (folder / SPEC_COPY).write_text(sweep.text or "", encoding="utf-8")
    source = sweep.source if sweep.source.startswith("<") else str(Path(sweep.source).resolve())
    record = {"format": SWEEP_FORMAT, "spec": sweep.name, "source": source, "created": _now(),
              "status": "pending", "excluded": sweep.grid.excluded,
              "axes": [{"key": axis.key, "labels": list(axis.labels)} for axis in sweep.grid.axes],
              "cells": [{"index": cell.index, "coords": dict(cell.coords), "status": "pending", "folder": None,
                         "started": None, "finished": None, "seconds": None, "node": None, "error": None}
                        for cell in sweep.cells]}
    write_json(folder / SWEEP_FILE, record)
    log(f"Sweep {sweep.name}: {len(sweep)} cells ({', '.join(f'{a.key} × {len(a.values)}' for a in sweep.grid.axes)}"
        + (f", {sweep.grid.excluded} excluded" if sweep.grid.excluded else "") + f") into {folder}")
    jobs = [Job(cell, spec) for cell, spec in zip(sweep.cells, sweep.specs)]
    return _execute(folder, record, jobs, executor, address, gpus_per_cell, log, loaded)


def resume_sweep(folder: str | Path, *, executor: str = "local", address: str | None = None, gpus_per_cell: float = 1.0,
                 loaded: Any = None, log: Any = print) -> SweepResult:
    """Run the cells of the sweep in ``folder`` that are not complete (the module docstring says how)."""
    _check_executor(executor, gpus_per_cell)
    folder = Path(folder).expanduser()
    record = read_sweep(folder)
    if record.get("format") != SWEEP_FORMAT:
        raise RunError(f"{folder / SWEEP_FILE} was written by another version of keditlab (format "
                       f"{record.get('format')!r}, this one reads {SWEEP_FORMAT}). Fix: run the sweep again with this version")
    text = (folder / SPEC_COPY).read_text(encoding="utf-8")
    sweep = parse_sweep(text, record["source"])
    coords = [dict(cell.coords) for cell in sweep.cells]
    if coords != [cell["coords"] for cell in record["cells"]]:
        raise RunError(f"the cells of {folder / SPEC_COPY} no longer match {folder / SWEEP_FILE} (a records file it "
                       "reads changed, or one of the two was edited). Fix: start a new sweep with `keditlab sweep SPEC`")
    jobs = []
    for cell, spec, saved in zip(sweep.cells, sweep.specs, record["cells"]):
        if saved["status"] != "complete":
            jobs.append(Job(cell, spec, _previous_folder(folder, saved, cell)))
    log(f"Sweep {record['spec']}: {len(sweep) - len(jobs)} of {len(sweep)} cells complete; running the other {len(jobs)}")
    return _execute(folder, record, jobs, executor, address, gpus_per_cell, log, loaded)


def _check_executor(executor: str, gpus_per_cell: float) -> None:
    if executor not in EXECUTORS:
        from keditlab.vocabulary import did_you_mean

        raise RunError(f"unknown executor {executor!r}{did_you_mean(executor, EXECUTORS)}. Fix: use "
                       f"{' or '.join(EXECUTORS)} (docs/sweeps.md)")
    if not 0 < gpus_per_cell <= 64:
        raise RunError(f"gpus per cell must be above 0 (a fraction shares a GPU), got {gpus_per_cell}. Fix: use e.g. 1 or 0.5")


def _previous_folder(folder: Path, saved: dict[str, Any], cell: Cell) -> Path | None:
    """The run folder an earlier attempt at ``cell`` left: the one ``sweep.json`` names, else the newest ``cells/<slug>-*``."""
    if saved.get("folder") and (folder / saved["folder"]).is_dir():
        return folder / saved["folder"]
    found = sorted((folder / CELLS).glob(f"{cell.slug}-*"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _execute(folder: Path, record: dict[str, Any], jobs: list[Job], executor: str, address: str | None,
             gpus_per_cell: float, log: Any, loaded: Any = None) -> SweepResult:
    lock = FileLock(str(folder / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunError(f"another keditlab sweep is running in {folder}. Fix: wait for it, or stop it first") from None
    cells = record["cells"]

    def save() -> None:
        write_json(folder / SWEEP_FILE, record)

    def started(index: int, node: str) -> None:
        cells[index].update(status="running", started=_now(), finished=None, seconds=None, node=node, error=None)
        save()

    def finished(index: int, outcome: dict[str, Any]) -> None:
        cells[index].update(outcome)
        save()
        status = outcome["status"]
        done = sum(cell["status"] == "complete" for cell in cells)
        log(f"[sweep] cell {index} ({cell_label(cells[index])}): {status}"
            + (f" in {outcome['seconds']:.0f} s" if outcome.get("seconds") is not None else "")
            + (f": {outcome['error']}" if outcome.get("error") else "") + f" ({done}/{len(cells)} complete)")

    record.update(status="running", executor=executor, resumed=record.get("status") not in (None, "pending"))
    save()
    try:
        if executor == "ray":
            RayExecutor(address, gpus_per_cell, log).run(folder, jobs, finished)
        else:
            LocalExecutor(log, loaded).run(folder, jobs, started, finished)
        record["status"] = "complete" if all(cell["status"] == "complete" for cell in cells) else "failed"
    except BaseException as exc:
        stopped = "interrupted" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else f"failed: {exc}"
        for cell in cells:
            if cell["status"] == "running":
                cell.update(status="failed", error=f"the sweep stopped ({stopped})", finished=_now())
        record["status"] = "interrupted" if stopped == "interrupted" else "failed"
        raise
    finally:
        record["finished"] = _now()
        save()
        (folder / "table.csv").write_text(merged_csv(folder, record), encoding="utf-8")
        (folder / "table.md").write_text(merged_markdown(folder, record), encoding="utf-8")
        lock.release()
    return SweepResult(folder, record)


def _now() -> str:
    return timestamp(time.time())


def _model_key(spec: Any) -> tuple[Any, ...]:
    return (spec.model.name, spec.model.dtype, spec.model.profile, spec.run.device)


def run_cell(job: Job, cells_dir: Path, *, loaded: Any = None, log: Any = print) -> dict[str, Any]:
    """Run one cell into ``cells_dir`` (continuing ``job.previous`` when it can be); its outcome for ``sweep.json``.

    Never raises for a failing cell: the outcome says ``failed`` with the error.
    Ctrl-C and ``kill`` (KeyboardInterrupt, SystemExit) stop the sweep.
    """
    from keditlab.runner.resume import read_run_folder, resume_run
    from keditlab.runner.run import run_spec

    started = time.time()
    before = {p.name for p in cells_dir.iterdir()}
    outcome: dict[str, Any] = {"started": _now(), "node": socket.gethostname(), "error": None}
    spec = dataclasses.replace(job.spec, name=job.cell.slug)   # the run folder is named after the cell
    try:
        if job.previous is not None and _finished(job.previous):   # killed after its run ended, before sweep.json said so
            outcome.update(status="complete", folder=str(Path(CELLS) / job.previous.name), finished=_now(), seconds=0.0)
            return outcome
        resumable = False
        if job.previous is not None:
            try:
                read_run_folder(job.previous)
                resumable = True
            except Exception:  # noqa: BLE001 - a run that cannot be continued is run again, in a new folder
                resumable = False
        if resumable:
            log(f"[sweep] continuing cell {job.cell.index} in {job.previous}")
            run = resume_run(job.previous, loaded=loaded, log=log)
        else:
            run = run_spec(spec, cells_dir, loaded=loaded, log=log)
        outcome.update(status="complete", folder=str(Path(CELLS) / Path(run.path).name))
    except Exception as exc:  # noqa: BLE001 - one failing cell is recorded, and the sweep goes on
        new = sorted(set(p.name for p in cells_dir.iterdir()) - before)
        outcome.update(status="failed", error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                       folder=str(Path(CELLS) / new[-1]) if new else (str(Path(CELLS) / job.previous.name)
                                                                      if job.previous is not None else None))
    outcome.update(finished=_now(), seconds=round(time.time() - started, 3))
    return outcome


def _finished(folder: Path) -> bool:
    """True when the run folder holds a complete run (read by the one reader of run folders, ``load_run``)."""
    from keditlab.runner.result import load_run

    try:
        return load_run(folder).status == "complete"
    except (OSError, ValueError):
        return False


class LocalExecutor:
    """Cells one after another in this process, sharing the loaded model between cells on the same model."""

    def __init__(self, log: Any = print, loaded: Any = None) -> None:
        self.log, self.loaded = log, loaded

    def run(self, folder: Path, jobs: list[Job], started: Callable[[int, str], None],
            finished: Callable[[int, dict[str, Any]], None]) -> None:
        from keditlab.models import load_model

        held: tuple[tuple[Any, ...], Any] | None = None
        first = {key: n for n, key in reversed(list(enumerate(_model_key(job.spec) for job in jobs)))}
        order = sorted(jobs, key=lambda job: first[_model_key(job.spec)])   # each model's cells together, grid order kept
        for job in order:
            started(job.cell.index, socket.gethostname())
            key = _model_key(job.spec)
            if self.loaded is not None and job.spec.model.name == self.loaded.name:   # the caller's model
                held = ("given", self.loaded)
            elif held is None or held[0] != key:
                held = None   # one model at a time: the last one is let go before the next loads
                try:
                    self.log(f"Loading {job.spec.model.name} …")
                    held = (key, load_model(job.spec.model.name, device=job.spec.run.device, dtype=job.spec.model.dtype,
                                            profile=job.spec.model.profile))
                except Exception as exc:  # noqa: BLE001 - a model that cannot load fails its cells, not the sweep
                    finished(job.cell.index, {"status": "failed", "error": str(exc).splitlines()[0], "folder": None,
                                              "finished": _now(), "seconds": 0.0})
                    continue
            outcome = run_cell(job, folder / CELLS, loaded=held[1], log=self.log)
            if outcome["status"] != "complete":
                held = None   # reload after a failure: the next cell starts from weights read afresh
            finished(job.cell.index, outcome)


def _ray_cell(spec: Any, cell: Cell, previous_tar: bytes | None, threads: int) -> dict[str, Any]:
    """A Ray task: run one cell on this node in a scratch folder; its outcome, with the run folder packed."""
    import torch

    torch.set_num_threads(max(1, threads))
    with tempfile.TemporaryDirectory(prefix="keditlab-cell-") as scratch:
        cells_dir = Path(scratch)
        previous = _unpack(previous_tar, cells_dir) if previous_tar else None
        outcome = run_cell(Job(cell, spec, previous), cells_dir, log=lambda message: print(f"[cell {cell.index}] {message}", flush=True))
        if outcome.get("folder"):
            outcome["tar"] = _pack(cells_dir / Path(outcome["folder"]).name)
        return outcome


def _pack(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return buffer.getvalue()


def _unpack(data: bytes, into: Path) -> Path:
    """Unpack a packed run folder into ``into`` (as a new folder: an existing one is never written over)."""
    scratch = Path(tempfile.mkdtemp(prefix=".unpack-", dir=into))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            tar.extractall(scratch, filter="data")
        (inner,) = scratch.iterdir()
        target = into / inner.name
        n = 1
        while target.exists():
            n += 1
            target = into / f"{inner.name}-{n}"
        os.rename(inner, target)
        return target
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class RayExecutor:
    """Each cell a Ray task (one GPU, or ``gpus_per_cell``, for a CUDA cell; one CPU otherwise)."""

    def __init__(self, address: str | None = None, gpus_per_cell: float = 1.0, log: Any = print) -> None:
        self.address, self.gpus_per_cell, self.log = address, gpus_per_cell, log

    def _ray(self) -> Any:
        try:
            import ray
        except ImportError:
            raise RunError('the ray executor needs Ray. Fix: pip install "keditlab[ray]", or run the sweep with '
                           "--executor local") from None
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=True)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise RunError(f"cannot reach the Ray cluster at {self.address or 'a new local cluster'}: "
                               f"{str(exc).splitlines()[0]}. Fix: start it (`ray start --head`, docs/sweeps.md), or give "
                               "its address with --address") from None
        return ray

    def run(self, folder: Path, jobs: list[Job], finished: Callable[[int, dict[str, Any]], None]) -> None:
        ray = self._ray()
        gpus = ray.cluster_resources().get("GPU", 0)
        task = ray.remote(max_retries=0)(_ray_cell)
        pending: dict[Any, Job] = {}
        for job in jobs:
            spec, options, threads = self._placement(job.spec, gpus)
            previous = _pack(job.previous) if job.previous is not None and job.previous.is_dir() else None
            pending[task.options(**options).remote(spec, job.cell, previous, threads)] = job
        self.log(f"[sweep] {len(pending)} cells sent to Ray ({ray.cluster_resources().get('CPU', 0):.0f} CPUs, "
                 f"{gpus:.0f} GPUs)")
        try:
            while pending:
                (ready,), _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(ready)
                try:
                    outcome = ray.get(ready)
                except Exception as exc:  # noqa: BLE001 - the task itself died (its node lost, out of memory)
                    outcome = {"status": "failed", "error": f"the Ray task failed: {str(exc).splitlines()[0]}",
                               "folder": None, "finished": _now(), "seconds": None}
                packed = outcome.pop("tar", None)
                if packed is not None:
                    outcome["folder"] = str(Path(CELLS) / _unpack(packed, folder / CELLS).name)
                finished(job.cell.index, outcome)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def _placement(self, spec: Any, gpus: float) -> tuple[Any, dict[str, Any], int]:
        """The spec as the task runs it, the task's resources, and its torch threads."""
        device = spec.run.device
        cuda = device.startswith("cuda") or (device == "auto" and gpus > 0)
        if cuda:
            if device == "auto":
                spec = dataclasses.replace(spec, run=dataclasses.replace(spec.run, device="cuda"))
            return spec, {"num_gpus": self.gpus_per_cell, "num_cpus": 1}, 1
        if device == "auto":
            spec = dataclasses.replace(spec, run=dataclasses.replace(spec.run, device="cpu"))
        return spec, {"num_cpus": 1}, 1
