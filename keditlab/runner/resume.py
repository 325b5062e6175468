"""Resume a run that stopped: ``keditlab run --resume RUN_FOLDER`` and :func:`resume_run`.

A run writes each case's record to ``cases.jsonl`` as soon as it is measured
(:mod:`keditlab.runner.run`), so a run that was killed (SIGKILL, a lost Colab
machine), interrupted or failed still holds what it measured.  Resuming reads
the resolved spec back from ``manifest.json`` and runs it again *into the same
folder*, skipping the work whose records are complete:

* the schedule (:mod:`keditlab.runner.schedule`) is cut into **segments**, each
  ending where the model is restored: in ``single`` and ``batch`` mode one
  segment per edit or batch, in ``sequential`` mode one per method (the whole
  stream: the edits a later measurement sees are all on the model);
* a segment is **done** for a method when every case it measures has its record
  at that measurement (or a record that its edit failed); its records are kept
  and counted into the summary exactly as they were;
* every other record is dropped (a half-written last line included) and its
  segment runs again;
* except that a sequential stream whose calls were saved (``run.save_edits``,
  :mod:`keditlab.methods.saved`) resumes from its **checkpoint**: the last
  measurement whose records are complete, all calls before it saved.  Those
  calls are loaded instead of made, with the details and seconds they were
  made with, and the stream goes on.  A method that keeps memory between calls
  (AlphaEdit's earlier keys, UltraEdit's running statistics, LocFT-BF's anchors)
  has that memory saved with each call (``memory.pt``, kept for the latest
  checkpoint only) and loaded with the checkpoint's last call; without it (a
  run saved by an older keditlab) its stream runs again from the start.

Each method call is seeded the same way whether or not the calls before it ran
in this process (:func:`keditlab.runner.run.seed_call`), so the resumed run's
summary is the one an uninterrupted run gives (the timings aside):
``tests/integration/test_resume_real.py`` kills a run with SIGKILL and checks it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keditlab.runner.schedule import Apply, Measure, Restore, RunError, Step
from keditlab.runner.summary import MethodTally, build_summary


@dataclass
class Resumed:
    """What a resumed run starts from: its folder, manifest, and per method the segments already done."""

    folder: Path
    manifest: dict[str, Any]
    records: list[dict[str, Any]]                                  # every readable record in cases.jsonl, in file order
    done: dict[str, set[int]] = field(default_factory=dict)        # method label -> done segment numbers
    kept: list[dict[str, Any]] = field(default_factory=list)       # the records of done segments, in file order
    replay: dict[str, int] = field(default_factory=dict)           # label -> last step its checkpoint covers (sequential)
    refused: dict[str, set[str]] = field(default_factory=dict)     # label -> case ids whose call was refused

    def plan(self, labels: list[str], steps: list[Step], case_ids: list[str], checkpoints: bool = False) -> None:
        """Work out ``done``, ``kept`` and (with ``checkpoints``: a sequential run that saved its calls) ``replay``
        for the methods ``labels`` following ``steps`` over cases ``case_ids``."""
        parts = segments(steps)
        for label in labels:
            mine = [r for r in self.records if r.get("method") == label]
            measured = {(r.get("point"), r.get("case_id")) for r in mine if "failed" not in r}
            failed = {(r.get("batch"), r.get("case_id")) for r in mine if "failed" in r}
            self.done[label] = set()
            for number, part in enumerate(parts):
                batches = {step.cases: step.batch for step in part if isinstance(step, Apply)}
                batch_of = {i: batch for cases, batch in batches.items() for i in cases}
                complete = all((step.point, case_ids[i]) in measured or (batch_of.get(i), case_ids[i]) in failed
                               for step in part if isinstance(step, Measure) for i in step.cases)
                if complete:
                    self.done[label].add(number)
        points = {label: {step.point for n in self.done[label] for step in parts[n] if isinstance(step, Measure)}
                  for label in labels}
        batches = {label: {step.batch for n in self.done[label] for step in parts[n] if isinstance(step, Apply)}
                   for label in labels}
        for label in labels:
            self.refused[label] = {r.get("case_id") for r in self.records if r.get("method") == label and "failed" in r}
            if checkpoints and not self.done[label]:
                self.replay[label] = self._checkpoint(label, steps, case_ids)
                covered = steps[:self.replay[label] + 1]
                points[label] |= {step.point for step in covered if isinstance(step, Measure)}
                batches[label] |= {step.batch for step in covered if isinstance(step, Apply)}
        self.kept = [r for r in self.records if r.get("method") in self.done and (
            r.get("batch") in batches[r["method"]] if "failed" in r else r.get("point") in points[r["method"]])]

    def _checkpoint(self, label: str, steps: list[Step], case_ids: list[str]) -> int:
        """The last step of a sequential stream that can be stood in for: every call up to it saved (or refused,
        with its records), every measurement up to it recorded, and, for a method that keeps memory between
        calls, that memory saved with the last call before it (``memory.pt``; the run keeps the latest
        checkpoint's only).  ``-1``: none, and the stream is done again from its start."""
        from keditlab.methods.saved import MEMORY, read_saved
        from keditlab.runner.folder import saved_call

        mine = [r for r in self.records if r.get("method") == label]
        measured = {(r.get("point"), r.get("case_id")) for r in mine if "failed" not in r}
        refused = {r.get("case_id") for r in mine if "failed" in r}
        last, memory_saved = -1, True
        for index, step in enumerate(steps):
            if isinstance(step, Apply):
                if all(case_ids[i] in refused for i in step.cases):
                    continue            # rolled back: the memory is the previous call's
                folder = saved_call(self.folder, label, step.batch)
                try:
                    call = read_saved(folder).get("call", {})
                except ValueError:      # not saved (the kill came first) or damaged
                    break
                memory_saved = not call.get("memory_between_calls", True) or (folder / MEMORY).is_file()
            elif isinstance(step, Measure):
                if not all((step.point, case_ids[i]) in measured or case_ids[i] in refused for i in step.cases):
                    break
                if memory_saved:
                    last = index
        return last


def segments(steps: list[Step]) -> list[list[Step]]:
    """The schedule cut after each ``Restore``: the pieces that start and end on the unedited model."""
    parts: list[list[Step]] = [[]]
    for step in steps:
        parts[-1].append(step)
        if isinstance(step, Restore):
            parts.append([])
    return [part for part in parts if part]


def read_run_folder(folder: str | Path) -> tuple[dict[str, Any], Resumed]:
    """The spec data and the :class:`Resumed` state of the run in ``folder``; a folder that cannot be resumed is a
    :class:`RunError` naming why and what to do."""
    folder = Path(folder).expanduser()
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise RunError(f"{folder} is not a run folder (no manifest.json). Fix: pass the folder a run wrote "
                       "(printed as 'results: ...' or named when it stopped, under runs/ by default).")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        spec_data = manifest["spec"]
    except (ValueError, KeyError, TypeError) as exc:
        raise RunError(f"{manifest_path} cannot be read ({type(exc).__name__}: {exc}), so the run's spec is unknown. "
                       "Fix: run its spec again into a new folder.") from None
    if manifest.get("status") == "complete":
        raise RunError(f"the run in {folder} is complete: there is nothing to resume. Fix: open it with "
                       f"`keditlab show {folder}`, or run its spec again for a new run.")
    return spec_data, Resumed(folder, manifest, read_records(folder / "cases.jsonl"))


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records in ``cases.jsonl``; a last line cut short by the kill is left out (its segment runs again)."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            if number == len(lines):   # the last line, without its newline: it was being written
                break
            raise RunError(f"{path}, line {number}, is not a JSON record, so the run cannot be resumed safely. "
                           "Fix: run its spec again into a new folder.") from None
    return records


def tallies_from_records(tallies: dict[str, MethodTally], records: list[dict[str, Any]],
                         last_point: dict[tuple[str, str], int]) -> None:
    """Count ``records`` into the methods' ``tallies`` the way the run loop counted them when they were measured.

    ``last_point[(label, case_id)]`` is the measurement whose scores the case's means take (its last).
    """
    counted_batches: set[tuple[str, int]] = set()
    points: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for record in records:
        label = record["method"]
        tally = tallies[label]
        if "failed" in record:
            tally.add_failed(1)
            continue
        if (label, record["batch"]) not in counted_batches:
            counted_batches.add((label, record["batch"]))
            tally.add_batch(record["batch_size"], record["batch_edit_seconds"], record["setup_seconds"] * record["batch_size"])
        points.setdefault((label, record["point"]), []).append(record)
        if last_point.get((label, record["case_id"])) == record["point"]:
            pre = {(s["metric"], s["protocol"]): s["pre"] for s in record["scores"] if s["pre"] is not None}
            post = {(s["metric"], s["protocol"]): s["post"] for s in record["scores"] if s["post"] is not None}
            tally.add_case(pre, post, [w["code"] for w in record.get("warnings", [])])
    for (label, _), measured in points.items():
        posts = [{(s["metric"], s["protocol"]): s["post"] for s in r["scores"] if s["post"] is not None} for r in measured]
        tallies[label].add_point(measured[0]["edits_applied"], posts, sum(r["eval_seconds"] for r in measured))


def partial_summary(manifest: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary of what a run that wrote none (killed outright, or still going on) has recorded so far.

    Each case counts at its latest measurement in ``records``; a sequential run's curve has the
    measurements recorded.  Its ``status`` is the manifest's (``running``); ``measured`` counts the
    records.  Read from the folder alone: no model, no schedule.
    """
    spec = manifest.get("spec") or {}
    run = spec.get("run") or {}
    tallies = {label: MethodTally(facts.get("name", label), facts.get("settings", {}), run.get("mode", "single"),
                                  run.get("batch_size", 1), run.get("evaluate_at"))
               for label, facts in (manifest.get("methods") or {}).items()}
    records = [r for r in records if r.get("method") in tallies]
    last: dict[tuple[str, str], int] = {}
    for record in records:
        if "failed" not in record:
            key = (record["method"], record["case_id"])
            last[key] = max(last.get(key, -1), record["point"])
    tallies_from_records(tallies, records, last)
    edits = manifest.get("edits") or {}
    summary = build_summary(spec.get("name", "run"), (manifest.get("model") or {}).get("name", "?"), edits.get("count", 0),
                            tallies, dataset=edits.get("format"))
    summary["status"] = manifest.get("status", "running")
    summary["measured"] = len(records)
    return summary


def resume_run(folder: str | Path, *, loaded: Any = None, log: Any = print) -> Any:
    """Continue the run saved in ``folder`` to the result an uninterrupted run gives (module docstring).

    ``loaded``: the model to run on (a :class:`~keditlab.models.LoadedModel`), as for
    :func:`~keditlab.runner.run.run_spec`; by default the spec's model is loaded::

        run = keditlab.resume_run("runs/lifelong-20260101-120000")
    """
    from keditlab.runner.run import run_spec
    from keditlab.spec import spec_from_dict

    spec_data, resumed = read_run_folder(folder)
    spec = spec_from_dict(spec_data, source=str(resumed.folder / "manifest.json"))
    return run_spec(spec, None, loaded=loaded, log=log, resume=resumed)
