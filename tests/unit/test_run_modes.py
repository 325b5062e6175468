"""The runner in each mode on a tiny random model: what is measured on which model, records, summary, restore.

Most tests use ``nudge``, a test method registered only while a test runs: each
call adds ``scale`` × (edits in the call) to one weight matrix, so the change
recorded at a measurement (``changed_parameters``) tells exactly how many edits
were on the model when it was taken.  FT-M, a real batch-capable method, runs a
sequential retention curve end to end.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field

import pytest
import torch

from keditlab.methods import Capabilities, EditHandle, EditMethod, MethodConfig
from keditlab.runner import Run, RunError, run_spec
from keditlab.runner.render import text_table
from keditlab.spec import EditCase, EvalSpec, MethodSpec, ModelSpec, Probe, RunSettings, Spec, spec_from_dict
from tests.conftest import make_tiny_model

TARGETS = ["Rome", "Paris", "Berlin", "Oslo", "Bern"]
EDITS = [
    EditCase(prompt=f"The city number {i} is in", subject=f"city number {i}", target=target,
             rephrase=(f"City {i} lies in",), locality=(Probe("locality", "The capital of Japan is", "Tokyo"),),
             case_id=f"c{i}")
    for i, target in enumerate(TARGETS)
]
EVALUATE = EvalSpec(metrics=("reliability", "generalization", "locality"), max_new_tokens=2)


@dataclass
class NudgeConfig(MethodConfig):
    scale: float = field(default=0.01, metadata={"help": "Added to every entry of the weight, per edit."})


class Nudge(EditMethod):
    """A test method: adds ``scale`` per edit to the first MLP output projection; reports each case in details."""

    name = "nudge"
    config_class = NudgeConfig
    summary = "test method"
    capabilities = Capabilities(batch=True, sequential=True)
    calls: list[dict] = []  # per call: its cases, and whether the model was unedited when it began

    def _apply(self, model, tokenizer, profile, cases, config, context) -> EditHandle:
        name = f"{profile.mlp_out_module(0)}.weight"
        unedited = getattr(self, "reference", None)
        Nudge.calls.append({"cases": [c.case_id for c in cases], "unedited": unedited is not None and all(
            torch.equal(p.detach(), unedited[n]) for n, p in model.named_parameters())})
        handle = EditHandle(self.name, model, self.snapshot(model, [name]))
        with torch.no_grad():
            dict(model.named_parameters())[name].add_(config.scale * len(cases))
        handle.details = {"parameter": name, "cases": [{"case_id": c.case_id, "position": i} for i, c in enumerate(cases)]}
        return handle


class SingleOnly(Nudge):
    name = "single-only"
    capabilities = Capabilities(batch=False, sequential=False)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from keditlab.models.embedded import ensure_embedded_cache

    tok = AutoTokenizer.from_pretrained(ensure_embedded_cache())
    tok.pad_token = tok.pad_token or tok.eos_token
    return tok


@pytest.fixture
def registered(monkeypatch):
    """``nudge`` and ``single-only`` in the method registry for one test (the schema never sees them)."""
    from keditlab import methods

    monkeypatch.setitem(methods._REGISTRY, "nudge", Nudge)
    monkeypatch.setitem(methods._REGISTRY, "single-only", SingleOnly)
    Nudge.calls = []
    yield


def _params(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def run_modes(tokenizer, mode="single", batch_size=1, evaluate_at=None, methods=("nudge",), out=None, model=None):
    """``run_spec`` on a tiny Llama; returns the run, the model and its parameters before the run."""
    from keditlab.models import LoadedModel, derive_profile

    model = model or make_tiny_model("llama", vocab_size=49152)
    before = _params(model)
    Nudge.reference = before
    spec = modes_spec(mode, batch_size, evaluate_at, methods)
    run = run_spec(spec, out, loaded=LoadedModel(model, tokenizer, derive_profile(model)), log=lambda message: None)
    return run, model, before


def modes_spec(mode="single", batch_size=1, evaluate_at=None, methods=("nudge",)) -> Spec:
    return Spec(name="modes", model=ModelSpec(), methods=tuple(m if isinstance(m, MethodSpec) else MethodSpec(m) for m in methods),
                edits=tuple(EDITS), evaluate=EVALUATE, run=RunSettings(mode=mode, batch_size=batch_size, evaluate_at=evaluate_at))


def edits_on_model(record, model) -> float:
    """How many nudges of 0.01 the recorded change amounts to: the edits on the model when it was measured."""
    (norm,) = record["changed_parameters"].values()
    weight = model.get_submodule("model.layers.0.mlp.down_proj").weight
    return norm / (0.01 * math.sqrt(weight.numel()))


def assert_unedited(model, before):
    for name, param in model.named_parameters():
        assert torch.equal(param.detach(), before[name]), f"{name} differs from the unedited model"


def columns(run, *keys):
    return [tuple(r[k] for k in keys) for r in run.cases]


def test_single_mode_measures_each_edit_alone(tokenizer, registered):
    run, model, before = run_modes(tokenizer)
    assert columns(run, "case_id", "mode", "batch", "batch_size", "edits_applied", "point") == [
        (f"c{i}", "single", i, 1, 1, i) for i in range(5)]
    assert [round(edits_on_model(r, model), 4) for r in run.cases] == [1.0] * 5
    assert all(r["edit_seconds"] == r["batch_edit_seconds"] for r in run.cases)
    assert [r["details"]["cases"] for r in run.cases] == [[{"case_id": f"c{i}", "position": 0}] for i in range(5)]
    assert all(call["unedited"] for call in Nudge.calls), "every single edit starts from the unedited model"
    method = run.summary["methods"]["nudge"]
    assert (method["mode"], method["batch_size"], method["evaluate_at"]) == ("single", 1, None)
    assert "curve" not in method
    assert_unedited(model, before)


def test_batch_mode_applies_each_batch_in_one_call_on_the_unedited_model(tokenizer, registered):
    run, model, before = run_modes(tokenizer, "batch", 2)
    assert Nudge.calls == [{"cases": ["c0", "c1"], "unedited": True}, {"cases": ["c2", "c3"], "unedited": True},
                           {"cases": ["c4"], "unedited": True}]
    assert columns(run, "case_id", "batch", "batch_size", "edits_applied", "point") == [
        ("c0", 0, 2, 2, 0), ("c1", 0, 2, 2, 0), ("c2", 1, 2, 2, 1), ("c3", 1, 2, 2, 1), ("c4", 2, 1, 1, 2)]
    assert [round(edits_on_model(r, model), 4) for r in run.cases] == [2.0, 2.0, 2.0, 2.0, 1.0]
    for record in run.cases:  # a batch's seconds are shared by its edits; details keep only the case's own entry
        assert record["edit_seconds"] == pytest.approx(record["batch_edit_seconds"] / record["batch_size"], abs=1e-3)
        assert record["details"]["parameter"] == "model.layers.0.mlp.down_proj.weight"
        assert [e["case_id"] for e in record["details"]["cases"]] == [record["case_id"]]
    assert run.cases[1]["details"]["cases"] == [{"case_id": "c1", "position": 1}]
    assert_unedited(model, before)


def test_sequential_after_each_measures_each_batch_on_top_of_the_earlier_ones(tokenizer, registered):
    run, model, before = run_modes(tokenizer, "sequential", 2)
    assert [call["unedited"] for call in Nudge.calls] == [True, False, False], "batches are stacked"
    assert columns(run, "case_id", "batch", "edits_applied", "point") == [
        ("c0", 0, 2, 0), ("c1", 0, 2, 0), ("c2", 1, 4, 1), ("c3", 1, 4, 1), ("c4", 2, 5, 2)]
    assert [round(edits_on_model(r, model), 4) for r in run.cases] == [2.0, 2.0, 4.0, 4.0, 5.0]
    method = run.summary["methods"]["nudge"]
    assert method["evaluate_at"] == "after_each"
    assert [(p["edits_applied"], p["measured"]) for p in method["curve"]] == [(2, 2), (4, 2), (5, 1)]
    assert_unedited(model, before)


def test_sequential_after_all_measures_each_edit_once_with_all_on_the_model(tokenizer, registered):
    run, model, before = run_modes(tokenizer, "sequential", 2, "after_all")
    assert columns(run, "case_id", "batch", "batch_size", "edits_applied", "point") == [
        ("c0", 0, 2, 5, 0), ("c1", 0, 2, 5, 0), ("c2", 1, 2, 5, 0), ("c3", 1, 2, 5, 0), ("c4", 2, 1, 5, 0)]
    assert [round(edits_on_model(r, model), 4) for r in run.cases] == [5.0] * 5
    method = run.summary["methods"]["nudge"]
    assert [(p["edits_applied"], p["measured"]) for p in method["curve"]] == [(5, 5)]
    assert method["metrics"]["reliability"]["teacher_forced"]["n"] == 5
    assert_unedited(model, before)


def test_sequential_every_k_gives_a_retention_curve_and_means_from_the_end(tokenizer, registered, tmp_path):
    run, model, before = run_modes(tokenizer, "sequential", 2, {"every": 2}, out=tmp_path)
    assert columns(run, "edits_applied", "point") == [(2, 0)] * 2 + [(4, 1)] * 4 + [(5, 2)] * 5
    assert [r["case_id"] for r in run.cases if r["point"] == 2] == [f"c{i}" for i in range(5)]
    assert [round(edits_on_model(r, model), 4) for r in run.cases] == [2.0] * 2 + [4.0] * 4 + [5.0] * 5
    method = run.summary["methods"]["nudge"]
    curve = method["curve"]
    assert [(p["edits_applied"], p["measured"]) for p in curve] == [(2, 2), (4, 4), (5, 5)]
    assert {"reliability", "generalization", "locality"} <= set(curve[0]["metrics"])
    last = [r for r in run.cases if r["point"] == 2]
    reliability = [s["post"] for r in last for s in r["scores"] if s["metric"] == "reliability"]
    assert method["metrics"]["reliability"]["teacher_forced"] == {"pre": 0.0, "post": pytest.approx(sum(reliability) / 5), "n": 5}
    assert curve[-1]["metrics"]["reliability"]["teacher_forced"] == pytest.approx(sum(reliability) / 5)
    # a target warning belongs to the case's last measurement only, and is counted once per case
    said = [r for r in run.cases if any(w["code"] == "target_not_said" for w in r["warnings"])]
    assert all(r["point"] == 2 for r in said)
    assert method["warnings"]["target_not_said"] == len(said) <= 5
    # the before/after text is generated where it is read, at the last measurement (not at points 0 and 1)
    assert [bool(r["post"]["generations"]) for r in run.cases] == [False] * 6 + [True] * 5
    assert all(r["pre"]["generations"] for r in run.cases)
    assert method["timings"]["edit_seconds_mean"] == pytest.approx(method["timings"]["edit_seconds_total"] / 5, abs=1e-3)
    # the saved run reads back, and its table says how it was run
    saved = Run.load(run.path)
    assert saved.summary == run.summary and len(saved.cases) == 11
    text = text_table(saved.summary)
    assert "mode: sequential, batches of 2 on top of each other, all edits so far measured every 2 edits (the table: after all 5)" in text
    assert "edits applied  measured  reliability  generalization  locality" in text
    html = saved._repr_html_()
    assert "mode: sequential" in html and "<th style='text-align:center'>edits applied</th>" in html
    assert html.count("The city number") == 5, "one before/after row per case, at its last measurement"
    assert_unedited(model, before)


def test_the_model_is_unedited_between_methods_and_after_the_run(tokenizer, registered):
    """FT-M stacks two batches; nudge, next, must start from the unedited weights, bit for bit."""
    run, model, before = run_modes(tokenizer, "sequential", 2, methods=(MethodSpec("ft-m", {"steps": 2}), "nudge"))
    assert Nudge.calls[0] == {"cases": ["c0", "c1"], "unedited": True}
    assert {r["method"] for r in run.cases} == {"ft-m", "nudge"}
    assert_unedited(model, before)


def test_the_model_is_restored_when_a_method_fails_midway(tokenizer, registered, monkeypatch):
    calls = []
    real = Nudge._apply

    def failing(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory")
        return real(self, *args)

    monkeypatch.setattr(Nudge, "_apply", failing)
    model = make_tiny_model("llama", vocab_size=49152)
    before = _params(model)
    with pytest.raises(RuntimeError, match="out of memory"):
        run_modes(tokenizer, "sequential", 2, model=model)
    assert_unedited(model, before)


def test_ft_m_sequential_retention_curve_end_to_end(tokenizer, tmp_path):
    """A real batch-capable method; every key it writes is documented in docs/results.md."""
    from keditlab.models import LoadedModel, derive_profile
    from tests.unit.test_results_docs import field_names, undocumented

    model = make_tiny_model("llama", vocab_size=49152)
    before = _params(model)
    spec = spec_from_dict({
        "keditlab": 1, "method": {"name": "ft-m", "steps": 2},
        "edits": [{"id": e.case_id, "prompt": e.prompt, "subject": e.subject, "target": e.target} for e in EDITS],
        "evaluate": {"metrics": ["reliability", "locality"], "max_new_tokens": 2},
        "run": {"mode": "sequential", "batch_size": 2, "evaluate_at": {"every": 4}},
    })
    run = run_spec(spec, tmp_path, loaded=LoadedModel(model, tokenizer, derive_profile(model)), log=lambda m: None)
    assert [(p["edits_applied"], p["measured"]) for p in run.summary["methods"]["ft-m"]["curve"]] == [(4, 4), (5, 5)]
    assert_unedited(model, before)
    saved = Run.load(run.path)
    names = set()
    for record in saved.cases:
        names |= field_names(record, data_keyed={"changed_parameters"})
    assert {"mode", "batch", "batch_size", "edits_applied", "point", "batch_edit_seconds"} <= names
    assert undocumented(names) == [], "document these cases.jsonl keys in docs/results.md"
    summary_names = field_names(saved.summary, data_keyed={"methods", "methods.*.metrics", "methods.*.metrics.*",
                                                           "methods.*.curve[].metrics", "methods.*.curve[].metrics.*"},
                                skip={"methods.*.settings"})
    assert {"curve", "edits_applied", "measured", "evaluate_at"} <= summary_names
    assert undocumented(summary_names) == [], "document these summary.json keys in docs/results.md"
    assert saved.manifest["spec"]["run"] == {"seed": 0, "device": "auto", "out": None, "mode": "sequential",
                                             "batch_size": 2, "evaluate_at": {"every": 4}}


# -- impossible requests: a RunError before any work ------------------------------------------------


def _spec(mode="single", batch_size=1, evaluate_at=None, methods=("rome",), model="no-such/model-anywhere") -> Spec:
    """A Spec built in Python, as a notebook might, without the validator; its model would fail to load."""
    return Spec(name="impossible", model=ModelSpec(model), methods=tuple(MethodSpec(m) for m in methods), edits=tuple(EDITS),
                run=RunSettings(mode=mode, batch_size=batch_size, evaluate_at=evaluate_at))


@pytest.mark.parametrize("settings, fragments", [
    (dict(mode="batch", batch_size=2), ["method 'rome' cannot apply several edits in one call, which run.mode batch asks for",
                                        "Fix: use run.mode single", "a batch method such as adalora, alphaedit, emmet, ft-l, ft-m, grace, ike, kn, locft-bf, lora, memit, mend, serac, t-patcher, ultraedit, wise"]),
    (dict(mode="sequential", batch_size=3), ["method 'rome' cannot apply several edits in one call, which run.batch_size 3 asks for",
                                             "Fix: use batch_size 1"]),
    (dict(mode="single", batch_size=2, methods=("ft-m",)), ["run.batch_size: batch_size 2 needs run.mode batch or sequential"]),
    (dict(mode="batch", batch_size=2, evaluate_at="after_all", methods=("ft-m",)), ["run.evaluate_at: evaluate_at is for run.mode sequential only"]),
    (dict(mode="sequential", batch_size=2, evaluate_at={"every": 3}, methods=("ft-m",)),
     ["run.evaluate_at.every: evaluate_at every 3 is not a multiple of batch_size 2", "e.g. 2 or 4"]),
    (dict(mode="batched", methods=("ft-m",)), ["unknown run mode 'batched' (did you mean 'batch'?)"]),
])
def test_impossible_requests_fail_before_any_work(settings, fragments, tmp_path):
    with pytest.raises(RunError) as info:
        run_spec(_spec(**settings), tmp_path / "runs", log=lambda m: pytest.fail(f"work began: {m}"))
    for fragment in fragments:
        assert fragment in str(info.value)
    assert not (tmp_path / "runs").exists(), "no run folder for a run that cannot start"


def test_a_method_that_cannot_edit_sequentially_is_named(registered, tmp_path):
    with pytest.raises(RunError) as info:
        run_spec(_spec("sequential", methods=("nudge", "single-only")), tmp_path / "runs", log=lambda m: pytest.fail(m))
    assert str(info.value) == (
        "method 'single-only' cannot edit sequentially (apply edits on top of its own earlier edits), which run.mode "
        "sequential asks for. Fix: use run.mode single or batch, or a sequential method such as adalora, alphaedit, emmet, ft-l, ft-m, grace, ike, kn, locft-bf, lora, memit, mend, nudge, r-rome, rome, serac, t-patcher, ultraedit, wise."
    )


def test_python_callers_get_the_mode_default_for_evaluate_at():
    assert RunSettings(mode="sequential").evaluate_at == "after_each"
    assert RunSettings(mode="batch", batch_size=4).evaluate_at is None
    assert RunSettings().to_spec_data() == {"seed": 0, "device": "auto", "out": None, "mode": "single", "batch_size": 1}


def test_tables_of_runs_saved_before_modes_say_nothing_about_them():
    from keditlab.runner.summary import MethodTally, build_summary

    tally = MethodTally("rome")
    tally.add({("reliability", "teacher_forced"): 0.0}, {("reliability", "teacher_forced"): 1.0}, 1.0, 1.0)
    summary = build_summary("old", "m", 1, {"rome": tally})
    assert "mode: single, each edit alone on the unedited model" in text_table(summary)
    for key in ("mode", "batch_size", "evaluate_at"):
        del summary["methods"]["rome"][key]
    text = text_table(summary)
    assert "mode:" not in text and "0.00 → 1.00" in text



def _nudge_that(monkeypatch, at_call: int, what: str) -> None:
    """Nudge's ``at_call``-th call writes a NaN into its weight (``what="nan"``) or is interrupted (``"interrupt"``)."""
    real, calls = Nudge._apply, [0]

    def faulty(self, model, *args, **kwargs):
        calls[0] += 1
        if calls[0] == at_call and what == "interrupt":
            raise KeyboardInterrupt
        handle = real(self, model, *args, **kwargs)
        if calls[0] == at_call:
            with torch.no_grad():
                dict(model.named_parameters())[handle.details["parameter"]].view(-1)[0] = float("nan")
        return handle

    monkeypatch.setattr(Nudge, "_apply", faulty)


@pytest.mark.parametrize("mode", ["single", "sequential"])
def test_a_non_finite_update_is_counted_as_a_failed_edit_and_the_run_goes_on(tokenizer, registered, monkeypatch, tmp_path, mode):
    _nudge_that(monkeypatch, 2, "nan")
    run, model, before = run_modes(tokenizer, mode=mode, evaluate_at="after_each" if mode == "sequential" else None, out=tmp_path)
    assert_unedited(model, before)
    method = run.summary["methods"]["nudge"]
    assert method["warnings"]["edit_failed"] == 1
    assert method["metrics"]["reliability"]["teacher_forced"]["n"] == 4
    (failed,) = [r for r in run.cases if "failed" in r]
    assert failed["case_id"] == "c1" and failed["failed"]["code"] == "edit_failed"
    assert "nudge computed a non-finite update" in failed["failed"]["message"] and "'c1'" in failed["failed"]["message"]
    if mode == "sequential":   # the stream went on without the refused edit: c2 was measured on top of c0 alone
        c2 = next(r for r in run.cases if r["case_id"] == "c2")
        assert round(edits_on_model(c2, model), 4) == 2.0 and c2["edits_applied"] == 2   # the refused edit is not counted
        assert [p["edits_applied"] for p in method["curve"]] == [1, 2, 3, 4]
    assert "EDITS FAILED, rolled back" in str(run) and "1/5" in str(run)
    def strict(text):   # Python's json reads NaN and Infinity; a strict parser does not
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))

    [strict(line) for line in (run.path / "cases.jsonl").read_text().splitlines()]
    strict((run.path / "summary.json").read_text())
    assert json.loads((run.path / "manifest.json").read_text())["status"] == "complete"


def test_an_interrupted_run_says_so_and_keeps_what_it_measured(tokenizer, registered, monkeypatch, tmp_path):
    from keditlab.runner.result import load_run

    _nudge_that(monkeypatch, 3, "interrupt")
    model = make_tiny_model("llama", vocab_size=49152)
    before = _params(model)
    with pytest.raises(KeyboardInterrupt):
        run_modes(tokenizer, out=tmp_path, model=model)
    assert_unedited(model, before)
    (folder,) = tmp_path.iterdir()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["error"].startswith("KeyboardInterrupt")
    run = load_run(folder)
    assert run.status == "interrupted"
    assert run.summary["methods"]["nudge"]["metrics"]["reliability"]["teacher_forced"]["n"] == 2
    assert str(run).startswith("PARTIAL RUN (interrupted")


def test_prompts_longer_than_the_models_context_are_refused_before_any_work(tokenizer, registered, tmp_path):
    """The tiny model reads 128 positions: a rephrase of 150 tokens is named with its case, and nothing is made."""
    from keditlab.models import LoadedModel, derive_profile

    model = make_tiny_model("llama", vocab_size=49152)
    assert model.config.max_position_embeddings == 128
    long = EditCase(prompt="The city number 9 is in", subject="city number 9", target="Rome",
                    rephrase=("word " * 150 + "City 9 lies in",), case_id="long-one")
    spec = Spec(name="too-long", model=ModelSpec(), methods=(MethodSpec("nudge"),), edits=(EDITS[0], long), evaluate=EVALUATE)
    with pytest.raises(RunError, match=r"1 edit case\(s\) do not fit in the model's context of 128 tokens: 'long-one' \(205 tokens\)") as error:
        run_spec(spec, tmp_path / "runs", loaded=LoadedModel(model, tokenizer, derive_profile(model)), log=lambda message: None)
    assert "Fix:" in str(error.value) and Nudge.calls == [] and not (tmp_path / "runs").exists()
    # fitting exactly is fine: the same case with the generation budget counted
    fits = EditCase(prompt="The city number 9 is in", subject="city number 9", target="Rome", case_id="fits")
    run_spec(dataclasses.replace(spec, edits=(fits,)), None, loaded=LoadedModel(model, tokenizer, derive_profile(model)),
             log=lambda message: None)


def _as_killed(folder, lines_kept: int) -> None:
    """Leave ``folder`` as SIGKILL would after ``lines_kept`` records and half of the next: no summary, status running."""
    lines = (folder / "cases.jsonl").read_text().splitlines(keepends=True)
    (folder / "cases.jsonl").write_text("".join(lines[:lines_kept]) + lines[lines_kept][:40])
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    for name in ("summary.json", "table.csv", "table.md"):
        (folder / name).unlink()


def _without_timings(value):
    """``value`` as its JSON reads back, without the seconds (which differ from run to run)."""
    from keditlab.runner.folder import plain_json

    return _drop_timings(json.loads(json.dumps(plain_json(value))))


def _drop_timings(value):
    if isinstance(value, dict):
        return {k: _drop_timings(v) for k, v in value.items() if "seconds" not in k and k != "timings"}
    if isinstance(value, list):
        return [_drop_timings(v) for v in value]
    return value


@pytest.mark.parametrize("mode, batch_size, evaluate_at, calls_again", [
    ("single", 1, None, [["c3"], ["c4"]]),                        # c0..c2 recorded; c3's line cut short
    ("batch", 2, None, [["c2", "c3"], ["c4"]]),                   # batch (c2, c3) half recorded: done again
    ("sequential", 2, "after_each", [["c0", "c1"], ["c2", "c3"], ["c4"]]),   # a stream is done again whole
])
def test_a_killed_run_resumes_to_the_uninterrupted_result(tokenizer, registered, tmp_path, mode, batch_size, evaluate_at,
                                                          calls_again):
    from keditlab.models import LoadedModel, derive_profile
    from keditlab.runner.resume import read_run_folder
    from keditlab.runner.result import load_run

    whole, model, before = run_modes(tokenizer, mode, batch_size, evaluate_at, out=tmp_path / "whole")
    killed, _, _ = run_modes(tokenizer, mode, batch_size, evaluate_at, out=tmp_path / "killed", model=model)
    _as_killed(killed.path, 3)
    Nudge.calls = []
    _, resumed = read_run_folder(killed.path)
    run = run_spec(modes_spec(mode, batch_size, evaluate_at), None, loaded=LoadedModel(model, tokenizer, derive_profile(model)),
                   log=lambda message: None, resume=resumed)
    assert [call["cases"] for call in Nudge.calls] == calls_again
    assert _without_timings(run.summary) == _without_timings(whole.summary)
    assert _without_timings(run.cases) == _without_timings(whole.cases)
    again = load_run(killed.path)
    assert again.status == "complete" and _without_timings(again.cases) == _without_timings(whole.cases)
    manifest = json.loads((killed.path / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["resumed"][0]["kept_records"] == {"single": 3, "batch": 2}.get(mode, 0)
    assert not (killed.path / ".running.lock").exists()    # the lock went with the run
    assert_unedited(model, before)


def test_a_killed_run_shows_what_it_recorded(tokenizer, registered, tmp_path, capsys):
    """``keditlab show`` / ``load_run`` on a run killed outright: the means of the records written, each edit at its
    latest measurement, and how to continue it."""
    from keditlab.cli import main
    from keditlab.runner.result import load_run

    killed, _, _ = run_modes(tokenizer, "sequential", 2, {"every": 2}, out=tmp_path)
    complete = list(killed.cases)
    _as_killed(killed.path, 5)              # point 0 (c0, c1) and three records of point 1 (c0..c2 of c0..c3)
    run = load_run(killed.path)
    assert run.status == "running" and run.summary["measured"] == 5
    latest = {r["case_id"]: r for r in complete[:5]}   # c0, c1 and c2 at point 1, their latest
    for metric in ("reliability", "locality"):
        posts = [s["post"] for r in latest.values() for s in r["scores"] if (s["metric"], s["protocol"]) == (metric, "teacher_forced")]
        measured = run.summary["methods"]["nudge"]["metrics"][metric]["teacher_forced"]
        assert measured["n"] == 3 and measured["post"] == pytest.approx(sum(posts) / 3)
    assert [p["edits_applied"] for p in run.summary["methods"]["nudge"]["curve"]] == [2, 4]
    assert main(["show", str(killed.path)]) == 0
    shown = capsys.readouterr().out
    assert "PARTIAL RUN (no summary" in shown and f"keditlab run --resume {killed.path}" in shown and "reliability" in shown


def test_runs_that_cannot_be_resumed_say_why(tokenizer, registered, tmp_path):
    from filelock import FileLock

    from keditlab.runner.resume import read_run_folder

    done, model, _ = run_modes(tokenizer, out=tmp_path)
    with pytest.raises(RunError, match="is complete: there is nothing to resume"):
        read_run_folder(done.path)
    with pytest.raises(RunError, match="not a run folder"):
        read_run_folder(tmp_path / "nowhere")
    _as_killed(done.path, 2)
    with FileLock(str(done.path / ".running.lock")):   # the run still going on in another process
        _, resumed = read_run_folder(done.path)
        with pytest.raises(RunError, match="going on in another process"):
            from keditlab.models import LoadedModel, derive_profile

            run_spec(modes_spec(), None, loaded=LoadedModel(model, tokenizer, derive_profile(model)), log=lambda m: None,
                     resume=resumed)
    _, resumed = read_run_folder(done.path)
    other = modes_spec(methods=(MethodSpec("nudge", params={"scale": 0.02}),))
    with pytest.raises(RunError, match="settings the run .* recorded differ"):
        from keditlab.models import LoadedModel, derive_profile

        run_spec(other, None, loaded=LoadedModel(model, tokenizer, derive_profile(model)), log=lambda m: None, resume=resumed)


def test_memory_between_calls_is_saved_for_sequential_streams_only(tokenizer, registered, tmp_path, monkeypatch):
    """Batches restored after each measurement start from nothing: their memory is never needed, nor written."""
    from keditlab.methods.lifelong import HeldSums, KeySum
    from keditlab.models import LoadedModel, derive_profile

    real = Nudge._apply

    def remembering(self, model, tokenizer, profile, cases, config, context):
        handle = real(self, model, tokenizer, profile, cases, config, context)
        context.memory.setdefault(self.name, {"keys": HeldSums()})["keys"].hold(0, KeySum.of(torch.ones(1, 3)), handle)
        return handle

    monkeypatch.setattr(Nudge, "_apply", remembering)
    model = make_tiny_model("llama", vocab_size=49152)
    Nudge.reference = _params(model)
    spec = dataclasses.replace(modes_spec("batch", 2), run=RunSettings(mode="batch", batch_size=2, save_edits=True))
    run = run_spec(spec, tmp_path, loaded=LoadedModel(model, tokenizer, derive_profile(model)), log=lambda message: None)
    calls = sorted((run.path / "edits" / "nudge").iterdir())
    assert len(calls) == 3 and not any((call / "memory.pt").exists() for call in calls)


def _stopped_while_measuring(spec, loaded, out, measurement: int, monkeypatch):
    """Run ``spec`` into ``out`` with a Ctrl-C during its ``measurement``-th measurement (0: the one before any
    edit); the run's folder, as the interrupted run left it."""
    from keditlab.runner import run as run_module

    measured, measurements = run_module.measure, iter(range(1000))

    def stopped(*args, **kwargs):
        if next(measurements) == measurement:
            raise KeyboardInterrupt
        return measured(*args, **kwargs)

    monkeypatch.setattr(run_module, "measure", stopped)
    with pytest.raises(KeyboardInterrupt):
        run_spec(spec, out, loaded=loaded, log=lambda message: None)
    monkeypatch.setattr(run_module, "measure", measured)
    (folder,) = out.iterdir()
    return folder


@pytest.mark.parametrize("memory, calls_again", [
    ("none", [["c2", "c3"], ["c4"]]),                    # the checkpoint after the first call stands in for it
    ("saved", [["c2", "c3"], ["c4"]]),                   # a method keeping memory between calls: loaded with it
    ("lost", [["c0", "c1"], ["c2", "c3"], ["c4"]]),      # that memory not saved (an older keditlab): the stream again
])
def test_a_sequential_run_resumes_from_its_last_checkpoint(tokenizer, registered, tmp_path, monkeypatch, memory, calls_again):
    """With run.save_edits, a stream stopped while measuring its second call restarts after its first, with the
    method's memory between calls as that call left it."""
    from keditlab.methods.lifelong import HeldSums, KeySum
    from keditlab.models import LoadedModel, derive_profile
    from keditlab.runner.resume import read_run_folder

    found: list[tuple] = []   # what the method found in its memory at each call
    if memory != "none":
        real = Nudge._apply

        def remembering(self, model, tokenizer, profile, cases, config, context):
            held = context.memory.setdefault(self.name, {"keys": HeldSums(), "calls": []})
            found.append((tuple(held["calls"]), {k: v.count for k, v in held["keys"].items()}))
            handle = real(self, model, tokenizer, profile, cases, config, context)
            held["keys"].hold(0, KeySum.of(torch.ones(len(cases), 3)), handle)
            held["calls"].append(len(cases))
            return handle

        monkeypatch.setattr(Nudge, "_apply", remembering)
    model = make_tiny_model("llama", vocab_size=49152)
    before = _params(model)
    Nudge.reference = before
    spec = dataclasses.replace(modes_spec("sequential", 2, "after_each"),
                               run=RunSettings(mode="sequential", batch_size=2, evaluate_at="after_each", save_edits=True))
    loaded = LoadedModel(model, tokenizer, derive_profile(model))
    whole = run_spec(spec, tmp_path / "whole", loaded=loaded, log=lambda message: None)
    saved = whole.path / "edits" / "nudge"
    # the memory is kept for the latest checkpoint only: the last call's
    assert [(saved / f"call-000{n}" / "memory.pt").is_file() for n in range(3)] == [False, False, memory != "none"]
    uninterrupted, found[:] = list(found), []

    # measured before the edits and after call 1, then Ctrl-C while measuring call 2
    folder = _stopped_while_measuring(spec, loaded, tmp_path / "stopped", 2, monkeypatch)
    calls = folder / "edits" / "nudge"
    assert sorted(p.name for p in calls.iterdir()) == ["call-0000", "call-0001"]
    if memory == "lost":
        for path in calls.glob("*/memory.pt"):
            path.unlink()
    Nudge.calls, found[:] = [], []
    _, resumed = read_run_folder(folder)
    messages: list[str] = []
    run = run_spec(spec, None, loaded=loaded, log=messages.append, resume=resumed)
    assert [call["cases"] for call in Nudge.calls] == calls_again
    assert any(("done again from the start" if memory == "lost" else "resumes after call 1 of 3") in m for m in messages), messages
    if memory != "none":   # each call made again found the memory the uninterrupted stream had there
        assert found == uninterrupted[-len(found):], (found, uninterrupted)
        assert found[0] == (((2,), {0: 2}) if memory == "saved" else ((), {}))
    assert _without_timings(run.summary) == _without_timings(whole.summary)
    assert _without_timings(run.cases) == _without_timings(whole.cases)
    assert sorted(p.name for p in calls.iterdir()) == ["call-0000", "call-0001", "call-0002"]
    assert [(calls / f"call-000{n}" / "memory.pt").is_file() for n in range(3)] == [False, False, memory != "none"]
    assert_unedited(model, before)


@pytest.mark.parametrize("method", [
    MethodSpec("ultraedit", params={"preserve": 8}),                                   # running statistics, anchors
    MethodSpec("locft-bf", params={"preserve": 8, "keep_earlier": 10.0, "epochs": 2}),  # anchors, earlier keys
    MethodSpec("alphaedit", params={"v_steps": 3}),                                    # the earlier edits' keys
], ids=lambda m: m.name)
def test_lifelong_methods_resume_with_their_memory(tokenizer, tmp_path, monkeypatch, method):
    """The real methods that keep memory between calls: a stream stopped while measuring its third call resumes
    after its second, loads that call's memory, and ends with the uninterrupted stream's summary and records."""
    from keditlab.models import LoadedModel, derive_profile
    from keditlab.runner.resume import read_run_folder

    model = make_tiny_model("llama", vocab_size=49152)
    before = _params(model)
    spec = dataclasses.replace(modes_spec("sequential", 2, "after_each", methods=(method,)),
                               run=RunSettings(mode="sequential", batch_size=2, evaluate_at="after_each", save_edits=True))
    loaded = LoadedModel(model, tokenizer, derive_profile(model))
    whole = run_spec(spec, tmp_path / "whole", loaded=loaded, log=lambda message: None)
    assert_unedited(model, before)

    # measured before the edits and after calls 1 and 2, then Ctrl-C while measuring call 3
    folder = _stopped_while_measuring(spec, loaded, tmp_path / "stopped", 3, monkeypatch)
    assert_unedited(model, before)
    calls = folder / "edits" / method.name
    assert [(calls / f"call-000{n}" / "memory.pt").is_file() for n in range(3)] == [False, True, True]

    _, resumed = read_run_folder(folder)
    messages: list[str] = []
    run = run_spec(spec, None, loaded=loaded, log=messages.append, resume=resumed)
    assert any("resumes after call 2 of 3" in m for m in messages), messages
    made = [m for m in messages if re.match(rf"^\[{method.name}\] (batch \d+|edit \d+/5):", m)]
    assert len(made) == 1 and made[0].startswith(f"[{method.name}] edit 5/5"), made   # only the third call made again
    assert _without_timings(run.summary) == _without_timings(whole.summary)
    assert _without_timings(run.cases) == _without_timings(whole.cases)
    assert_unedited(model, before)
