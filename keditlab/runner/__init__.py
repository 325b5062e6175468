"""The runner: a resolved spec in, a :class:`Run` (results and a run folder) out."""

from keditlab.runner.run import MetricLookupError, Run, RunError, run_spec

__all__ = ["MetricLookupError", "Run", "RunError", "run_spec"]
