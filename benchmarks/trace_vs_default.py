"""ROME at the traced layer (``layer: auto``) against the default layer, on 20 CounterFact records (docs/tracing.md).

    python benchmarks/trace_vs_default.py            # traced layer and layer 5 (and 12 when they coincide)
    python benchmarks/trace_vs_default.py 2 5 12     # any layers

Prints the results table (reliability, generalization, locality) and writes a run folder under runs/.
"""

import sys
import time
from pathlib import Path

import keditlab
from keditlab.models import load_model
from keditlab.spec import parse_spec
from keditlab.trace.auto_layer import traced_layer

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "counterfact" / "counterfact_500.json"

loaded = load_model("smollm2-135m")
started = time.perf_counter()
found = traced_layer(*loaded)
print(f"traced layer {found.layer} ({found.facts} facts, {found.skipped} skipped, cached: {found.cached}, "
      f"{time.perf_counter() - started:.1f} s)")
print("mean MLP effect at the subject's last token:", [round(x, 3) for x in found.mlp_effect])
layers = [int(x) for x in sys.argv[1:]] or sorted({found.layer, 5})
if len(layers) == 1:
    layers.append(12)  # traced == default: compare with a layer where the MLP effect has faded
methods = "\n".join(f"  - {{name: rome, label: rome-L{layer}, layer: {layer}}}" for layer in layers)
spec = f"""keditlab: 1
name: trace-vs-default
model: smollm2-135m
method:
{methods}
edits: {{records: {DATA}, format: counterfact, limit: 20}}
evaluate: {{metrics: [reliability, generalization, locality], protocols: [teacher_forced, probability]}}
run: {{seed: 0}}
"""
print(keditlab.run(parse_spec(spec), "runs", loaded=loaded, log=lambda _m: None))
