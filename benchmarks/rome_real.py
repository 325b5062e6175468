"""ROME with its defaults on real benchmark records, beside the reference toolkit's figures.

    python benchmarks/rome_real.py                  # the ten reference edits + CounterFact records 0-49
    python benchmarks/rome_real.py --counterfact 20 --threads 2

Reads the shared benchmark files (``../shared/datasets`` beside the checkout, or
``$KEDITLAB_DATASETS``); nothing is copied into the repository.  Prints, per set:
teacher-forced reliability, generalization, locality and portability (the post-edit
means, as ``keditlab run`` reports them), the probability-protocol reliability,
how many edits did not make the model *say* the target, and seconds per edit.

Timing is measured the way the reference's figure was (``reference/README.md``):
one torch thread, edit time only (evaluation apart), after one warm-up edit that
pays for the one-off statistics and context prefixes.  The ratio printed is the
reference toolkit's 77.0 s per ROME edit over keditlab's, measured in this run for
keditlab and taken from the reference README for the toolkit (it cannot run here).
Figures are printed, never asserted: machines are noisy.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import torch

import keditlab
from keditlab.data import counterfact_cases, easyedit_cases
from keditlab.runner import run_spec
from keditlab.spec.types import EvalSpec, MethodSpec, ModelSpec, Spec

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("KEDITLAB_DATASETS", ROOT.parent / "shared" / "datasets"))

#: The reference toolkit (EasyEdit) on the ten reference edits, same model and machine
#: (shared/datasets/reference/README.md): teacher-forced means and seconds per edit.
REFERENCE = {"rome": {"reliability": 1.00, "generalization": 0.20, "locality": 1.00, "portability": 0.14, "seconds": 77.0},
             "ft-m": {"reliability": 1.00, "generalization": 0.10, "locality": 0.70, "portability": 0.10, "seconds": 6.7}}


def edit_sets(counterfact: int, reference: bool = True) -> dict[str, list]:
    sets = {"reference (10 edits)": easyedit_cases(DATASETS / "reference" / "baseline_10_edits.json")} if reference else {}
    if counterfact:
        sets[f"CounterFact 0-{counterfact - 1}"] = counterfact_cases(DATASETS / "counterfact" / "counterfact_500.json", limit=counterfact)
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", nargs="+", default=["rome"])
    parser.add_argument("--counterfact", type=int, default=50, help="CounterFact records to edit (0: none)")
    parser.add_argument("--no-reference", action="store_true", help="skip the ten reference edits")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the reference figures used 1)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="method settings, e.g. layer=4")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = {k: _value(v) for k, v in (item.split("=", 1) for item in args.set)}

    loaded = keditlab.load_model("smollm2-135m")
    metrics = ("reliability", "generalization", "locality", "portability")
    print(f"{'method':6} {'set':22} {'rel':>5} {'gen':>5} {'loc':>5} {'port':>5} {'prob':>5} {'not said':>9} {'edit s':>7} {'vs ref':>7}")
    for name in args.method:
        for label, cases in edit_sets(args.counterfact, not args.no_reference).items():
            spec = Spec(name=label, model=ModelSpec(), methods=(MethodSpec(name, dict(settings)),), edits=tuple(cases),
                        evaluate=EvalSpec(metrics=metrics))
            warm = time.perf_counter()
            run_spec(dataclasses.replace(spec, edits=tuple(cases[:1])), None, loaded=loaded, log=lambda _m: None)
            warm = time.perf_counter() - warm
            run = run_spec(spec, None, loaded=loaded, log=lambda _m: None)
            summary = run.summary["methods"][name]
            seconds = summary["timings"]["edit_seconds_mean"]
            reference = REFERENCE.get(name, {}).get("seconds")
            values = [_metric(run, name, m) for m in metrics]
            print(f"{name:6} {label:22} " + " ".join("    —" if v is None else f"{v:5.2f}" for v in values)
                  + f" {_metric(run, name, 'reliability', 'probability') or 0:5.2f} {summary['warnings']['target_not_said']:>4}/{len(cases):<4}"
                  + f" {seconds:7.1f} " + (f"{reference / seconds:6.1f}x" if reference else "      —")
                  + f"   (warm-up edit incl. one-off set-up: {warm:.0f} s)", flush=True)
    print("reference toolkit on the ten reference edits (README): " + ", ".join(
        f"{m}: rel {r['reliability']:.2f} gen {r['generalization']:.2f} loc {r['locality']:.2f} port {r['portability']:.2f}, {r['seconds']} s/edit"
        for m, r in REFERENCE.items() if m in args.method))


def _metric(run, method: str, metric: str, protocol: str = "teacher_forced"):
    """The post-edit mean, or None where no edit of the set has probes of that metric (CounterFact has no portability)."""
    try:
        return run.metric(method, metric, protocol)
    except KeyError:
        return None


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


if __name__ == "__main__":
    main()
