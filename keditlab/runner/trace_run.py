"""``keditlab trace SPEC``: run a spec's ``trace:`` section and write a run folder.

The folder holds

* ``manifest.json``: the resolved spec, model, seed, device, versions, command line, times;
* ``trace.json``: for each prompt its traces (one per kind, token x layer), and
  for a ``records`` file the averaged indirect effects (:class:`~keditlab.trace.AverageTrace`);
* ``prompt-<i>.png``: the heatmaps of prompt ``i`` (one panel per kind);
* ``average.png``: the mean indirect effect per layer at the subject's last
  token and at the last token.

docs/tracing.md describes the formats and how to read them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keditlab.models import LoadedModel, load_model
from keditlab.models.sampling import device_of
from keditlab.runner import folder as run_folder
from keditlab.runner.manifest import command_line, package_versions, timestamp
from keditlab.spec import Spec
from keditlab.trace import AverageTrace, TraceResult, read_known_facts, trace_facts, trace_kinds
from keditlab.trace.plot import plot_kinds, save_figure

#: Version of trace.json's layout.
TRACE_FORMAT = "keditlab.trace/1"


@dataclass
class TraceRun:
    """The traces of one spec: per prompt ``{kind: TraceResult}``, the average over the records, the folder."""

    prompts: list[dict[str, TraceResult]] = field(default_factory=list)
    average: AverageTrace | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __str__(self) -> str:
        lines = []
        for results in self.prompts:
            first = next(iter(results.values()))
            lines.append(f"{first.prompt!r} -> {first.answer!r}: clean p={first.clean_prob:.3f}, corrupted {first.corrupted_prob:.3f}")
            for kind, result in results.items():
                effect = result.indirect_effect
                token, layer = divmod(int(effect.argmax()), effect.shape[1])
                lines.append(f"  {kind:8s} largest effect {effect.max():.3f} at token {result.tokens[result.positions[token]]!r}, layer {layer}")
            lines.extend(f"  warning: {w}" for w in first.warnings)
        if self.average is not None:
            avg = self.average
            lines.append(f"{len(avg.facts)} facts averaged ({len(avg.skipped)} skipped), {avg.samples} noise samples each, "
                         f"noise {avg.noise:.4f} ({avg.noise_basis}), {avg.seconds:.0f} s")
            for kind in avg.kinds:
                peak = avg.peak_layer(kind, "subject_last")
                lines.append(f"  {kind:8s} at the subject's last token: peak at layer {peak} "
                             f"(mean effect {avg.effects[kind]['subject_last'][peak]:.3f}); at the last token: "
                             f"peak at layer {avg.peak_layer(kind, 'last')}")
        if self.path:
            lines.append(f"results: {self.path}")
        return "\n".join(lines)


def trace_spec(spec: Spec, out: str | Path | None = "runs", *, loaded: LoadedModel | None = None, log: Any = print) -> TraceRun:
    """Run ``spec.trace``; write a new run folder under ``out`` (``None``: in memory only)."""
    if spec.trace is None:
        raise ValueError(f"spec {spec.name!r} has no `trace:` section. Fix: add one (docs/tracing.md), or run its edits "
                         "with `keditlab run`.")
    settings = spec.trace
    started = time.time()
    if loaded is None:
        log(f"Loading {spec.model.name} …")
        loaded = load_model(spec.model.name, device=spec.run.device, dtype=spec.model.dtype, profile=spec.model.profile)
    model, tokenizer, profile = loaded
    folder = run_folder.new_run_folder(out, spec.name) if out is not None else None
    manifest = {
        "format": TRACE_FORMAT,
        "status": "running",
        "spec": spec.to_spec_data(),
        "model": {"name": spec.model.name, "source": getattr(loaded, "source", None), "profile": profile.to_dict()},
        "seed": spec.run.seed,
        "device": str(device_of(model)),
        "versions": package_versions(),
        "command": command_line(),
        "started": timestamp(started),
    }
    if folder:
        run_folder.write_json(folder / "manifest.json", manifest)
    noise = None if settings.noise == "auto" else float(settings.noise)
    run = TraceRun(manifest=manifest, path=folder)
    for index, item in enumerate(settings.prompts):
        log(f"Tracing {item.prompt!r} ({', '.join(settings.kinds)}) …")
        results = trace_kinds(model, tokenizer, item.prompt, item.subject, item.answer, settings.kinds, settings.samples,
                              noise, settings.window, spec.run.seed, profile=profile, progress=True)
        for warning in next(iter(results.values())).warnings:
            log(f"warning: {warning}")
        run.prompts.append(results)
        if folder:
            save_figure(plot_kinds(results), folder / f"prompt-{index}.png")
    if settings.records:
        facts = read_known_facts(settings.records, offset=settings.offset)
        log(f"Tracing up to {settings.limit or len(facts)} facts of {settings.records}"
            + (" that the model predicts" if settings.known_only else "") + " …")
        run.average = trace_facts(model, tokenizer, facts, settings.kinds, settings.samples, noise, settings.window,
                                  spec.run.seed, settings.known_only, settings.limit, profile=profile, source=settings.records)
        if folder:
            save_figure(run.average.plot(), folder / "average.png")
    manifest.update(status="complete", finished=timestamp(time.time()), seconds=round(time.time() - started, 3))
    if folder:
        run_folder.write_json(folder / "trace.json", {
            "format": TRACE_FORMAT,
            "prompts": [{kind: result.to_dict() for kind, result in results.items()} for results in run.prompts],
            "average": run.average.to_dict() if run.average is not None else None,
        })
        run_folder.write_json(folder / "manifest.json", manifest)
    return run
