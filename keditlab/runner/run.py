"""Turn a resolved :class:`~keditlab.spec.Spec` into work and a :class:`Run`.

The loop, for every method in the spec::

    measure every case on the unedited model (once, shared by all methods)
    for each case:
        handle = method.apply(model, ..., [case])      # the model is now edited
        post   = measure(model, ..., [case], reference=pre)
        handle.restore()                                # explicit, bit-exact undo

Each edit is applied alone to the unedited model ("single" mode); batch and
sequential modes are later additions to this loop.  The covariance statistics
a method asks for are computed once per layer on the unedited model and cached
on disk (:mod:`keditlab.stats`).
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from keditlab.evaluate import PROTOCOLS, CaseMeasurement, measure
from keditlab.methods import EditContext, MethodConfigError, get_method
from keditlab.models import LoadedModel, load_model
from keditlab.runner import records
from keditlab.runner.report import PROTOCOL_SHORT, html_generations, html_table, text_table
from keditlab.runner.checks import ground_truth_warning, target_warning
from keditlab.runner.summary import MethodTally, build_summary
from keditlab.spec import METRIC_NAMES, Spec
from keditlab.spec.hints import did_you_mean
from keditlab.stats import CovarianceProvider


#: Version 2: ``spec`` is written in the spec language (version 1 held the dataclass fields).
MANIFEST_FORMAT = "keditlab.manifest/2"

#: The moments a value is measured at: before and after the edit.
WHEN = ("pre", "post")
#: The table's short protocol names (``tf``), back to the protocols they stand for.
PROTOCOL_LONG = {short: name for name, short in PROTOCOL_SHORT.items()}


@dataclass(repr=False)
class Run:
    """A finished run: its resolved spec, summary, per-case records and folder.

    In a notebook, a ``Run`` shows itself as a results table with the before/after
    generations; ``Run.load(folder)`` reopens a saved run the same way.
    """

    summary: dict[str, Any]
    cases: list[dict[str, Any]]
    manifest: dict[str, Any]
    path: Path | None = None

    @classmethod
    def load(cls, folder: str | Path) -> "Run":
        folder = Path(folder)
        missing = [n for n in ("summary.json", "cases.jsonl", "manifest.json") if not (folder / n).exists()]
        if missing:
            raise FileNotFoundError(f"{folder} is not a complete keditlab run folder (missing {', '.join(missing)})")
        return cls(
            summary=json.loads((folder / "summary.json").read_text(encoding="utf-8")),
            cases=records.read_jsonl(folder / "cases.jsonl"),
            manifest=json.loads((folder / "manifest.json").read_text(encoding="utf-8")),
            path=folder,
        )

    def metric(self, method: str, metric: str, protocol: str = "teacher_forced", when: str = "post") -> float | None:
        """One mean from the summary, e.g. ``run.metric("rome", "reliability")``.

        ``method`` is a method's label, ``protocol`` one of ``teacher_forced``,
        ``probability``, ``generation``, and ``when`` is ``"pre"`` (before the
        edit) or ``"post"`` (after it).  Asking for something this run does not
        have raises :class:`MetricLookupError` naming what it does have, so a
        typo is never read as a missing value.
        """
        methods = self.summary["methods"]
        if method not in methods:
            raise MetricLookupError(
                f"this run has no method {method!r}{did_you_mean(method, methods)}; its methods (labels) are: {', '.join(methods)}"
            )
        if when not in WHEN:
            raise MetricLookupError(
                f"when must be 'pre' (before the edit) or 'post' (after it), got {when!r}{did_you_mean(str(when), WHEN)}"
            )
        measured = methods[method]["metrics"]
        if metric not in measured:
            requested = self.manifest.get("spec", {}).get("evaluate", {}).get("metrics", [])
            if metric in METRIC_NAMES and metric in requested:
                probe = {"generalization": "rephrase", "locality": "locality", "portability": "portability"}.get(metric, metric)
                problem = f"metric {metric!r} has no value in this run: it was asked for, but no edit has {probe} probes"
            elif metric in METRIC_NAMES:
                problem = f"metric {metric!r} was not measured in this run (it is chosen by the spec's `evaluate:`)"
            else:
                problem = f"unknown metric {metric!r}{did_you_mean(str(metric), METRIC_NAMES)}"
            listed = sorted(measured, key=lambda m: METRIC_NAMES.index(m) if m in METRIC_NAMES else len(METRIC_NAMES))
            raise MetricLookupError(f"{problem}; measured for {method!r}: {', '.join(listed) or 'nothing'}")
        protocols = measured[metric]
        if protocol not in protocols:
            has = f"{metric!r} was measured under: {', '.join(protocols)}"
            if protocol in PROTOCOLS:
                problem = f"{metric!r} was not measured under the protocol {protocol!r} for {method!r}"
                if protocol == "probability":
                    problem += " (that protocol needs a ground_truth in the edits)"
            elif protocol in PROTOCOL_LONG:
                problem = f"{protocol!r} is the table's short name; write protocol={PROTOCOL_LONG[protocol]!r}"
            else:
                problem = f"unknown protocol {protocol!r}{did_you_mean(str(protocol), PROTOCOLS)}; protocols are: {', '.join(PROTOCOLS)}"
            raise MetricLookupError(f"{problem}. {has}")
        return protocols[protocol].get(when)

    def table(self) -> str:
        return text_table(self.summary)

    def __str__(self) -> str:
        where = f"\nresults: {self.path}" if self.path else ""
        return self.table() + where

    def __repr__(self) -> str:
        methods = ", ".join(self.summary["methods"])
        return f"Run({self.summary['spec']!r}, {self.summary['num_cases']} edits, methods=[{methods}], path={str(self.path) if self.path else None!r})"

    def _repr_html_(self) -> str:
        where = f"<p><small>results: <code>{self.path}</code></small></p>" if self.path else ""
        return html_table(self.summary) + "<h4>Before / after (greedy generation from the edit prompt)</h4>" + html_generations(self.cases) + where


class MetricLookupError(KeyError):
    """``Run.metric`` was asked for a method, metric, protocol or moment the run does not have.

    A ``KeyError`` (so ``except KeyError`` still catches it) whose message reads
    as a sentence rather than a quoted key.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RunError(ValueError):
    """A spec that validated on its own does not fit the model it names."""


def run_spec(
    spec: Spec,
    out: str | Path | None = "runs",
    *,
    loaded: LoadedModel | None = None,
    log: Any = print,
) -> Run:
    """Run ``spec``; write a new run folder under ``out`` (``None``: keep results in memory only)."""
    started = time.time()
    _seed_everything(spec.run.seed)
    if loaded is None:
        log(f"Loading {spec.model.name} …")
        loaded = load_model(spec.model.name, device=spec.run.device, dtype=spec.model.dtype, profile=spec.model.profile)
    model, tokenizer, profile = loaded
    methods = [(m, get_method(m.name)) for m in spec.methods]
    configs = {m.label: _config_for(method, m, profile.num_layers) for m, method in methods}

    folder = records.new_run_folder(out, spec.name) if out is not None else None
    manifest = {
        "format": MANIFEST_FORMAT,
        "status": "running",
        "spec": spec.to_spec_data(),
        "model": {"name": spec.model.name, "source": getattr(loaded, "source", None), "profile": profile.to_dict(),
                  "dtype": str(next(model.parameters()).dtype)},
        "methods": {label: {"name": config_name, "settings": configs[label].to_dict()}
                    for label, config_name in ((m.label, m.name) for m, _ in methods)},
        "seed": spec.run.seed,
        "device": str(next(model.parameters()).device),
        "versions": records.package_versions(),
        "command": records.command_line(),
        "started": _timestamp(started),
        "statistics": [],
    }
    if folder:
        records.write_json(folder / "manifest.json", manifest)

    covariance = CovarianceProvider(model, tokenizer, profile, spec.stats.corpus, spec.stats.samples,
                                    spec.stats.max_length, seed=spec.run.seed)
    context = EditContext(seed=spec.run.seed, covariance=covariance)
    cases = list(spec.edits)
    log(f"Measuring {len(cases)} cases before editing …")
    before = measure(model, tokenizer, cases, spec.evaluate)
    pre_warnings = {case.case_id: ground_truth_warning(case, pre) for case, pre in zip(cases, before)}
    for warning in filter(None, pre_warnings.values()):
        log(f"warning: {warning['message']}")

    tallies: dict[str, MethodTally] = {}
    case_records: list[dict[str, Any]] = []
    for method_spec, method in methods:
        tally = tallies[method_spec.label] = MethodTally(method_spec.name, configs[method_spec.label].to_dict())
        for index, (case, pre) in enumerate(zip(cases, before)):
            log(f"[{method_spec.label}] edit {index + 1}/{len(cases)}: {case.prompt!r} → {case.target!r}")
            handle = method.apply(model, tokenizer, profile, [case], configs[method_spec.label], context)
            try:
                eval_start = time.perf_counter()
                post = measure(model, tokenizer, [case], spec.evaluate, reference=[pre])[0]
                eval_seconds = time.perf_counter() - eval_start
                delta_norms = handle.delta_norms()
            finally:
                handle.restore()
            not_said = target_warning(method_spec.label, case, post)
            if not_said:
                log(f"warning: {not_said['message']}")
            warnings = [w for w in (pre_warnings[case.case_id], not_said) if w]
            tally.add(pre.scores(), post.scores(), handle.seconds, eval_seconds, handle.setup_seconds,
                      [w["code"] for w in warnings])
            record = _case_record(method_spec.label, method_spec.name, case, pre, post, handle, eval_seconds, delta_norms)
            record["warnings"] = warnings
            case_records.append(record)
            if folder:
                records.append_jsonl(folder / "cases.jsonl", record)

    summary = build_summary(spec.name, spec.model.name, len(cases), tallies)
    manifest["statistics"] = covariance.described
    manifest.update(status="complete", finished=_timestamp(time.time()), seconds=round(time.time() - started, 3))
    if folder:
        records.write_json(folder / "summary.json", summary)
        records.write_json(folder / "manifest.json", manifest)
    return Run(summary=summary, cases=case_records, manifest=manifest, path=folder)


def _config_for(method: Any, method_spec: Any, num_layers: int) -> Any:
    """The method's config from the spec's settings, checked against the real model before any work."""
    config = method.config_class.from_params(method_spec.params)
    try:
        config.check_layers(num_layers)
    except MethodConfigError as exc:
        raise RunError(f"method {method_spec.label!r}: {exc}") from None
    return config


def _case_record(label, name, case, pre: CaseMeasurement, post: CaseMeasurement, handle, eval_seconds, delta_norms) -> dict[str, Any]:
    pre_scores, post_scores = pre.scores(), post.scores()
    return {
        "method": label,
        "method_name": name,
        "case_id": case.case_id,
        "edit": dataclasses.asdict(case),
        "scores": [
            {"metric": m, "protocol": p, "pre": pre_scores.get((m, p)), "post": post_scores.get((m, p))}
            for (m, p) in sorted(set(pre_scores) | set(post_scores))
        ],
        "pre": pre.to_dict(),
        "post": post.to_dict(),
        "edit_seconds": round(handle.seconds, 3),
        "setup_seconds": round(handle.setup_seconds, 3),
        "eval_seconds": round(eval_seconds, 3),
        "changed_parameters": delta_norms,
        "details": handle.details,
    }


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy

        numpy.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass


def _timestamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(seconds))
