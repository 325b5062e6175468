"""General ability (``evaluate.general``): lm-evaluation-harness on the model keditlab holds, before and after the edits.

Three kinds of check, on tiny random models with the embedded tokenizer:

* the ``knowns`` task's documents, and its score from the harness against a
  **hand count**: each fact's choices read with keditlab's own teacher-forced
  pass, the likeliest one compared with the true attribute;
* runs (``run_spec``) in mode ``batch`` and ``sequential`` with ``{every: k}``:
  the scores are rows of their own (``general:knowns`` / ``lm-eval:acc``) in the
  summary, the text table, ``table.csv``, ``table.md`` and ``general.jsonl``,
  taken on the model the schedule says, and the model is unedited afterwards;
* bad ``general`` sections: positioned spec errors (``file:line:col: field:
  ... Fix: ...``), and the runner's errors for what a spec cannot know (a
  harness task that does not exist, or whose data is out of reach, the harness
  not installed).

The knowns file is the shared copy (``../shared/datasets/knowns/known_1000.json``,
through ``$KEDITLAB_DATASETS``), the file keditlab downloads and pins.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import sys
from dataclasses import dataclass, field

import pytest
import torch

from keditlab.evaluate import teacher_forced
from keditlab.evaluate.knowns_task import knowns_docs
from keditlab.methods import Capabilities, EditHandle, EditMethod, MethodConfig
from keditlab.runner import RunError, run_spec
from keditlab.spec import EditCase, EvalSpec, GeneralSpec, MethodSpec, ModelSpec, Probe, RunSettings, Spec, parse_spec
from tests.conftest import make_tiny_model, only_spec_error, spec_errors

#: The tests that run the harness; the spec's own checks need no harness.
needs_harness = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None,
                                   reason="evaluate.general needs lm-eval: pip install 'keditlab[general]'")

LIMIT = 12
EDITS = tuple(
    EditCase(prompt=f"The city number {i} is in", subject=f"city number {i}", target=target,
             locality=(Probe("locality", "The capital of Japan is", "Tokyo"),), case_id=f"c{i}")
    for i, target in enumerate(["Rome", "Paris", "Berlin", "Oslo"])
)


@pytest.fixture(scope="module")
def knowns_file(shared_datasets):
    path = shared_datasets / "knowns" / "known_1000.json"
    if not path.is_file():
        pytest.skip(f"no shared knowns file at {path}")
    return path


@pytest.fixture(scope="module")
def model():
    """A tiny random Llama with the embedded tokenizer's vocabulary, so real prompts can be read (unedited by every test)."""
    return make_tiny_model("llama", vocab_size=49152)


@dataclass
class ShiftConfig(MethodConfig):
    scale: float = field(default=0.5, metadata={"help": "Added to every entry of the first MLP output weight, per edit."})


class Shift(EditMethod):
    """A test method that changes the model visibly: ``scale`` × (edits in the call) added to one weight matrix."""

    name = "shift"
    config_class = ShiftConfig
    summary = "test method"
    capabilities = Capabilities(batch=True, sequential=True)

    def _apply(self, model, tokenizer, profile, cases, config, context) -> EditHandle:
        name = f"{profile.mlp_out_module(0)}.weight"
        handle = EditHandle(self.name, model, self.snapshot(model, [name]))
        with torch.no_grad():
            dict(model.named_parameters())[name].add_(config.scale * len(cases))
        return handle


@pytest.fixture
def shift(monkeypatch):
    from keditlab import methods

    monkeypatch.setitem(methods._REGISTRY, "shift", Shift)


def hand_count(model, tokenizer, docs) -> float:
    """The share of ``docs`` whose true attribute is the likeliest of its choices, read by keditlab's own teacher-forced pass."""
    pairs = [(doc["prompt"], choice) for doc in docs for choice in doc["choices"]]
    readings = iter(teacher_forced(model, tokenizer, pairs, batch_size=8))
    right = 0
    for doc in docs:
        loglikelihoods = [-next(readings).total_nll for _ in doc["choices"]]
        right += max(range(len(loglikelihoods)), key=loglikelihoods.__getitem__) == doc["gold"]
    return right / len(docs)


def general_settings(knowns_file, limit=LIMIT) -> GeneralSpec:
    return GeneralSpec(tasks=("knowns",), limit=limit, knowns_file=str(knowns_file))


def spec_of(knowns_file, mode, batch_size=2, evaluate_at=None) -> Spec:
    return Spec(name="general", model=ModelSpec(), methods=(MethodSpec("shift"),), edits=EDITS,
                evaluate=EvalSpec(metrics=("reliability", "locality"), protocols=("teacher_forced",), max_new_tokens=2,
                                  general=general_settings(knowns_file)),
                run=RunSettings(mode=mode, batch_size=batch_size, evaluate_at=evaluate_at))


def params(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def measured_with(model, tokenizer, knowns_file, shift_by: float) -> float:
    """The harness's knowns acc on ``model`` with ``shift_by`` added as Shift adds it (then taken off again)."""
    from keditlab.evaluate.general import GeneralEvaluator

    weight = model.get_submodule("model.layers.0.mlp.down_proj").weight
    kept = weight.detach().clone()
    with torch.no_grad():
        weight.add_(shift_by)
    try:
        return GeneralEvaluator(general_settings(knowns_file)).measure(model, tokenizer).scores[0].value
    finally:
        with torch.no_grad():
            weight.copy_(kept)


# -- the knowns task ---------------------------------------------------------------------------------------------------


def test_knowns_documents_are_the_facts_with_three_attributes_of_their_relation(knowns_file):
    records = json.loads(knowns_file.read_text(encoding="utf-8"))
    docs = knowns_docs(knowns_file)
    assert len(docs) == len(records) - sum(r["relation_id"] == "P190" for r in records)  # P190: one attribute, no choice
    assert docs[0]["prompt"] == "Vinson Massif is located in the continent of"
    assert docs[0]["choices"] == ["Africa", "Antarctica", "Asia", "Europe"] and docs[0]["gold"] == 1
    attributes = {}
    for record in records:
        attributes.setdefault(record["relation_id"], set()).add(record["attribute"])
    for doc in docs:
        assert doc["choices"][doc["gold"]] == doc["attribute"]
        assert len(set(doc["choices"])) == len(doc["choices"]) == min(4, len(attributes[doc["relation_id"]]))
        assert set(doc["choices"]) <= attributes[doc["relation_id"]]
        assert doc["choices"] == sorted(doc["choices"], key=lambda text: (text.casefold(), text))
    assert len({doc["gold"] for doc in docs}) == 4, "the true attribute is not always in one place"


@needs_harness
def test_the_harness_knowns_score_is_the_hand_count(model, tokenizer, knowns_file):
    from keditlab.evaluate.general import GeneralEvaluator

    evaluator = GeneralEvaluator(general_settings(knowns_file, limit=LIMIT), batch_size=4)
    evaluator.check_tasks()
    before = params(model)
    result = evaluator.measure(model, tokenizer)
    (score,) = result.scores
    assert (score.task, score.metric, score.n) == ("knowns", "acc", LIMIT)
    assert score.row == ("general:knowns", "lm-eval:acc")
    expected = hand_count(model, tokenizer, knowns_docs(knowns_file)[:LIMIT])
    assert 0 < expected < 1, "a count of all or none would agree with a harness that read nothing right"
    assert score.value == pytest.approx(expected), f"harness {score.value}, hand count {expected}"
    assert score.stderr == pytest.approx((expected * (1 - expected) / (LIMIT - 1)) ** 0.5)
    # the model is read, never changed, and the tokenizer keditlab holds is not the one the harness may pad
    assert all(torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())
    assert not model.training


# -- runs: before/after rows of their own -------------------------------------------------------------------------------


@needs_harness
def test_a_batch_run_reports_general_ability_before_and_after_as_rows_of_its_own(model, tokenizer, knowns_file, shift,
                                                                                tmp_path):
    from keditlab.models import LoadedModel, derive_profile
    from keditlab.runner import Run

    before = params(model)
    run = run_spec(spec_of(knowns_file, "batch"), tmp_path, loaded=LoadedModel(model, tokenizer, derive_profile(model)),
                   log=lambda message: None)
    assert all(torch.equal(p.detach(), before[n]) for n, p in model.named_parameters()), "the run left an edit behind"

    row = run.summary["methods"]["shift"]["metrics"]["general:knowns"]["lm-eval:acc"]
    assert row["n"] == LIMIT
    assert row["pre"] == pytest.approx(hand_count(model, tokenizer, knowns_docs(knowns_file)[:LIMIT]))
    # after: the last batch (2 edits, Shift adds 0.5 each) on the otherwise unedited model
    assert row["post"] == pytest.approx(measured_with(model, tokenizer, knowns_file, 1.0))
    assert [m for m in run.summary["methods"]["shift"]["metrics"] if m.startswith("general")] == ["general:knowns"]
    general = run.summary["methods"]["shift"]["general"]
    assert [p["edits_applied"] for p in general["points"]] == [2] and general["limit"] == LIMIT

    assert Run.load(run.path).metric("shift", "general:knowns", "lm-eval:acc", "pre") == row["pre"]
    table = run.table()
    assert f"general:knowns (lm-eval:acc)  {row['pre']:.2f} → {row['post']:.2f}" in table
    assert "not an edit\n metric" in table
    rows = list(csv.DictReader(io.StringIO((run.path / "table.csv").read_text(encoding="utf-8"))))
    assert [(r["metric"], r["protocol"], r["n"]) for r in rows if r["metric"].startswith("general")] == [
        ("general:knowns", "lm-eval:acc", str(LIMIT))]
    markdown = (run.path / "table.md").read_text(encoding="utf-8")
    assert f"| shift | knowns | lm-eval:acc | {row['pre']:.3f} → {row['post']:.3f} | {LIMIT} |" in markdown
    lines = [json.loads(line) for line in (run.path / "general.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(line["method"], line["edits_applied"]) for line in lines] == [(None, 0), ("shift", 2)]
    manifest = run.manifest["general"]
    assert manifest["tasks"] == ["knowns"] and manifest["version"] and manifest["knowns_file"]["source"]["verified"]
    assert not any(s["metric"].startswith("general") for r in run.cases for s in r["scores"]), "mixed into edit records"


@needs_harness
def test_a_sequential_run_measures_general_ability_at_every_retention_point(model, tokenizer, knowns_file, shift):
    from keditlab.models import LoadedModel, derive_profile

    run = run_spec(spec_of(knowns_file, "sequential", batch_size=1, evaluate_at={"every": 2}), None,
                   loaded=LoadedModel(model, tokenizer, derive_profile(model)), log=lambda message: None)
    method = run.summary["methods"]["shift"]
    points = method["general"]["points"]
    assert [p["edits_applied"] for p in points] == [2, 4]
    assert points[0]["scores"][0]["value"] == pytest.approx(measured_with(model, tokenizer, knowns_file, 1.0))
    assert points[1]["scores"][0]["value"] == pytest.approx(measured_with(model, tokenizer, knowns_file, 2.0))
    assert method["metrics"]["general:knowns"]["lm-eval:acc"]["post"] == points[1]["scores"][0]["value"]
    assert [p["metrics"]["general:knowns"]["lm-eval:acc"] for p in method["curve"]] == [
        p["scores"][0]["value"] for p in points]
    assert "general:knowns (acc)" in run.table()   # a column of the retention block


@needs_harness
@pytest.mark.parametrize("records_kept, measured_again", [(4, 0), (3, 1)])   # all records kept / the last batch cut
def test_a_resumed_run_keeps_the_general_measurements_of_the_work_it_keeps(model, tokenizer, knowns_file, shift, tmp_path,
                                                                          records_kept, measured_again):
    from keditlab.models import LoadedModel, derive_profile
    from keditlab.runner.resume import read_run_folder

    loaded = LoadedModel(model, tokenizer, derive_profile(model))
    whole = run_spec(spec_of(knowns_file, "batch"), tmp_path, loaded=loaded, log=lambda message: None)
    folder = whole.path   # stopped with `records_kept` of its 4 case records written
    lines = (folder / "cases.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "cases.jsonl").write_text("".join(lines[:records_kept]), encoding="utf-8")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    (folder / "manifest.json").write_text(json.dumps({**manifest, "status": "failed"}), encoding="utf-8")

    messages: list[str] = []
    _, resumed = read_run_folder(folder)
    run = run_spec(spec_of(knowns_file, "batch"), None, loaded=loaded, log=messages.append, resume=resumed)
    assert sum("measuring general ability with" in m for m in messages) == measured_again
    general = [json.loads(line) for line in (folder / "general.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(line["method"], line["point"]) for line in general] == [(None, None), ("shift", 1)]
    assert (run.summary["methods"]["shift"]["metrics"]["general:knowns"]
            == whole.summary["methods"]["shift"]["metrics"]["general:knowns"])


class Prompted(Shift):
    """A test method whose edits are a context placed before prompts, as IKE's: the weights stay as they are."""

    name = "prompted"

    def _apply(self, model, tokenizer, profile, cases, config, context) -> EditHandle:
        handle = EditHandle(self.name, model, {})
        handle.context = lambda prompt: "New fact: the city is elsewhere. " + prompt
        return handle


@needs_harness
def test_a_method_whose_edits_are_a_context_is_not_measured_and_says_why(model, tokenizer, knowns_file, monkeypatch):
    import dataclasses

    from keditlab import methods
    from keditlab.models import LoadedModel, derive_profile

    monkeypatch.setitem(methods._REGISTRY, "prompted", Prompted)
    spec = dataclasses.replace(spec_of(knowns_file, "batch"), methods=(MethodSpec("prompted"),))
    messages: list[str] = []
    run = run_spec(spec, None, loaded=LoadedModel(model, tokenizer, derive_profile(model)), log=messages.append)
    method = run.summary["methods"]["prompted"]
    row = method["metrics"]["general:knowns"]["lm-eval:acc"]
    assert row["pre"] is not None and row["post"] is None
    assert method["general"]["points"] == [] and "context placed before" in method["general"]["skipped"]
    assert sum("general ability not measured" in m for m in messages) == 1
    assert "general:knowns (lm-eval:acc)" in run.table() and " → —" in run.table()


def test_a_python_spec_in_single_mode_is_refused_before_the_model_is_loaded(knowns_file, shift):
    with pytest.raises(RunError, match=r"run.mode is single.*Fix: add `mode: batch`"):
        run_spec(spec_of(knowns_file, "single", batch_size=1), None, log=lambda message: None)


# -- errors ------------------------------------------------------------------------------------------------------------

EDIT = """\
method: ft-m
edits:
  - prompt: "The Eiffel Tower is located in the city of"
    subject: Eiffel Tower
    target: Rome
"""


def errors_of(text: str):
    return spec_errors(text, "general.yaml")


def only_error(text: str):
    return only_spec_error(text, "general.yaml")


# (id, yaml, path, line, column, fragments)
CASES = [
    ("single-by-default", "keditlab: 1\n" + EDIT + "evaluate:\n  general: {tasks: [knowns]}\n",
     "evaluate.general", 8, 3, ["run.mode is single (the default)", "undoes each edit", "Fix: add `mode: batch`",
                                "`mode: sequential`"]),
    ("single-named", "keditlab: 1\n" + EDIT + "evaluate:\n  general: {tasks: [knowns]}\nrun: {mode: single}\n",
     "evaluate.general", 8, 3, ["run.mode (line 9) is single,", "Fix:"]),
    ("task-typo", "keditlab: 1\n" + EDIT + "evaluate:\n  general: {tasks: [knowns, knwons]}\nrun: {mode: batch, batch_size: 2}\n",
     "evaluate.general.tasks[1]", 8, 29, ["unknown general-ability task 'knwons' (did you mean 'knowns'?)",
                                          "offline tasks are: knowns", "hellaswag", "needs the network"]),
    ("task-wrong-case", "keditlab: 1\n" + EDIT + "evaluate:\n  general: {tasks: [Knowns]}\nrun: {mode: sequential}\n",
     "evaluate.general.tasks[0]", 8, 21, ["did you mean 'knowns'?"]),
    ("task-not-a-name", "keditlab: 1\n" + EDIT + "evaluate:\n  general: {tasks: [\"hella swag\"]}\nrun: {mode: sequential}\n",
     "evaluate.general.tasks[0]", 8, 21, ["hella swag"]),
    ("no-tasks", "keditlab: 1\n" + EDIT + "evaluate:\n  general: {tasks: []}\nrun: {mode: sequential}\n",
     "evaluate.general.tasks", 8, 20, ["at least one item"]),
    ("limit-zero", "keditlab: 1\n" + EDIT + "evaluate:\n  general: {limit: 0}\nrun: {mode: sequential}\n",
     "evaluate.general.limit", 8, 20, ["limit"]),
    ("unknown-key", "keditlab: 1\n" + EDIT + "evaluate:\n  general: {limt: 10}\nrun: {mode: sequential}\n",
     "evaluate.general.limt", 8, 13, ["unknown key 'limt'", "did you mean 'limit'?"]),
    ("knowns-file-unused", "keditlab: 1\n" + EDIT + "evaluate:\n  general: {tasks: [hellaswag], knowns_file: k.json}\n"
     "run: {mode: sequential}\n", "evaluate.general.knowns_file", 8, 33, ["knowns_file is read by the knowns task",
                                                                          "add `knowns` to `tasks`"]),
    ("knowns-file-missing", "keditlab: 1\n" + EDIT + "evaluate:\n  general: {knowns_file: nowhere.json}\nrun: {mode: sequential}\n",
     "evaluate.general.knowns_file", 8, 26, ["nowhere.json"]),
]


@pytest.mark.parametrize(("text", "path", "line", "column", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_general_section_is_reported_at_its_place(text, path, line, column, fragments):
    error = only_error(text)
    assert (error.path, error.line, error.column) == (path, line, column), str(error)
    assert str(error).startswith(f"general.yaml:{line}:{column}: {path}: ")
    for fragment in fragments:
        assert fragment in str(error), str(error)
    assert "Fix:" in str(error)


def test_a_good_general_section_resolves_and_writes_back(knowns_file):
    import yaml

    text = "keditlab: 1\n" + EDIT + "evaluate:\n  general: {tasks: [knowns, hellaswag], limit: all}\nrun: {mode: batch, batch_size: 1}\n"
    assert errors_of(text) == []
    spec = parse_spec(text, "general.yaml")
    assert spec.evaluate.general == GeneralSpec(tasks=("knowns", "hellaswag"), limit=None, knowns_file=str(knowns_file))
    written = spec.to_spec_data()["evaluate"]["general"]
    assert written == {"tasks": ["knowns", "hellaswag"], "limit": "all", "knowns_file": str(knowns_file)}
    assert parse_spec(yaml.safe_dump(spec.to_spec_data()), "general.yaml") == spec
    assert parse_spec("keditlab: 1\n" + EDIT, "general.yaml").evaluate.general is None
    assert parse_spec("keditlab: 1\n" + EDIT + "evaluate: {general: {}}\nrun: {mode: sequential}\n",
                      "general.yaml").evaluate.general.tasks == ("knowns",)


def test_without_a_local_copy_the_knowns_file_is_downloaded_once_and_offline_says_how_to_give_one(monkeypatch, tmp_path,
                                                                                                 knowns_file):
    from keditlab.data import download
    from keditlab.data.download import DatasetUnavailableError, deferred_downloads

    monkeypatch.delenv("KEDITLAB_DATASETS", raising=False)
    monkeypatch.setenv("KEDITLAB_CACHE", str(tmp_path / "cache"))
    text = "keditlab: 1\n" + EDIT + "evaluate:\n  general: {tasks: [knowns]}\nrun: {mode: sequential}\n"
    with deferred_downloads() as pending:   # validation: nothing downloaded, the file noted
        assert errors_of(text) == []
        parse_spec(text, "general.yaml")
    assert {p.name for p in pending} == {"knowns/known_1000.json"}

    def offline(url, folder, filename):
        raise OSError("no network")

    monkeypatch.setattr(download, "fetch_url", offline)
    with pytest.raises(DatasetUnavailableError, match=r"knowns task reads the published knowns/known_1000\.json.*"
                                                      r"Fix: give a local copy .* as `knowns_file:"):
        parse_spec(text, "general.yaml")

    def served(url, folder, filename):   # the pinned bytes, as the source serves them
        (folder / filename).write_bytes(knowns_file.read_bytes())
        return folder / filename

    monkeypatch.setattr(download, "fetch_url", served)
    spec = parse_spec(text, "general.yaml")
    assert spec.evaluate.general.knowns_file == str(tmp_path / "cache" / "datasets" / "knowns" / "known_1000.json")


@needs_harness
def test_an_unknown_harness_task_is_refused_before_any_model_with_a_did_you_mean(knowns_file):
    from keditlab.evaluate.general import GeneralError, GeneralEvaluator

    settings = GeneralSpec(tasks=("knowns", "hellaswagg"), limit=5, knowns_file=str(knowns_file))
    with pytest.raises(GeneralError, match=r"unknown task 'hellaswagg' \(did you mean 'hellaswag'\?\).*lm-eval ls tasks"):
        GeneralEvaluator(settings).check_tasks()


@needs_harness
def test_a_harness_task_whose_data_is_out_of_reach_says_it_needs_the_network(monkeypatch):
    import datasets

    from keditlab.evaluate.general import GeneralError, GeneralEvaluator

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'Rowan/hellaswag' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(GeneralError) as caught:
        GeneralEvaluator(GeneralSpec(tasks=("hellaswag",), limit=5)).check_tasks()
    message = str(caught.value)
    assert "could not load the data of hellaswag" in message and "Couldn't reach" in message
    assert "downloads its data from the Hugging Face Hub the first time it runs" in message
    assert "Fix: run once where the Hugging Face Hub can be reached, or use keditlab's offline task knowns" in message


def test_without_the_harness_the_fix_says_what_to_install(monkeypatch, knowns_file):
    from keditlab.evaluate.general import GeneralError, require_harness

    monkeypatch.setitem(sys.modules, "lm_eval", None)   # `import lm_eval` now fails as if it were not installed
    with pytest.raises(GeneralError, match=r"not installed.*Fix: pip install 'keditlab\[general\]'"):
        require_harness()
