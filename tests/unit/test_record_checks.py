"""Benchmark records are held to the rules of inline edits, and a bad one is named by file, index and field.

Every reader builds an ``EditCase`` from each selected record and
``keditlab.data.records._cases`` checks it with the one shared check,
``keditlab.vocabulary.case_problems`` (the rules a spec's inline edits follow:
non-empty texts, the subject inside the prompt, ...), and keeps case ids
unique.  Here each kind of malformed record is written into a small JSON file
of its format, between two good records, and must be:

* with ``on_bad_record: stop`` (the default): a ``RecordFormatError`` naming the
  file, ``record 1`` and the record's own field (``target_new``, ``alt``, ...);
* with ``on_bad_record: skip``: left out, the good records 0 and 2 kept, its
  message listed once.

The last tests read the real shipped benchmark files and count rejections:
none, but for two records of ZsRE's train file whose new answer is empty.
Nothing here loads a model.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from keditlab.data import RecordFormatError, dataset_cases
from keditlab.data.records import BadRecordError
from keditlab.spec import load_spec, validate_dict, validate_file
from keditlab.vocabulary import EditCase, Probe, case_problems

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

# -- one good record of each format ------------------------------------------------------------------------------------

ROME = {"case_id": 0, "requested_rewrite": {"prompt": "{} is located in", "subject": "Angola",
                                            "target_new": {"str": "Antarctica"}, "target_true": {"str": "Africa"}},
        "paraphrase_prompts": ["Angola belongs to the continent of"], "neighborhood_prompts": ["Ghana is in", "Kenya is in"]}
FLAT = {"case_id": 0, "prompt": "The Eiffel Tower is in", "subject": "Eiffel Tower", "target_new": "Rome",
        "ground_truth": "Paris", "rephrase_prompt": "Where is the Eiffel Tower? It is in",
        "locality_prompt": "Big Ben is in", "locality_ground_truth": "London"}
ZSRE = {"subject": "Eiffel Tower", "src": "Where is the Eiffel Tower?", "alt": "Rome", "answers": ["Paris"],
        "rephrase": "In which city is the Eiffel Tower?", "loc": "nq question: who wrote hamlet", "loc_ans": "Shakespeare",
        "portability": {"New Question": "In which country is the Eiffel Tower?", "New Answer": "Italy"}}
EASYEDIT = {"prompt": "The Eiffel Tower is in", "subject": "Eiffel Tower", "target_new": "Rome", "ground_truth": "Paris",
            "rephrase_prompt": "Where is the Eiffel Tower? It is in",
            "locality": {"neighbour": {"prompt": "Big Ben is in", "ground_truth": "London"}},
            "portability": {"one_hop": {"prompt": "The country of the Eiffel Tower is", "ground_truth": "Italy"}}}
MQUAKE = {"case_id": 0, "requested_rewrite": [
    {"prompt": "{} was performed by", "subject": "Hey Jude", "target_new": {"str": "Madonna"},
     "target_true": {"str": "The Beatles"}, "question": "Who performed Hey Jude?"},
    {"prompt": "{} is a citizen of", "subject": "Madonna", "target_new": {"str": "Croatia"},
     "target_true": {"str": "United States of America"}, "question": "What is the country of citizenship of Madonna?"}],
    "questions": ["Which country is the performer of Hey Jude a citizen of?", "Hey Jude's performer is a citizen of which country?"],
    "answer": "United Kingdom", "answer_alias": ["UK"], "new_answer": "Croatia", "new_answer_alias": ["Republic of Croatia"]}
KNOWEDIT = {"subject": "Leo Arrigoni", "prompt": "The place of birth of Leo Arrigoni is", "target_new": "Buenos Aires",
            "ground_truth": "Rosario", "rephrase": "Leo Arrigoni was born in",
            "portability": {"Reasoning": [{"prompt": "Leo Arrigoni was born in the country of",
                                           "ground_truth": [["Argentina", "Argentine Republic"]]}]},
            "locality": {"Relation_Specificity": [{"prompt": "The occupation of Leo Arrigoni is", "ground_truth": [["footballer"]]},
                                                  {"prompt": "The sport of Leo Arrigoni is", "ground_truth": [["association football"]]}]}}
WIKIBIO = {"concept": "ada lovelace", "text": "This is a Wikipedia passage about ada lovelace. She was a mathematician.",
           "labels": "She wrote the first program.",
           "locality": {"Relation_Specificity": [{"prompt": "The field of work of ada lovelace is", "ground_truth": ["mathematics"]}]}}
RIPPLE = json.loads((FIXTURES / "rippleedits_popular.json").read_text(encoding="utf-8"))[0]

GOOD = {"counterfact": ROME, "flat": FLAT, "zsre": ZSRE, "easyedit": EASYEDIT, "mquake": MQUAKE, "knowedit": KNOWEDIT,
        "wikibio": WIKIBIO, "rippleedits": RIPPLE}
#: The dataset (reader) each format is read as.
READER = {"flat": "counterfact", "wikibio": "knowedit"}


def put(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change to a record: the value at ``path`` (``a.b[1].c``; ``a[+]`` appends to the list ``a``) becomes ``value``."""
    parts = [int(p) if p.isdigit() else p for p in path.replace("[", ".").replace("]", "").split(".")]

    def change(record: dict[str, Any]) -> None:
        node = record
        for part in parts[:-1]:
            node = node[part]
        if parts[-1] == "+":
            node.append(value)
        else:
            node[parts[-1]] = value

    return change


# (format, the change that makes record 1 malformed, what the message must name: the field, then the problem)
MALFORMED = [
    # CounterFact, ROME's format
    ("counterfact", put("requested_rewrite.target_new.str", ""), "requested_rewrite.target_new.str is an empty string"),
    ("counterfact", put("requested_rewrite.target_true.str", None), "requested_rewrite.target_true.str is null, not a string"),
    ("counterfact", put("requested_rewrite.subject", 7), "requested_rewrite.subject is the number 7, not a string"),
    ("counterfact", put("paraphrase_prompts[0]", " "), "paraphrase_prompts[0] is only blanks"),
    ("counterfact", put("neighborhood_prompts[1]", ""), "neighborhood_prompts[1] is an empty string"),
    ("counterfact", put("requested_rewrite.prompt", "is located in"),
     "requested_rewrite.prompt 'is located in' has no {} where the subject goes"),
    # CounterFact, the flat format
    ("flat", put("prompt", "   "), "prompt is only blanks"),
    ("flat", put("subject", "eiffel tower"), "subject 'eiffel tower' does not occur in the prompt 'The Eiffel Tower is in' "
                                             "(it does with different capitalisation: 'Eiffel Tower')"),
    ("flat", put("target_new", 42), 'target_new is the number 42, not a string'),
    ("flat", put("ground_truth", ""), "ground_truth is an empty string"),
    ("flat", put("rephrase_prompt", ""), "rephrase_prompt is an empty string"),
    ("flat", put("locality_prompt", ""), "locality_prompt is an empty string"),
    ("flat", put("locality_ground_truth", None), "locality_ground_truth is null, not a string"),
    ("flat", put("case_id", None), "case_id is null, not a string"),
    # ZsRE, MEND's format
    ("zsre", put("alt", ""), "alt is an empty string"),
    ("zsre", put("src", ["Where is the Eiffel Tower?"]), "src is a list of 1, not a string"),
    ("zsre", put("subject", "Eifel Tower"), "subject 'Eifel Tower' does not occur in the prompt"),
    ("zsre", put("answers", [None]), "answers[0] is null, not a string"),
    ("zsre", put("answers", "Paris"), "answers is a text, not a list of answers"),
    ("zsre", put("rephrase", ""), "rephrase is an empty string"),
    ("zsre", put("loc", ""), "loc is an empty string"),
    ("zsre", put("loc_ans", None), "loc_ans is null, not a string"),
    ("zsre", put("portability.New Answer", ""), "portability['New Answer'] is an empty string"),
    # the reference toolkit's request format
    ("easyedit", put("ground_truth", ["Paris"]), "ground_truth is a list of 1, not a string"),
    ("easyedit", put("locality.neighbour.ground_truth", ""), "locality.neighbour.ground_truth is an empty string"),
    ("easyedit", put("portability.one_hop.prompt", None), "portability.one_hop.prompt is null, not a string"),
    ("easyedit", put("locality.neighbour", {"prompt": ["a", "b"], "ground_truth": ["c"]}),
     "locality.neighbour has 2 prompts but 1 answers"),
    # MQuAKE
    ("mquake", put("requested_rewrite[1].target_new.str", ""), "requested_rewrite[1].target_new.str is an empty string"),
    ("mquake", put("requested_rewrite[0].question", ""), "requested_rewrite[0].question is an empty string"),
    ("mquake", put("questions[1]", ""), "questions[1] is an empty string"),
    ("mquake", put("new_answer", None), "new_answer is null, not a string"),
    ("mquake", put("answer", 1999), "answer is the number 1999, not a string"),
    ("mquake", put("new_answer_alias[+]", ""), "new_answer_alias[1] is an empty string"),
    ("mquake", put("questions", "Which country?"), "questions is a str, not a list"),
    # KnowEdit
    ("knowedit", put("target_new", ""), "target_new is an empty string"),
    ("knowedit", put("ground_truth", 5), "ground_truth is the number 5, not a string"),
    ("knowedit", put("ground_truth", [[None]]), "ground_truth holds null, not a string"),
    ("knowedit", put("rephrase", " "), "rephrase is only blanks"),
    ("knowedit", put("locality.Relation_Specificity[1].ground_truth", [[""]]),
     "locality.Relation_Specificity[1].ground_truth is an empty string"),
    ("knowedit", put("portability.Reasoning[0].prompt", ""), "portability.Reasoning[0].prompt is an empty string"),
    ("knowedit", put("portability.Reasoning[0].ground_truth", [["Argentina", None]]),
     "portability.Reasoning[0].ground_truth (an alias) is null, not a string"),
    ("wikibio", put("concept", "Ada Byron"), "concept 'Ada Byron' does not occur in the prompt"),
    ("wikibio", put("labels", ""), "labels is an empty string"),
    # RippleEdits
    ("rippleedits", put("Relation_Specificity[0].test_queries[0].answers[0].value", None),
     "Relation_Specificity[0].test_queries[0].answers[0].value is null, not a string"),
    ("rippleedits", put("Compositionality_I[0].condition_queries[0].answers[0].aliases[0]", ""),
     "Compositionality_I[0].condition_queries[0].answers (an alias) is an empty string"),
]


def write_records(folder: Path, fmt: str, change: Callable[[dict[str, Any]], None] | None = None,
                  bad: tuple[int, ...] = (1,), count: int = 3) -> Path:
    """A file of ``count`` good records of ``fmt`` (case ids 0, 1, ...), ``change`` applied to the records ``bad``."""
    records = []
    for index in range(count):
        record = copy.deepcopy(GOOD[fmt])
        if "case_id" in record:
            record["case_id"] = index
        if change is not None and index in bad:
            change(record)
        records.append(record)
    path = folder / f"{fmt}_records.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def read(fmt: str, path: Path, **options: Any):
    return dataset_cases(READER.get(fmt, fmt), path, **options)


@pytest.mark.parametrize("fmt", sorted(GOOD))
def test_the_good_records_of_every_format_pass(tmp_path, fmt):
    cases = read(fmt, write_records(tmp_path, fmt))
    assert len(cases) == 3 and all(case_problems(case) == [] for case in cases)


@pytest.mark.parametrize("fmt,change,expected", MALFORMED, ids=[f"{m[0]}: {m[2][:60]}" for m in MALFORMED])
def test_a_malformed_record_names_file_index_and_field_and_skip_leaves_it_out(tmp_path, fmt, change, expected):
    path = write_records(tmp_path, fmt, change)
    with pytest.raises(RecordFormatError) as raised:
        read(fmt, path)
    message = str(raised.value)
    assert message.startswith(f"{path}: record 1")
    assert expected in message
    assert "Fix: " in message and message.endswith("(or set `on_bad_record: skip` to leave such records out)")

    skipped: list[str] = []
    cases = read(fmt, path, on_bad_record="skip", skipped=skipped)
    assert [case.case_id for case in cases] == ["0", "2"]   # exactly the bad record is left out
    assert len(skipped) == 1 and skipped[0].startswith(f"{path}: record 1") and expected in skipped[0]
    assert "on_bad_record" not in skipped[0]


def test_the_checked_error_carries_the_record_and_its_problems(tmp_path):
    path = write_records(tmp_path, "zsre", put("alt", ""))
    with pytest.raises(BadRecordError) as raised:
        read("zsre", path)
    error = raised.value
    assert (error.path, error.index) == (path, 1)
    assert [(p.field, p.problem) for p in error.problems] == [("alt", "is an empty string")]
    assert error.fix == "write the text it should hold"


def test_every_problem_of_a_record_is_named_once(tmp_path):
    def change(record):
        record["alt"], record["loc_ans"] = "", None

    path = write_records(tmp_path, "zsre", change)
    with pytest.raises(BadRecordError, match=r"record 1: alt is an empty string; loc_ans is null, not a string\. Fix: "):
        read("zsre", path)
    # CounterFact's target_true.str is the ground truth and every neighbour's answer: one field, said once
    path = write_records(tmp_path, "counterfact", put("requested_rewrite.target_true.str", ""))
    with pytest.raises(BadRecordError) as raised:
        read("counterfact", path)
    assert [p.field for p in raised.value.problems] == ["requested_rewrite.target_true.str"]


def test_repeated_case_ids_among_the_selected_records(tmp_path):
    records = [dict(FLAT, case_id=7), dict(FLAT, case_id=8), dict(FLAT, case_id=7), dict(FLAT, case_id="8")]
    path = tmp_path / "dup.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    with pytest.raises(RecordFormatError, match=r"dup.json: record 2: case_id '7' is the case id of record 0 too; "
                                                r"case ids name the run's per-case results.*Fix: give each record its own case_id"):
        dataset_cases("counterfact", path)
    skipped: list[str] = []
    cases = dataset_cases("counterfact", path, on_bad_record="skip", skipped=skipped)
    assert [case.case_id for case in cases] == ["7", "8"]
    assert [message.split(": ")[1] for message in skipped] == ["record 2", "record 3"]   # "8" and 8 are one id
    assert len(dataset_cases("counterfact", path, offset=1, limit=2)) == 2                # only the selection counts


def test_a_record_skipped_as_malformed_does_not_claim_its_case_id(tmp_path):
    records = [dict(FLAT, case_id=7, target_new=""), dict(FLAT, case_id=7)]
    path = tmp_path / "ids.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    skipped: list[str] = []
    assert [c.case_id for c in dataset_cases("counterfact", path, on_bad_record="skip", skipped=skipped)] == ["7"]
    assert len(skipped) == 1 and "record 0: target_new is an empty string" in skipped[0]


def test_skip_leaves_out_exactly_the_bad_records_of_a_longer_file(tmp_path):
    path = write_records(tmp_path, "zsre", put("loc_ans", ""), bad=(0, 3, 4, 8), count=10)
    skipped: list[str] = []
    cases = read("zsre", path, on_bad_record="skip", skipped=skipped)
    assert [case.case_id for case in cases] == ["1", "2", "5", "6", "7", "9"]
    assert [message.split(": ")[1] for message in skipped] == ["record 0", "record 3", "record 4", "record 8"]
    assert len(read("zsre", path, offset=5, limit=3)) == 3   # a window without the bad records reads with `stop`


def test_numbers_where_texts_belong_are_not_converted(tmp_path):
    # str(42) would have made an edit toward the text "42", str(None) toward "None"
    path = write_records(tmp_path, "flat", put("target_new", 42))
    with pytest.raises(RecordFormatError, match=r'target_new is the number 42, not a string\. Fix: write it as a JSON string \("42"\)'):
        read("flat", path)
    assert read("flat", write_records(tmp_path, "flat", put("case_id", 12)))[1].case_id == "12"   # a whole-number id is fine


# -- in a spec: a positioned error, or the record left out and listed ---------------------------------------------------


def test_a_spec_reading_a_bad_record_gets_an_error_on_its_path_line(tmp_path):
    write_records(tmp_path, "zsre", put("loc_ans", None))
    spec = tmp_path / "spec.yaml"
    spec.write_text("keditlab: 1\nmethod: rome\nedits:\n  dataset: zsre\n  path: zsre_records.json\n", encoding="utf-8")
    errors = validate_file(spec)
    assert len(errors) == 1, errors
    error = errors[0]
    assert (error.file, error.line, error.column, error.path) == (str(spec), 5, 9, "edits.path")
    assert error.message == "record 1 of 'zsre_records.json' is not a valid edit: loc_ans is null, not a string"
    assert error.fix == "write the text it should hold, as a JSON string (or set `on_bad_record: skip` to leave such records out)"
    assert str(error).startswith(f"{spec}:5:9: edits.path: record 1 of 'zsre_records.json'")

    spec.write_text(spec.read_text(encoding="utf-8") + "  on_bad_record: skip\n", encoding="utf-8")
    loaded = load_spec(spec)
    assert [case.case_id for case in loaded.edits] == ["0", "2"]
    assert len(loaded.edits_from.skipped) == 1 and "record 1: loc_ans is null" in loaded.edits_from.skipped[0]


def test_inline_edits_and_records_share_the_subject_rule_and_its_words(tmp_path):
    errors = validate_dict({"keditlab": 1, "edits": [{"prompt": "The Eiffel Tower is in", "subject": "eiffel tower", "target": "Rome"}]})
    assert len(errors) == 1
    inline = f"{errors[0].message}. Fix: {errors[0].fix}"
    path = write_records(tmp_path, "easyedit", put("subject", "eiffel tower"))
    with pytest.raises(RecordFormatError) as raised:
        read("easyedit", path)
    assert f"{path}: record 1: {inline}" in str(raised.value)


def test_the_shared_check_on_a_built_case():
    good = EditCase("The Eiffel Tower is in", "Eiffel Tower", "Rome", "Paris", ("Where is the Eiffel Tower?",),
                    (Probe("locality", "Big Ben is in", "London"),))
    assert case_problems(good) == []
    bad = EditCase("The Eiffel Tower is in", "Eifel Tower", " ", None, ("",),
                   (Probe("locality", "", "London", aliases=("",)),), case_id="",
                   joint=(EditCase("Big Ben is in", "Big Ben", None),))
    found = [(where, problem) for where, problem, _ in case_problems(bad)]
    assert found == [(("target",), "is only blanks"), (("rephrase", 0), "is an empty string"),
                     (("locality", 0, "prompt"), "is an empty string"), (("locality", 0, "aliases", 0), "is an empty string"),
                     (("case_id",), "is an empty string"), (("joint", 0, "target"), "is null, not a string")]
    subject = case_problems(EditCase("The Eiffel Tower is in", "Eifel Tower", "Rome"))
    assert subject[0].where == ("subject",) and subject[0].fix == "use the exact spelling from the prompt, e.g. 'Eiffel Tower'"


# -- the real shipped benchmark files ------------------------------------------------------------------------------------

#: Every shipped file a reader supports, with the dataset it is read as.  (KnowEdit's ConvSent and Sanitation parts
#: and ROME's knowns are not edit records any reader reads.)
REAL_FILES = [
    ("counterfact", "counterfact/counterfact_500.json"),
    ("counterfact", "counterfact/easyedit/counterfact-val.json"),
    ("counterfact", "counterfact/easyedit/counterfact-edit.json"),
    ("easyedit", "counterfact/easyedit/counterfact-val.json"),
    ("easyedit", "reference/baseline_10_edits.json"),
    ("zsre", "zsre/zsre_mend_eval_portability_gpt4.json"),
    ("zsre", "zsre/zsre_mend_train-1k.json"),
    ("mquake", "mquake/MQuAKE-hard.json"),
    ("mquake", "mquake/akew/MQuAKE-CF.json"),
    ("knowedit", "knowedit/zsre/ZsRE-test-all.json"),
    ("knowedit", "knowedit/wiki_recent/recent_train.json"),
    ("knowedit", "knowedit/wiki_counterfact/train_cf.json"),
    ("knowedit", "knowedit/wikibio/wikibio-test-all.json"),
    ("knowedit", "knowedit/wikibio/wikibio-train-all.json"),
]

#: The real records the rules reject: two ZsRE train records whose new answer (`alt`) is empty, so there is
#: nothing to edit toward (their `cond` reads "female >>  || ..."); every other record of the shipped files passes.
KNOWN_BAD = {("zsre", "zsre/zsre_mend_train-1k.json"): ["record 534: alt is an empty string",
                                                        "record 723: alt is an empty string"]}


def test_the_real_shipped_files_are_read_without_rejections(shared_datasets):
    rejected = {}
    for dataset, name in REAL_FILES:
        skipped: list[str] = []
        cases = dataset_cases(dataset, shared_datasets / name, limit=2000, on_bad_record="skip", skipped=skipped)
        assert cases, name
        if skipped:
            rejected[(dataset, name)] = [message.removeprefix(f"{shared_datasets / name}: ").split(". Fix:")[0]
                                         for message in skipped]
    assert rejected == KNOWN_BAD
