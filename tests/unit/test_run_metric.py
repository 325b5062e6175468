"""``Run.metric`` reads one mean; asking for something the run lacks names what it has, never a bare KeyError or None."""

from __future__ import annotations

import pytest

from keditlab.runner import MetricLookupError, Run
from keditlab.runner.summary import MethodTally, build_summary


@pytest.fixture
def run() -> Run:
    scores = {("reliability", "teacher_forced"): 0.0, ("reliability", "probability"): 0.0,
              ("locality", "teacher_forced"): 1.0, ("fluency", "generation"): 3.0}
    after = {**scores, ("reliability", "teacher_forced"): 1.0, ("fluency", "generation"): 3.5}
    tallies = {}
    for label in ("rome", "ft-m"):
        tally = tallies[label] = MethodTally(label)
        tally.add(scores, after, 1.0, 1.0)
    return Run(summary=build_summary("demo", "smollm2-135m", 1, tallies), cases=[], manifest={})


def test_values(run):
    assert run.metric("rome", "reliability") == 1.0
    assert run.metric("rome", "reliability", when="pre") == 0.0
    assert run.metric("ft-m", "reliability", "probability", when="pre") == 0.0
    assert run.metric("rome", "fluency", "generation") == 3.5


def message(run, *args, **kwargs) -> str:
    with pytest.raises(MetricLookupError) as info:
        run.metric(*args, **kwargs)
    assert isinstance(info.value, KeyError), "still caught by `except KeyError`"
    return str(info.value)


def test_unknown_method(run):
    assert message(run, "rom", "reliability") == (
        "this run has no method 'rom' (did you mean 'rome'?); its methods (labels) are: rome, ft-m"
    )


def test_unknown_metric(run):
    text = message(run, "rome", "reliabilty")
    assert "unknown metric 'reliabilty' (did you mean 'reliability'?)" in text
    assert "measured for 'rome': reliability, locality, fluency" in text


def test_metric_that_was_not_measured(run):
    text = message(run, "rome", "portability")
    assert "metric 'portability' was not measured in this run" in text and "evaluate:" in text
    assert "reliability, locality, fluency" in text


def test_protocol_the_metric_was_not_measured_under(run):
    assert message(run, "rome", "locality", "probability") == (
        "'locality' was not measured under the protocol 'probability' for 'rome' "
        "(that protocol needs a ground_truth in the edits). 'locality' was measured under: teacher_forced"
    )
    assert "was measured under: probability, teacher_forced" in message(run, "rome", "reliability", "generation")


def test_unknown_protocol(run):
    text = message(run, "rome", "reliability", "teacher-forced")
    assert "unknown protocol 'teacher-forced' (did you mean 'teacher_forced'?)" in text
    assert "protocols are: teacher_forced, probability, generation" in text


def test_short_protocol_name_from_the_table(run):
    assert "'tf' is the table's short name; write protocol='teacher_forced'" in message(run, "rome", "reliability", "tf")


def test_bad_when(run):
    assert message(run, "rome", "reliability", when="after") == "when must be 'pre' (before the edit) or 'post' (after it), got 'after'"
    assert "(did you mean 'post'?)" in message(run, "rome", "reliability", when="posts")


def test_metric_asked_for_but_without_probes_says_so(run):
    """CounterFact records have no portability probes: the metric was requested, yet has no value."""
    run.manifest = {"spec": {"evaluate": {"metrics": ["reliability", "locality", "portability"]}}}
    text = message(run, "rome", "portability")
    assert text.startswith("metric 'portability' has no value in this run: it was asked for, but no edit has portability probes")
