"""Lifelong editing on real ZsRE records: ``specs/lifelong.yaml`` through the runner, one method at a time.

Prints each method's table (teacher-forced reliability, generalization and
locality over every edit of the stream after the last, and under it the
retention curve of the spec's ``evaluate_at``) and the seconds spent editing
(one-off set-up and evaluation apart); asserts nothing.  ``docs/methods.md``
holds the tables this printed.

Usage (``make bench BENCH=lifelong BENCH_ARGS="--methods ultraedit --limit 1000"``)::

    python benchmarks/lifelong.py [--methods grace,wise,ultraedit,locft-bf,alphaedit] [--limit 1000]
                                  [--batch-size 100] [--every 100] [--model gemma3-270m] [--out runs/bench]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The spec's published files are read from the shared benchmark files beside the checkout when there
# (as benchmarks/rome_real.py reads its files), else downloaded on first run.
if (ROOT.parent / "shared" / "datasets").is_dir():
    os.environ.setdefault("KEDITLAB_DATASETS", str(ROOT.parent / "shared" / "datasets"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default=str(ROOT / "specs" / "lifelong.yaml"))
    parser.add_argument("--model", default=None, help="the model to edit instead of the spec's (e.g. gemma3-270m)")
    parser.add_argument("--methods", default="", help="comma-separated; empty: the spec's")
    parser.add_argument("--limit", type=int, default=None, help="how many records of the stream (empty: the spec's)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--every", type=int, default=None)
    parser.add_argument("--out", default="runs/bench")
    args = parser.parse_args()

    import torch

    from keditlab.data.datasets import dataset_cases
    from keditlab.runner import run_spec
    from keditlab.spec import load_spec
    from keditlab.spec.types import MethodSpec

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 2)))   # OMP_NUM_THREADS=1 for runs side by side
    spec = load_spec(args.spec)
    if args.limit is not None and spec.edits_from is not None:   # re-read: the spec's own limit may be smaller
        source, skipped = dataclasses.replace(spec.edits_from, limit=args.limit), []
        edits = dataset_cases(source.format, source.path, limit=source.limit, offset=source.offset, sample=source.sample,
                              on_bad_record=source.on_bad_record, skipped=skipped)
        spec = dataclasses.replace(spec, edits=tuple(edits), edits_from=dataclasses.replace(source, skipped=tuple(skipped)))
    elif args.limit is not None:
        spec = dataclasses.replace(spec, edits=spec.edits[: args.limit])
    settings = {}
    if args.batch_size is not None:
        settings["batch_size"] = args.batch_size
    if args.every is not None:
        settings["evaluate_at"] = {"every": args.every}
    if settings:
        spec = dataclasses.replace(spec, run=dataclasses.replace(spec.run, **settings))
    if args.model:
        spec = dataclasses.replace(spec, model=dataclasses.replace(spec.model, name=args.model))
    named = {m.label: m for m in spec.methods}            # the spec's settings for a method it lists
    methods = [m for m in args.methods.split(",") if m] or list(named)
    for method in methods:
        one = dataclasses.replace(spec, name=f"lifelong-{method}", methods=(named.get(method, MethodSpec(method)),))
        started = time.time()
        run = run_spec(one, out=args.out, log=lambda *a: None)
        timings = json.loads((Path(run.path) / "summary.json").read_text())["methods"][method]["timings"]
        print(run.table())      # the final row and, under it, the retention curve
        print(f"{method}: {len(one.edits)} edits in {timings['edit_seconds_total']:.0f} s of editing "
              f"(one-off set-up {timings['setup_seconds_total']:.0f} s, evaluation {timings['eval_seconds_total']:.0f} s)")
        print(f"({time.time() - started:.0f} s in all; {run.path})\n", flush=True)


if __name__ == "__main__":
    main()
