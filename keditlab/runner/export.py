"""``keditlab export RUN --method NAME --out DIR``: an edited model as a plain transformers folder.

A run with ``run.save_edits: true`` keeps each method call's edits under
``edits/<method>/call-NNNN`` (:mod:`keditlab.methods.saved`).  Exporting loads
the run's model as the run loaded it (its manifest names model and dtype),
loads the saved calls into it, and writes the result with ``save_pretrained``
(weights, config, tokenizer), so that anyone can use the edited model without
keditlab::

    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained("edited-model")

Which calls: in a ``sequential`` run every call, in order (the model the run
ended with); in ``single`` and ``batch`` runs each call was made on the
unedited model, so one is chosen (``--call N``, or ``--case ID`` for the call
that made that edit), unless the run made only one.  ``DIR`` must not exist:
nothing is overwritten.  ``keditlab-export.json`` in it says where it came from.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from keditlab.runner.folder import safe_name
from keditlab.runner.schedule import RunError


def saved_calls(run_folder: Path, method: str) -> list[Path]:
    """The saved calls of ``method`` (its label) in the run, in the order they were made."""
    root = run_folder / "edits"
    folder = root / safe_name(method)
    if not folder.is_dir():
        saved = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        raise RunError(f"the run in {run_folder} saved no edits of method {method!r}"
                       + (f" (it saved: {', '.join(saved)})" if saved else " (it ran without run.save_edits: true)")
                       + ". Fix: name a method it saved, or run the spec again with `run: {save_edits: true}`.")
    return sorted(p for p in folder.glob("call-*") if (p / "edits.json").is_file())


def export_run(run_folder: str | Path, method: str, out: str | Path, *, call: int | None = None, case: str | None = None,
               log: Any = print) -> Path:
    """Write the model the run's ``method`` made (module docstring) to ``out``; returns ``out``."""
    from keditlab.methods.saved import load_edits, read_saved
    from keditlab.models import load_model

    run_folder, out = Path(run_folder).expanduser(), Path(out).expanduser()
    if out.exists():
        raise RunError(f"{out} already exists; an export never overwrites. Fix: choose a new --out folder.")
    try:
        manifest = json.loads((run_folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(f"{run_folder} is not a readable run folder ({exc}). Fix: pass the folder a run wrote.") from None
    calls = saved_calls(run_folder, method)
    mode = manifest.get("spec", {}).get("run", {}).get("mode", "single")
    if case is not None:
        calls = [p for p in calls if case in read_saved(p)["cases"]]
        if not calls:
            raise RunError(f"no saved call of {method!r} in {run_folder} made the edit {case!r}. Fix: give a case id "
                           "from the run's cases.jsonl.")
    elif call is not None:
        calls = [p for p in calls if p.name == f"call-{call:04d}"]
        if not calls:
            raise RunError(f"{method!r} has no saved call {call} in {run_folder}. Fix: give one of the call-NNNN numbers "
                           f"under {run_folder / 'edits' / safe_name(method)}.")
    elif mode != "sequential" and len(calls) > 1:
        raise RunError(f"this {mode} run made {len(calls)} calls of {method!r}, each on the unedited model, so no one model "
                       "holds them all. Fix: choose one with --call N or --case ID (a sequential run exports whole).")
    if not calls:
        raise RunError(f"the run in {run_folder} saved no completed call of {method!r}. Fix: resume it first.")

    model_facts = manifest.get("model", {})
    dtype = str(model_facts.get("dtype", "torch.float32")).removeprefix("torch.")
    log(f"Loading {model_facts.get('name')} ({dtype}) …")
    spec_model = manifest.get("spec", {}).get("model", {})
    model, tokenizer, _ = load_model(model_facts["name"], device="auto", dtype=dtype,
                                     profile=spec_model.get("profile") if isinstance(spec_model, dict) else None)
    for saved in calls:
        log(f"Loading the saved edits of {saved.relative_to(run_folder)} …")
        load_edits(model, saved)
    staging = Path(tempfile.mkdtemp(dir=out.parent if out.parent.exists() else None, prefix=f".{out.name}."))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "keditlab-export.json").write_text(json.dumps({
            "run": str(run_folder.resolve()), "method": method, "calls": [p.name for p in calls],
            "cases": [c for p in calls for c in read_saved(p)["cases"]], "model": model_facts.get("name"), "dtype": dtype,
        }, indent=2) + "\n", encoding="utf-8")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), str(out))
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out
