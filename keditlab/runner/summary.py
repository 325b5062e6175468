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
          "metrics": {
            "<metric>": {"<protocol>": {"pre": 0.0, "post": 1.0, "n": 6}, ...},
            ...
          },
          "timings": {"edit_seconds_mean": 4.1, "eval_seconds_mean": 1.2,
                      "edit_seconds_total": 24.6, "eval_seconds_total": 7.2,
                      "setup_seconds_total": 41.0},
          "warnings": {"target_not_said": 0, "ground_truth_not_said": 1}
        }
      }
    }

A value of a metric under one protocol is never averaged with the same metric
under another: they sit under different keys.  ``setup_seconds_total`` is
one-off work (covariance statistics, context prefixes) that this method's
edits triggered; it is never part of the per-edit seconds.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

SUMMARY_FORMAT = "keditlab.summary/1"

#: Warning codes counted per method (see :mod:`keditlab.runner.checks`): how many
#: edits did not make the model say the target, and how many edits' ground truth
#: the unedited model did not say.
WARNING_CODES = ("target_not_said", "ground_truth_not_said")


@dataclass
class MethodTally:
    """Running per-case scores of one method, turned into means at the end."""

    method: str
    settings: dict[str, Any] = field(default_factory=dict)
    pre: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    post: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    edit_seconds: list[float] = field(default_factory=list)
    eval_seconds: list[float] = field(default_factory=list)
    setup_seconds: float = 0.0
    warnings: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, pre: dict[tuple[str, str], float], post: dict[tuple[str, str], float], edit_s: float, eval_s: float,
            setup_s: float = 0.0, warnings: list[str] = ()) -> None:
        """One edit's scores, its edit and evaluation seconds, one-off set-up it triggered, and its warning codes."""
        for key, value in pre.items():
            self.pre[key].append(value)
        for key, value in post.items():
            self.post[key].append(value)
        self.edit_seconds.append(edit_s)
        self.eval_seconds.append(eval_s)
        self.setup_seconds += setup_s
        for code in warnings:
            self.warnings[code] += 1

    def to_dict(self) -> dict[str, Any]:
        metrics: dict[str, dict[str, dict[str, float | int | None]]] = defaultdict(dict)
        for metric, protocol in sorted(set(self.pre) | set(self.post)):
            pre, post = self.pre.get((metric, protocol), []), self.post.get((metric, protocol), [])
            metrics[metric][protocol] = {"pre": _mean(pre), "post": _mean(post), "n": len(post)}
        return {
            "method": self.method,
            "settings": self.settings,
            "metrics": dict(metrics),
            "timings": {
                "edit_seconds_mean": _mean(self.edit_seconds),
                "eval_seconds_mean": _mean(self.eval_seconds),
                "edit_seconds_total": round(sum(self.edit_seconds), 3),
                "eval_seconds_total": round(sum(self.eval_seconds), 3),
                "setup_seconds_total": round(self.setup_seconds, 3),
            },
            "warnings": {code: self.warnings.get(code, 0) for code in WARNING_CODES},
        }


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 6) if values else None


def build_summary(spec_name: str, model: str, num_cases: int, tallies: dict[str, MethodTally]) -> dict[str, Any]:
    return {
        "format": SUMMARY_FORMAT,
        "spec": spec_name,
        "model": model,
        "num_cases": num_cases,
        "methods": {label: tally.to_dict() for label, tally in tallies.items()},
    }


def metric_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The (metric, protocol) rows of a summary in a stable, readable order."""
    order = ["reliability", "generalization", "locality", "portability", "fluency"]
    seen: set[tuple[str, str]] = set()
    for method in summary["methods"].values():
        for metric, protocols in method["metrics"].items():
            seen.update((metric, protocol) for protocol in protocols)
    return sorted(seen, key=lambda mp: (order.index(mp[0]) if mp[0] in order else len(order), mp[0], mp[1]))
