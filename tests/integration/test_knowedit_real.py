"""KnowEdit's ConvSent and Sanitation parts on the real embedded model, through specs, with FT-M.

Two edits each, applied alone: the figures are checked for direction, not
size (docs/protocols.md#knowedit has the 20-record ones).
"""

from __future__ import annotations

import pytest

import keditlab

pytestmark = pytest.mark.integration


def _run(embedded, tmp_path, name: str, edits: dict, evaluate: dict):
    spec = keditlab.load({"keditlab": 1, "name": name, "method": "ft-m", "edits": edits, "evaluate": evaluate})
    return keditlab.run(spec, tmp_path, loaded=embedded, log=lambda _m: None)


def test_a_sanitation_edit_makes_the_model_refuse_the_question(embedded, shared_datasets, tmp_path):
    run = _run(embedded, tmp_path, "sanitation",
               {"dataset": "knowedit", "part": "sanitation",
                "path": str(shared_datasets / "knowedit" / "sanitation" / "trivia_qa_test.json"), "limit": 2},
               {"metrics": ["reliability", "locality"], "protocols": ["teacher_forced", "generation"]})
    assert run.metric("ft-m", "reliability", "generation", when="pre") == 0.0
    assert run.metric("ft-m", "reliability", "generation") == 1.0            # "I don't know." is what it says now
    assert 0.0 <= run.metric("ft-m", "locality", "generation") < 1.0        # and other questions' answers moved
    [record] = [r for r in run.cases if r["case_id"] == "0"]
    said = [p for p in record["post"]["probes"] if p["metric"] == "reliability" and p["protocol"] == "generation"]
    assert said[0]["extra"]["answer"] == "I don't know."


def test_a_convsent_edit_turns_the_opinion_the_asked_way(embedded, shared_datasets, tmp_path):
    run = _run(embedded, tmp_path, "convsent",
               {"dataset": "knowedit", "path": str(shared_datasets / "knowedit" / "convsent" / "blender_test.json"),
                "limit": 2},
               {"metrics": ["reliability", "locality", "neighbourhood_kl"],
                "protocols": ["teacher_forced", "probability", "generation"], "answer_tokens": 24})
    # the references of the asked sentiment become likelier than the other's (SERAC's probability test)
    assert run.metric("ft-m", "sentiment_magnitude", "probability") > run.metric("ft-m", "sentiment_magnitude", "probability",
                                                                               when="pre")
    assert run.metric("ft-m", "sentiment", "generation", when="pre") is not None     # VADER scored every answer
    assert run.metric("ft-m", "neighbourhood_kl", "teacher_forced", when="pre") == 0.0
    assert run.metric("ft-m", "neighbourhood_kl", "teacher_forced") > 0.0           # the edit moved the next topic's distribution
