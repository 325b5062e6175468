"""Which settings move a MEMIT-family batch's locality: many solve settings on the same target vectors.

A batch's target vectors δ are optimised on the unedited model before any
layer is written, so they do not depend on the solve settings (the
covariance weight, the key form, the statistics).  This benchmark optimises
them once per record set and last layer, caches them on disk, and applies
every variant to the same ones; a variant that changes δ (``stop_when``, a
window ending at another layer) is optimised once too.  Each variant is one
batch of all the records, measured teacher-forced against the same pre-edit
measurement, and restored.  It prints figures and asserts nothing
(``docs/models.md``, "What moves a batch's locality", holds the table it printed).

Usage (``make bench BENCH=batch_settings BENCH_ARGS="..."``)::

    python benchmarks/batch_settings.py --model smollm2-135m --offset 100 --records 100 \\
        --variants '[{}, {"covariance_weight": 3072}, {"keys": "prompt_and_mean"}, {"stats_tokens": 61440}]'

A variant is a method settings dict; ``stats_tokens`` (not a method setting)
computes the key statistics from that many tokens instead of the default.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("KEDITLAB_DATASETS", ROOT.parent / "shared" / "datasets"))
COUNTERFACT = DATASETS / "counterfact" / "counterfact_500.json"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "keditlab" / "bench-batch-settings"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--method", default="memit", help="memit, emmet or alphaedit")
    parser.add_argument("--offset", type=int, default=100, help="first CounterFact record")
    parser.add_argument("--records", type=int, default=100, help="records in the batch")
    parser.add_argument("--variants", default="[{}]", help="JSON list of settings dicts")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from keditlab.data.records import counterfact_cases
    from keditlab.evaluate import measure
    from keditlab.evaluate.measurement import mean_scores
    from keditlab.methods import EditContext, get_method
    from keditlab.methods import memit as memit_module
    from keditlab.models import load_model
    from keditlab.spec.types import EvalSpec
    from keditlab.stats import CovarianceProvider

    torch.set_num_threads(args.threads)
    CACHE.mkdir(parents=True, exist_ok=True)
    model, tokenizer, profile = load_model(args.model)
    cases = counterfact_cases(str(COUNTERFACT), limit=args.records, offset=args.offset)
    names = {module: name for name, module in model.named_modules()}
    optimise = memit_module.optimise_values

    def cached_values(model, tokenizer, module, out_dim, requests, settings, progress=None):
        """δ for these records at this module with these settings: from the disk cache, or optimised and stored."""
        key = hashlib.sha1(repr((args.model, args.offset, args.records, names[module], repr(settings))).encode()).hexdigest()[:16]
        path = CACHE / f"deltas-{key}.pkl"
        if path.exists():
            return pickle.loads(path.read_bytes())
        found = optimise(model, tokenizer, module, out_dim, requests, settings, progress=progress)
        path.write_bytes(pickle.dumps(found))
        return found

    memit_module.optimise_values = cached_values   # the family's one call site of the value optimisation
    settings = EvalSpec(metrics=("reliability", "generalization", "locality"), protocols=("teacher_forced",), batch_size=64)
    before = measure(model, tokenizer, cases, settings, text=False)
    editor = get_method(args.method)
    print(f"{args.method} on {args.model}, CounterFact records {args.offset}-{args.offset + len(cases) - 1} as one batch; "
          f"teacher-forced reliability / generalization / locality\n")
    print("| settings | reliability | generalization | locality | seconds (edit, δ cached after the first) |")
    print("|---|---|---|---|---|")
    for variant in json.loads(args.variants):
        config = dict(variant)
        tokens = config.pop("stats_tokens", "auto")
        context = EditContext(covariance=CovarianceProvider(model, tokenizer, profile, num_tokens=tokens), progress=False)
        start = time.time()
        handle = editor.apply(model, tokenizer, profile, cases, config, context)
        seconds = time.time() - start
        scores = mean_scores(measure(model, tokenizer, cases, settings, reference=before, text=False))
        handle.restore()
        row = [scores.get((metric, "teacher_forced"), float("nan")) for metric in ("reliability", "generalization", "locality")]
        print(f"| {json.dumps(variant)} | " + " | ".join(f"{x:.3f}" for x in row) + f" | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
