"""MEMIT, EMMET and AlphaEdit (and r-ROME) on real CounterFact records: speed per batch size, and the acceptance runs.

Two parts, both printing figures and asserting nothing (``docs/performance.md``
and ``docs/methods.md`` hold the tables this printed):

``speed``
    For each method and each batch size (default 1, 10 and 100): the seconds
    per edit (edit time only; one-off statistics and prefixes excluded and
    warmed up first), the peak memory of the process, and teacher-forced
    reliability, generalization and locality of the edits.  Each
    configuration runs in its own process, so peak memory is its own.  Batch
    size 1 is timed on ``--singles`` records (single edits cost the same
    whichever record they are, so fewer than 100 are enough for a
    per-edit figure; the printed ratio says how many were timed).

``runs``
    The acceptance runs through the runner (run folders under ``--out``):
    one batch of ``--records`` edits per method; a sequential stream of
    ``--stream`` edits in batches of 10 evaluated after all; r-ROME with
    batches of 1 on ``--rrome`` records.  Fluency is measured before and after.

Usage (``make bench BENCH=locate_then_edit BENCH_ARGS="speed --methods memit"``)::

    python benchmarks/locate_then_edit.py speed [--methods memit,emmet,alphaedit] [--sizes 1,10,100] [--singles 10]
    python benchmarks/locate_then_edit.py runs [--records 100] [--stream 200] [--rrome 50] [--only batch,sequential,rrome] [--stream-methods alphaedit,memit]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("KEDITLAB_DATASETS", ROOT.parent / "shared" / "datasets"))
COUNTERFACT = DATASETS / "counterfact" / "counterfact_500.json"
TF_METRICS = ("reliability", "generalization", "locality")


def _cases(limit: int, offset: int = 0):
    from keditlab.data.records import counterfact_cases

    return counterfact_cases(str(COUNTERFACT), limit=limit, offset=offset)


def worker(method: str, size: int, count: int, threads: int) -> dict:
    """One configuration in this process: ``count`` records edited in batches of ``size`` (each batch alone)."""
    import torch

    from keditlab.evaluate import measure
    from keditlab.evaluate.measurement import mean_scores
    from keditlab.methods import EditContext, get_method
    from keditlab.models import load_model
    from keditlab.spec.types import EvalSpec
    from keditlab.stats import CovarianceProvider

    torch.set_num_threads(threads)
    model, tokenizer, profile = load_model("smollm2-135m")
    cases = _cases(count)
    evaluate = EvalSpec(metrics=TF_METRICS, batch_size=64)
    context = EditContext(covariance=CovarianceProvider(model, tokenizer, profile), progress=False)
    editor = get_method(method)
    # warm-up: statistics, prefixes and first-call costs, on a record outside the measured ones
    editor.apply(model, tokenizer, profile, _cases(1, offset=300), {}, context).restore()
    before = measure(model, tokenizer, cases, evaluate)
    seconds, posts = 0.0, []
    for start in range(0, len(cases), size):
        batch, pre = cases[start:start + size], before[start:start + size]
        handle = editor.apply(model, tokenizer, profile, batch, {}, context)
        seconds += handle.seconds
        posts += measure(model, tokenizer, batch, evaluate, reference=pre)
        handle.restore()
    scores = mean_scores(posts)
    return {
        "method": method, "batch_size": size, "edits": len(cases), "seconds_per_edit": seconds / len(cases),
        "device": torch.cuda.get_device_name() if model.device.type == "cuda" else "CPU",
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if model.device.type == "cuda" else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **{m: scores.get((m, "teacher_forced")) for m in TF_METRICS},
    }


def speed(args: argparse.Namespace) -> None:
    rows = []
    for method in args.methods.split(","):
        for size in [int(s) for s in args.sizes.split(",")]:
            count = args.singles if size == 1 else size
            print(f"{method}: {count} edits in batches of {size} …", file=sys.stderr, flush=True)
            out = subprocess.run([sys.executable, __file__, "worker", method, str(size), str(count), str(args.threads)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}; "
          f"model smollm2-135m (fp32, {rows[0]['device'] if rows else '?'}); CounterFact records from 0.\n")
    print("| method | batch size | edits timed | s/edit | peak memory (MB) | peak GPU memory (MB) | reliability | generalization | locality |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        gpu = "-" if r.get("peak_gpu_mb") is None else f"{r['peak_gpu_mb']:.0f}"
        print(f"| {r['method']} | {r['batch_size']} | {r['edits']} | {r['seconds_per_edit']:.2f} | {r['peak_rss_mb']:.0f} | {gpu} | "
              f"{r['reliability']:.2f} | {r['generalization']:.2f} | {r['locality']:.2f} |")
    for method in args.methods.split(","):
        per = {r["batch_size"]: r["seconds_per_edit"] for r in rows if r["method"] == method}
        if 1 in per and max(per) > 1:
            big = max(per)
            print(f"\n{method}: a batch of {big} costs {per[big] * big:.0f} s; {big} single edits cost {per[1] * big:.0f} s "
                  f"({per[1]:.2f} s each, timed on {args.singles}); ratio {per[big] / per[1]:.2f}")


def runs(args: argparse.Namespace) -> None:
    from keditlab.runner import run_spec
    from keditlab.spec.types import EvalSpec, MethodSpec, ModelSpec, RunSettings, Spec

    evaluate = EvalSpec(metrics=("reliability", "generalization", "locality", "fluency"))
    plans = {
        "batch": [(f"batch{args.records}", ("memit", "emmet", "alphaedit"), _cases(args.records), RunSettings(mode="batch", batch_size=args.records))],
        "sequential": [(f"sequential{args.stream}", tuple(args.stream_methods.split(",")), _cases(args.stream),
                        RunSettings(mode="sequential", batch_size=10, evaluate_at="after_all"))],
        "rrome": [(f"rrome{args.rrome}", ("r-rome",), _cases(args.rrome), RunSettings(mode="sequential", batch_size=1, evaluate_at="after_all"))],
    }
    for part in args.only.split(","):
        for name, methods, cases, settings in plans[part]:
            spec = Spec(name=name, model=ModelSpec(), methods=tuple(MethodSpec(m) for m in methods), edits=tuple(cases),
                        evaluate=evaluate, run=settings)
            started = time.time()
            run = run_spec(spec, out=args.out, log=lambda *a: None)
            print(run.table())
            print(f"({time.time() - started:.0f} s; {run.path})\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--methods", default="memit,emmet,alphaedit")
    s.add_argument("--sizes", default="1,10,100")
    s.add_argument("--singles", type=int, default=10)
    s.add_argument("--threads", type=int, default=2)
    r = sub.add_parser("runs")
    r.add_argument("--records", type=int, default=100)
    r.add_argument("--stream", type=int, default=200)
    r.add_argument("--rrome", type=int, default=50)
    r.add_argument("--only", default="batch,sequential,rrome")
    r.add_argument("--stream-methods", default="alphaedit,memit", help="methods of the sequential stream")
    r.add_argument("--out", default="runs/bench")
    w = sub.add_parser("worker")
    w.add_argument("method")
    w.add_argument("size", type=int)
    w.add_argument("count", type=int)
    w.add_argument("threads", type=int)
    args = parser.parse_args()
    if args.part == "worker":
        print(json.dumps(worker(args.method, args.size, args.count, args.threads)))
    else:
        {"speed": speed, "runs": runs}[args.part](args)


if __name__ == "__main__":
    main()
