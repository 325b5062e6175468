"""The runner: a resolved spec in, a :class:`Run` (results and a run folder) out."""

from keditlab.runner.run import Run, RunError, run_spec

__all__ = ["Run", "RunError", "run_spec"]
