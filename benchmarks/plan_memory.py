"""Measured peak memory of real runs on the embedded model, beside ``keditlab plan``'s estimate.

    python benchmarks/plan_memory.py [--model smollm2-135m] [--methods rome,memit,ft-m,lora,grace] [--json FILE]

Each method runs in a fresh process (so one run's peak does not hide the next's),
on the quickstart's first two edits, with ``keditlab.run(..., out=None)``; the
peak is the process's peak resident set (``ru_maxrss``) on the CPU, and
``torch.cuda.max_memory_allocated`` plus the CUDA context on a GPU.  The run
named ``<method>+stats`` uses a fresh ``stats.samples`` so its key statistics are
computed, not read from the cache.  The figures are printed, never asserted
(docs/plan.md holds the measured table).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, yaml
spec = json.loads(sys.argv[1])
import keditlab
from keditlab.runner import run_spec
loaded_spec = keditlab.load(spec)
run_spec(loaded_spec, None, log=lambda message: None)
import torch
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cuda = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
print(json.dumps({"peak_rss": peak_kib * 1024, "cuda_peak": cuda}))
"""


def quickstart(model: str, method: str, device: str, samples=None, dtype: str = "auto") -> dict:
    import yaml

    data = yaml.safe_load((ROOT / "specs" / "quickstart.yaml").read_text(encoding="utf-8"))
    data["edits"] = data["edits"][:2]
    data["model"] = {"name": model, "dtype": dtype}
    data["method"] = [method]
    data["run"] = {"seed": 0, "device": device}
    if samples is not None:
        data["stats"] = {"samples": samples}
    return data


def measure(spec: dict) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--methods", default="rome,memit,ft-m,lora,grace,rome+stats")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--json", default=None, help="write the measured figures here")
    parser.add_argument("--estimate-only", action="store_true", help="print the estimates without running anything")
    args = parser.parse_args()
    import keditlab

    rows = []
    for entry in args.methods.split(","):
        method, _, extra = entry.partition("+")
        spec = quickstart(args.model, method, args.device, samples=2999 if extra == "stats" else None, dtype=args.dtype)
        plan = keditlab.plan(spec)
        estimate = next(m for m in plan.methods if m.label == method).peak_bytes
        row = {"run": entry, "estimate": estimate}
        if not args.estimate_only:
            measured = measure(spec)
            row.update(measured)
            peak = measured["peak_rss"] if args.device == "cpu" else measured["cuda_peak"]
            row["measured"] = peak
            row["error"] = (estimate - peak) / peak
        rows.append(row)
        shown = f"{entry:<12} estimate {estimate / 2**20:8.0f} MiB"
        if "measured" in row:
            shown += f"   measured {row['measured'] / 2**20:8.0f} MiB   error {row['error']:+.1%}"
        print(shown, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
