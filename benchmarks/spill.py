"""How much of an edit's weight change reaches other prompts: neighbours, paraphrases, prompts of other records.

For each CounterFact record, one single edit is made and restored; for every
linear layer the edit changed (``ΔW``), the inputs ``k`` of that layer at the
last prompt token are read for the edit prompt, its paraphrases, its
neighbourhood prompts, and the prompts of ten records outside the range.
The *spill* of a prompt is ``‖ΔW k_prompt‖ / ‖ΔW k_edit‖``: the share of what
the change writes at the edit prompt that it also writes at that prompt
(at the last token, where the first answer token is predicted).  It is a
measure for methods that write where the answer is predicted (UltraEdit,
FT-M, LoRA); ROME and MEMIT write at the subject's last token, and their
change at the prompt's last token is not what their edit is made of.
Prints medians and means per kind; asserts nothing
(``docs/models.md``, UltraEdit's locality on Gemma, holds what it printed).

Usage (``make bench BENCH=spill BENCH_ARGS="--model gemma3-270m --method ultraedit"``)::

    python benchmarks/spill.py [--model smollm2-135m] [--method ultraedit] [--records 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("KEDITLAB_DATASETS", ROOT.parent / "shared" / "datasets"))
COUNTERFACT = DATASETS / "counterfact" / "counterfact_500.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--method", default="ultraedit")
    parser.add_argument("--records", type=int, default=10, help="records 0..N-1 are edited, one at a time")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from keditlab.data.records import counterfact_cases
    from keditlab.methods import EditContext, get_method
    from keditlab.models import load_model
    from keditlab.models.hooks import hooks
    from keditlab.models.sampling import device_of
    from keditlab.models.tokens import encode_prompt
    from keditlab.stats import CovarianceProvider

    torch.set_num_threads(args.threads)
    model, tokenizer, profile = load_model(args.model)
    cases = counterfact_cases(str(COUNTERFACT), limit=args.records)
    others = [case.prompt for case in counterfact_cases(str(COUNTERFACT), limit=10, offset=290)]
    editor = get_method(args.method)
    context = EditContext(covariance=CovarianceProvider(model, tokenizer, profile), progress=False)
    linears = {name: module for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}

    def last_token_inputs(prompts: list[str], modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
        found: dict[str, list[torch.Tensor]] = {name: [] for name in modules}

        def grab(name):
            def record(_module, inputs, _output):
                found[name].append(inputs[0][0, -1].detach().double())
            return record
        with hooks(forward=[(module, grab(name)) for name, module in modules.items()]), torch.no_grad():
            for prompt in prompts:
                model(input_ids=torch.tensor([encode_prompt(tokenizer, prompt)], device=device_of(model)))
        return {name: torch.stack(rows) for name, rows in found.items()}

    spill: dict[str, list[float]] = {"paraphrase": [], "neighbourhood": [], "other record": []}
    for case in cases:
        before = {name: module.weight.detach().double().clone() for name, module in linears.items()}
        handle = editor.apply(model, tokenizer, profile, [case], {}, context)
        changes = {name: module.weight.detach().double() - before[name] for name, module in linears.items()}
        handle.restore()
        changes = {name: change for name, change in changes.items() if change.abs().max() > 0}
        if not changes:
            sys.exit(f"{args.method} changed no linear layer's weight on {case.case_id}: nothing to measure")
        modules = {name: linears[name] for name in changes}
        kinds = {"paraphrase": list(case.rephrase), "neighbourhood": [probe.prompt for probe in case.locality],
                 "other record": others}
        edit_keys = last_token_inputs([case.prompt], modules)
        for kind, prompts in kinds.items():
            keys = last_token_inputs(prompts, modules)
            for name, change in changes.items():
                at_edit = (change @ edit_keys[name].T).norm()
                spill[kind] += ((change @ keys[name].T).norm(dim=0) / at_edit).tolist()
    print(f"{args.method} on {args.model}, CounterFact records 0-{len(cases) - 1} as single edits, "
          f"{len(changes)} changed layer(s) per edit; spill = ||dW k|| / ||dW k_edit|| at the last prompt token\n")
    print("| prompts | median spill | mean spill |")
    print("|---|---|---|")
    for kind, values in spill.items():
        print(f"| {kind} | {statistics.median(values):.3f} | {statistics.mean(values):.3f} |")


if __name__ == "__main__":
    sys.exit(main())
