"""``summary.json``: per method, per metric and protocol, the pre- and post-edit means.

Other tools read this file, so its shape is documented (docs/results.md) and
versioned by ``format``::

    {
      "format": "keditlab.summary/1",
      "spec": "quickstart", "model": "smollm2-135m", "num_cases": 6,
      "methods": {
        "<label>": {
          "method": "rome",
          "settings": {...every setting the method used...},
          "mode": "single", "batch_size": 1, "evaluate_at": null,
          "metrics": {
            "<metric>": {"<protocol>": {"pre": 0.0, "post": 1.0, "n": 6}, ...},
            ...
          },
          "timings": {"edit_seconds_mean": 4.1, "eval_seconds_mean": 1.2,
                      "edit_seconds_total": 24.6, "eval_seconds_total": 7.2,
                      "setup_seconds_total": 41.0},
          "warnings": {"outputs_unchanged": 0, "target_not_said": 0, "ground_truth_not_said": 1},
          "curve": [{"edits_applied": 2, "measured": 2,
                     "metrics": {"<metric>": {"<protocol>": 1.0}}}, ...]   # sequential runs only
        }
      }
    }

A value of a metric under one protocol is never averaged with the same metric
under another: they sit under different keys.  A case measured more than once
(a sequential run with ``evaluate_at: {every: k}``) counts in the means with
its *last* measurement, taken at the end of the stream; every measurement is a
point of the ``curve``.  Seconds per edit are totals divided by the number of
edits, so a batch of 10 that took 5 s costs 0.5 s per edit.
``setup_seconds_total`` is one-off work (covariance statistics, context
prefixes) that this method's edits triggered; it is never part of the
per-edit seconds.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from keditlab.vocabulary import PROTOCOLS

SUMMARY_FORMAT = "keditlab.summary/1"

#: Warning codes counted per method (see :mod:`keditlab.runner.edit_warnings`): how many
#: edits did not make the model say the target, how many edits' ground truth
#: the unedited model did not say, and how many edits were refused because their
#: update was not finite (rolled back, not measured: docs/reliability.md).
WARNING_CODES = ("outputs_unchanged", "target_not_said", "ground_truth_not_said", "edit_failed")

Scores = dict[tuple[str, str], float]


@dataclass
class MethodTally:
    """One method's results as the run goes, turned into the summary's means at the end.

    The runner reports three things, as they happen:

    * :meth:`add_batch`: one method call (how many edits, its edit and set-up seconds);
    * :meth:`add_point`: one measurement (the edits on the model, each measured
      case's post scores, the seconds it took): a point of the curve;
    * :meth:`add_case`: a case's pre scores and its *last* post scores, with its
      warning codes: what the metric means are made of.

    :meth:`add` does all three for one edit applied and measured alone (mode
    ``single``), the short form tests and older code use.
    """

    method: str
    settings: dict[str, Any] = field(default_factory=dict)
    mode: str = "single"
    batch_size: int = 1
    evaluate_at: Any = None
    pre: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    post: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    edits: int = 0
    edit_seconds: float = 0.0
    eval_seconds: float = 0.0
    setup_seconds: float = 0.0
    warnings: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    curve: list[dict[str, Any]] = field(default_factory=list)

    def add_batch(self, size: int, edit_s: float, setup_s: float = 0.0) -> None:
        """One method call that applied ``size`` edits in ``edit_s`` seconds (and ``setup_s`` of one-off work)."""
        self.edits += size
        self.edit_seconds += edit_s
        self.setup_seconds += setup_s

    def add_point(self, edits_applied: int, posts: list[Scores], eval_s: float) -> None:
        """One measurement of ``len(posts)`` cases on a model holding ``edits_applied`` edits."""
        self.eval_seconds += eval_s
        values: dict[tuple[str, str], list[float]] = defaultdict(list)
        for scores in posts:
            for key, value in scores.items():
                values[key].append(value)
        metrics: dict[str, dict[str, float | None]] = defaultdict(dict)
        for metric, protocol in sorted(values):
            metrics[metric][protocol] = _mean(values[(metric, protocol)])
        self.curve.append({"edits_applied": edits_applied, "measured": len(posts), "metrics": dict(metrics)})

    def add_case(self, pre: Scores, post: Scores, warnings: list[str] = ()) -> None:
        """A case's scores before any edit and at its last measurement, and its warning codes."""
        for key, value in pre.items():
            self.pre[key].append(value)
        for key, value in post.items():
            self.post[key].append(value)
        for code in warnings:
            self.warnings[code] += 1

    def add_failed(self, size: int) -> None:
        """A method call of ``size`` edits refused and rolled back (a non-finite update): counted, never measured."""
        self.warnings["edit_failed"] += size

    def add(self, pre: Scores, post: Scores, edit_s: float, eval_s: float, setup_s: float = 0.0, warnings: list[str] = ()) -> None:
        """One edit applied alone and measured once: its scores, edit and evaluation seconds, set-up, warning codes."""
        self.add_batch(1, edit_s, setup_s)
        self.eval_seconds += eval_s
        self.add_case(pre, post, warnings)

    def to_dict(self) -> dict[str, Any]:
        metrics: dict[str, dict[str, dict[str, float | int | None]]] = defaultdict(dict)
        for metric, protocol in sorted(set(self.pre) | set(self.post)):
            pre, post = self.pre.get((metric, protocol), []), self.post.get((metric, protocol), [])
            metrics[metric][protocol] = {"pre": _mean(pre), "post": _mean(post), "n": len(post)}
        score = counterfact_score(metrics)
        if score:
            metrics["score"]["probability"] = score
        per_edit = (lambda total: round(total / self.edits, 6) if self.edits else None)
        summary = {
            "method": self.method,
            "settings": self.settings,
            "mode": self.mode,
            "batch_size": self.batch_size,
            "evaluate_at": self.evaluate_at,
            "metrics": dict(metrics),
            "timings": {
                "edit_seconds_mean": per_edit(self.edit_seconds),
                "eval_seconds_mean": per_edit(self.eval_seconds),
                "edit_seconds_total": round(self.edit_seconds, 3),
                "eval_seconds_total": round(self.eval_seconds, 3),
                "setup_seconds_total": round(self.setup_seconds, 3),
            },
            "warnings": {code: self.warnings.get(code, 0) for code in WARNING_CODES},
        }
        if self.mode == "sequential":
            summary["curve"] = list(self.curve)
        return summary


def counterfact_score(metrics: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any] | None:
    """CounterFact's Score S: the harmonic mean of the mean ES, PS and NS (probability protocol), pre and post.

    None unless all three were measured (a case needs a ground truth, rephrases
    and neighbourhood prompts); S is computed from the three means, as in
    ROME's tables, not averaged over cases.
    """
    from keditlab.evaluate.measurement import harmonic_mean

    parts = [metrics.get(m, {}).get("probability") for m in ("reliability", "generalization", "locality")]
    if not all(parts):
        return None
    out: dict[str, Any] = {}
    for when in ("pre", "post"):
        values = [p[when] for p in parts]
        out[when] = None if None in values else round(harmonic_mean(values), 6)
    out["n"] = min(p["n"] for p in parts)
    return out


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 6) if values else None


def build_summary(spec_name: str, model: str, num_cases: int, tallies: dict[str, MethodTally],
                  edits_from: str | None = None, dataset: str | None = None, judge: str | None = None) -> dict[str, Any]:
    """The summary; ``edits_from`` (only for edits read from a benchmark) names the records, for the title, ``dataset``
    the benchmark, and ``judge`` (only when one judged the generation protocol's answers, ``evaluate.judge``) the
    judge whose verdicts are the generation values of reliability, generalization, ... (the rules' are ``*_exact``)."""
    summary: dict[str, Any] = {"format": SUMMARY_FORMAT, "spec": spec_name, "model": model, "num_cases": num_cases}
    if edits_from:
        summary["edits_from"] = edits_from
    if dataset:
        summary["dataset"] = dataset
    if judge:
        summary["judge"] = judge
    summary["methods"] = {label: tally.to_dict() for label, tally in tallies.items()}
    return summary


#: Metric families in reading order: a family's variants (``reliability_contains``, ``portability:Reasoning``,
#: ``ripple_executed:...``) follow its own rows; a family not listed comes after these, by name, and ``score``
#: (CounterFact's S, made of the others) is always last.
FAMILY_ORDER = ("reliability", "generalization", "locality", "portability", "multihop", "ripple", "fluency")
#: Protocols in reading order (as declared: teacher-forced, probability, generation); others after these, by name.
PROTOCOL_ORDER = PROTOCOLS
#: Suffixes that make a variant of a metric, in the order its variant rows are shown.
VARIANT_ORDER = ("_magnitude", "_exact", "_contains", "_accuracy", "_original", "_executed")


def metric_family(metric: str) -> str:
    """The metric a row belongs with: ``reliability_contains`` and ``reliability`` → ``reliability``,
    ``portability:Reasoning`` → ``portability``, ``ripple_executed:Relation_Specificity`` → ``ripple``."""
    head = metric.split(":", 1)[0]
    for family in FAMILY_ORDER:
        if head == family or head.startswith(family + "_"):
            return family
    return head


def metric_order_key(metric: str) -> tuple[Any, ...]:
    """Sort key of a metric: by family (:data:`FAMILY_ORDER`), the family's own metric before its variants."""
    family = metric_family(metric)
    if family == "score":
        rank: tuple[int, str] = (len(FAMILY_ORDER) + 1, "")
    else:
        rank = (FAMILY_ORDER.index(family), "") if family in FAMILY_ORDER else (len(FAMILY_ORDER), family)
    rest = metric[len(family):]
    if not rest:
        variant = 0
    elif rest.startswith(":"):  # a group of the metric itself (portability:Reasoning)
        variant = 1
    else:
        variant = next((i + 2 for i, suffix in enumerate(VARIANT_ORDER) if rest.startswith(suffix)), len(VARIANT_ORDER) + 2)
    return (*rank, variant, metric)


def protocol_order_key(protocol: str) -> tuple[int, str]:
    """Sort key of a protocol: :data:`PROTOCOL_ORDER`, then others by name."""
    return (PROTOCOL_ORDER.index(protocol), "") if protocol in PROTOCOL_ORDER else (len(PROTOCOL_ORDER), protocol)


def metric_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The (metric, protocol) rows of a summary, grouped by metric, in reading order.

    Families follow :data:`FAMILY_ORDER` (``score`` last).  Inside a family the
    protocols follow :data:`PROTOCOL_ORDER`, and each protocol's row of the
    metric itself comes first, then its variants under it: ``reliability (tf)``,
    ``reliability (prob)``, ``reliability_magnitude (prob)``, ``reliability (gen)``,
    ``reliability_contains (gen)``, then ``generalization ...``.
    """
    seen: set[tuple[str, str]] = set()
    for method in summary["methods"].values():
        for metric, protocols in method["metrics"].items():
            seen.update((metric, protocol) for protocol in protocols)

    def key(row: tuple[str, str]) -> tuple[Any, ...]:
        metric, protocol = row
        family, variant = metric_order_key(metric)[:2], metric_order_key(metric)[2:]
        return (*family, protocol_order_key(protocol), *variant)

    return sorted(seen, key=key)
