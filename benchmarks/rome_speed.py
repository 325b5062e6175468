"""Seconds per edit, with evaluation, on the embedded model; optionally a layer scan.

    python benchmarks/rome_speed.py                       # rome and ft-m on the quickstart edits
    python benchmarks/rome_speed.py --method rome --layers 2 5 8 12

Prints, per method and layer: post-edit reliability, generalization, locality
(teacher-forced means over the quickstart's edits), seconds to edit and to
evaluate per edit, and the ratio to the reference toolkit's ~49 s per ROME edit
with its evaluation on a 2-core CPU (the figure in keditlab's developer brief).
Timings are measured, never asserted: machines are noisy.  The first run also
pays for the covariance statistics (cached afterwards); they are reported
separately.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import keditlab
from keditlab.runner import run_spec

REFERENCE_SECONDS_PER_ROME_EDIT = 49.0
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", nargs="+", default=["rome", "ft-m"])
    parser.add_argument("--layers", nargs="*", type=int, default=[], help="layers to scan (default: each method's default)")
    parser.add_argument("--spec", default=str(ROOT / "specs" / "quickstart.yaml"))
    args = parser.parse_args()

    base = keditlab.load(args.spec)
    loaded = keditlab.load_model(base.model.name)
    print(f"{'method':8} {'layer':>5} {'rel':>5} {'gen':>5} {'loc':>5} {'edit s':>7} {'eval s':>7} {'vs 49 s':>8}")
    for name in args.method:
        layer_key = "layer" if name == "rome" else "layers"
        for layer in args.layers or [None]:
            params = {} if layer is None else {layer_key: layer if name == "rome" else [layer]}
            method = dataclasses.replace(base.methods[0], name=name, params=params, label=name)
            spec = dataclasses.replace(base, methods=(method,))
            # one warm-up edit pays for statistics and context prefixes, so the timings below are per edit
            start = time.perf_counter()
            run_spec(dataclasses.replace(spec, edits=spec.edits[:1]), None, loaded=loaded, log=lambda _m: None)
            warmup = time.perf_counter() - start
            run = run_spec(spec, None, loaded=loaded, log=lambda _m: None)
            timings = run.summary["methods"][name]["timings"]
            per_edit = timings["edit_seconds_mean"] + timings["eval_seconds_mean"]
            print(
                f"{name:8} {str(layer if layer is not None else 'def'):>5} "
                f"{run.metric(name, 'reliability'):5.2f} {run.metric(name, 'generalization'):5.2f} {run.metric(name, 'locality'):5.2f} "
                f"{timings['edit_seconds_mean']:7.1f} {timings['eval_seconds_mean']:7.1f} "
                f"{REFERENCE_SECONDS_PER_ROME_EDIT / per_edit:7.1f}x   (warm-up incl. statistics: {warmup:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
