"""Warnings a run raises instead of hiding: facts the model did not hold, edits that did not take.

Three things make a results table mislead without a word:

* a ``ground_truth`` the unedited model does not actually say.  The
  probability protocol compares P(target) with P(ground_truth); if the model
  never believed the ground truth, "the edit beat the old fact" means little
  (the warning says so only when the spec asks for that protocol).
* an edit that did not take: after it, greedy decoding from the edit prompt
  still does not produce the target.  A method that reports success on its
  own loss while the model says something else must be visible.
* an edit that changed nothing at all: the probability of the target after
  the edit prompt is what it was before, to a millionth of a nat.  A method
  that silently does nothing (a layer that is never called, an update that
  rounds away, an adaptor whose radius nothing falls into) is the most
  damaging failure a user can meet, so it gets its own warning rather than
  hiding among edits that merely fell short.

Each check returns a plain dict (``code``, ``message``, and what the model
said), recorded in ``cases.jsonl`` under ``warnings`` and counted in the
summary and the table.  What the model said is quoted as it reads: a
generation that starts on a new line is shown as such (``starts a new line,
then says 'Paris is…'``), never as an empty string.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keditlab.evaluate import CaseMeasurement
from keditlab.vocabulary import PROTOCOLS, EditCase

GROUND_TRUTH_NOT_SAID = "ground_truth_not_said"
TARGET_NOT_SAID = "target_not_said"
OUTPUTS_UNCHANGED = "outputs_unchanged"

#: An edit whose target NLL (nats per token) moved less than this left the model's outputs unchanged.
UNCHANGED_NATS = 1e-6


def _said(measurement: CaseMeasurement, limit: int = 60) -> str:
    """The greedy generation from the edit prompt on one line (white space collapsed), cut at ``limit`` characters."""
    text = " ".join(measurement.generations[0].text.split()) if measurement.generations else ""
    return _cut(text, limit)


def _cut(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _says(measurement: CaseMeasurement, limit: int = 60) -> str:
    """What the model said, as a verb phrase for a message: ``says 'Paris, France.'``.

    A generation that begins with a line break is not shown as ``''``: it
    ``starts a new line, then says 'Paris is…'``; one of nothing but white
    space ``says nothing but white space ('\\n\\n')``.
    """
    raw = measurement.generations[0].text if measurement.generations else ""
    if not raw.strip():
        return f"says nothing but white space ({raw!r})" if raw else "says nothing"
    if raw.lstrip(" \t").startswith(("\n", "\r")):
        line = next(line for line in raw.splitlines() if line.strip())
        return f"starts a new line, then says {_cut(' '.join(line.split()), limit)!r}"
    return f"says {_said(measurement, limit)!r}"


def ground_truth_warning(case: EditCase, pre: CaseMeasurement, protocols: Sequence[str] = PROTOCOLS) -> dict[str, Any] | None:
    """A warning when ``case.ground_truth`` is not what the unedited model says greedily, else None.

    ``protocols`` are the ones the run measures (``evaluate.protocols``); the
    message explains what the probability protocol makes of such a ground
    truth only when it is among them.
    """
    if case.ground_truth is None or pre.says(case.ground_truth):
        return None
    probability = (f" The probability test still compares the target with {case.ground_truth!r};"
                   if "probability" in protocols else "")
    fix = " give" if probability else " Give"
    return {
        "code": GROUND_TRUTH_NOT_SAID,
        "message": (
            f"edit {case.case_id!r}: the unedited model does not say the ground_truth {case.ground_truth!r} "
            f"after {case.prompt!r}; it {_says(pre)}.{probability}{fix} the ground truth the model holds, "
            "or leave ground_truth out."
        ),
        "said": _said(pre),
    }


def target_warning(method: str, case: EditCase, post: CaseMeasurement) -> dict[str, Any] | None:
    """A warning when, after the edit, greedy decoding from the edit prompt does not give the target."""
    if post.says(case.target):
        return None
    return {
        "code": TARGET_NOT_SAID,
        "message": f"[{method}] edit {case.case_id!r} did not take: after it the model {_says(post)}, not {case.target!r}",
        "said": _said(post),
    }


def _target_nll(measurement: CaseMeasurement) -> float | None:
    for probe in measurement.probes:
        if probe.metric == "reliability" and probe.protocol == "teacher_forced" and "nll" in probe.extra:
            return float(probe.extra["nll"])
    return None


def unchanged_warning(method: str, case: EditCase, pre: CaseMeasurement, post: CaseMeasurement) -> dict[str, Any] | None:
    """A warning when the edit left the model's reading of its own prompt unchanged (target NLL within :data:`UNCHANGED_NATS`)."""
    before, after = _target_nll(pre), _target_nll(post)
    if before is None or after is None or abs(after - before) >= UNCHANGED_NATS:
        return None
    return {
        "code": OUTPUTS_UNCHANGED,
        "message": (
            f"[{method}] edit {case.case_id!r} left the model's outputs unchanged: P({case.target!r} | {case.prompt!r}) "
            f"is what it was before the edit (NLL {after:.4f} nats per token). The method wrote nothing the model "
            f"uses; check its layer and settings (keditlab methods shows them)."
        ),
        "said": _said(post),
    }
