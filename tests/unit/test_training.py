"""Editors trained before they edit (MEND): the training loop, its checkpoints, the archives and `keditlab train`.

Everything here runs on a tiny random Llama with the embedded tokenizer's
vocabulary; that a trained MEND edits a real model is checked in
``tests/integration/test_mend_real.py``.
"""

from __future__ import annotations

import json

import pytest
import torch

from keditlab.methods import EditContext, get_method, trained_editors
from keditlab.methods.archives import ArchiveError, find_archive, load_archive
from keditlab.methods.mend import MendTrainConfig, MendTrainer
from keditlab.methods.training import CHECKPOINT, LOSSES, train_editor
from keditlab.models import LoadedModel, derive_profile
from keditlab.models.tokens import encode_prompt_answer
from keditlab.vocabulary import EditCase, Probe
from tests.conftest import make_tiny_model


def tiny_with_embedded_vocab(model_type: str = "llama"):
    """Three layers, the embedded tokenizer's vocabulary, weights drawn wide enough that a few steps move them."""
    return make_tiny_model(model_type, vocab_size=49152, num_hidden_layers=3, initializer_range=0.2)

FACTS = [("The Eiffel Tower is in the city of", "Eiffel Tower", "Rome", "Where is the Eiffel Tower? In"),
         ("The capital of France is", "France", "Berlin", "France's capital city is"),
         ("Apples are coloured", "Apples", "blue", "The colour of apples is"),
         ("The Moon orbits the", "Moon", "Sun", "What does the Moon orbit? The"),
         ("Tokyo is a city in", "Tokyo", "Brazil", "The country of Tokyo is"),
         ("Water boils at a temperature of", "Water", "ten degrees", "The boiling point of water is"),
         ("Shakespeare wrote in", "Shakespeare", "German", "The language Shakespeare wrote in is"),
         ("The Nile flows through", "Nile", "Canada", "The river Nile runs through")]
UNRELATED = [("Dogs are animals that", "bark"), ("The sky is", "blue"), ("One plus one is", "two"), ("Ice is", "cold")]


def _cases(count: int = 8) -> list[EditCase]:
    return [EditCase(prompt=p, subject=s, target=t, rephrase=(r,),
                     locality=(Probe("locality", *UNRELATED[i % len(UNRELATED)]),), case_id=str(i))
            for i, (p, s, t, r) in enumerate(FACTS[:count])]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KEDITLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def tiny(tokenizer):
    torch.manual_seed(0)
    model = tiny_with_embedded_vocab("llama")
    return LoadedModel(model, tokenizer, derive_profile(model))


def _quick(**changes) -> MendTrainConfig:
    settings = {"steps": 40, "batch_size": 4, "rank": 8, "lr": 1e-2, "edit_lr": 1e-2, "validate_every": 20,
                "checkpoint_every": 10}
    return MendTrainConfig(**{**settings, **changes})


def _target_logprob(model, tokenizer, case: EditCase) -> float:
    prompt_ids, answer_ids = encode_prompt_answer(tokenizer, case.prompt, case.target)
    with torch.no_grad():
        logprobs = model(input_ids=torch.tensor([prompt_ids + answer_ids])).logits[0].log_softmax(-1)
    return float(sum(logprobs[len(prompt_ids) - 1 + i, token] for i, token in enumerate(answer_ids)))


def test_training_lowers_the_loss(tiny, tmp_path):
    model, tokenizer, profile = tiny
    config = _quick()
    with MendTrainer(model, tokenizer, profile, _cases(), _cases(4), config) as trainer:
        result = train_editor(trainer, config, tmp_path / "run", progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / LOSSES).read_text().splitlines()]
    assert result.steps == 40 and len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
    assert set(result.validation) == {"edit_success", "rephrase_success", "locality"}


def test_the_model_is_left_as_it_was_by_training(tiny, tmp_path):
    model, tokenizer, profile = tiny
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    blocks = list(model.get_submodule(profile.layers))
    config = _quick(steps=3)
    with MendTrainer(model, tokenizer, profile, _cases(), [], config) as trainer:
        train_editor(trainer, config, tmp_path / "run", progress=False)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert list(model.get_submodule(profile.layers)) == blocks   # the replayed lower blocks are back


class _Killed(Exception):
    pass


def _dies_at(trainer, call: int) -> None:
    """Make ``trainer.loss`` raise at its ``call``-th call: the training is killed during that step."""
    real_loss, calls = trainer.loss, []

    def dying(records):
        calls.append(records)
        if len(calls) == call:
            raise _Killed
        return real_loss(records)
    trainer.loss = dying


def test_a_killed_training_resumes_from_its_checkpoint_as_if_never_stopped(tiny, tmp_path):
    model, tokenizer, profile = tiny
    config = _quick(steps=20, checkpoint_every=5, validate_every=10)
    with MendTrainer(model, tokenizer, profile, _cases(), [], config) as trainer:
        train_editor(trainer, config, tmp_path / "whole", progress=False)
        whole = trainer.state_dict()

    with MendTrainer(model, tokenizer, profile, _cases(), [], config) as trainer:
        _dies_at(trainer, 13)   # killed during step 13: the last checkpoint is step 10
        with pytest.raises(_Killed):
            train_editor(trainer, config, tmp_path / "cut", progress=False)
    assert torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=True)["step"] == 10

    with MendTrainer(model, tokenizer, profile, _cases(), [], config) as trainer:
        result = train_editor(trainer, config, tmp_path / "cut", resume=True, progress=False)
        resumed = trainer.state_dict()
    assert result.resumed_from == 10 and result.steps == 20
    assert all(torch.equal(whole[k], resumed[k]) for k in whole), "the resumed training did not continue exactly"
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / LOSSES).read_text().splitlines()]
    assert steps == list(range(1, 21))   # the losses after the checkpoint were dropped and written again, once


def _scripted_validation(trainer, scores: list[float]) -> None:
    """Make ``trainer.validate`` report ``scores`` in turn (as all three figures), whatever the editor has learned."""
    left = list(scores)
    trainer.validate = lambda: dict.fromkeys(("edit_success", "rephrase_success", "locality"), left.pop(0))


def test_keep_best_makes_the_best_validated_state_the_result_and_survives_a_kill(tiny, tmp_path):
    model, tokenizer, profile = tiny
    config = _quick(steps=40, validate_every=10, checkpoint_every=10)
    with MendTrainer(model, tokenizer, profile, _cases(), [], _quick(steps=20)) as trainer:
        train_editor(trainer, _quick(steps=20), tmp_path / "twenty", progress=False)
        at_twenty = trainer.state_dict()       # the same training, stopped at step 20
    best = config.__class__(**{**config.to_dict(), "keep": "best"})
    with MendTrainer(model, tokenizer, profile, _cases(), [], best) as trainer:
        _scripted_validation(trainer, [0.5, 0.9, 0.4, 0.6])
        result = train_editor(trainer, best, tmp_path / "best", progress=False)
        kept = trainer.state_dict()
    assert result.steps == 40 and result.kept_step == 20 and result.validation["locality"] == 0.9
    assert all(torch.equal(kept[k], at_twenty[k]) for k in kept)

    with MendTrainer(model, tokenizer, profile, _cases(), [], best) as trainer:   # killed after step 30's checkpoint
        _scripted_validation(trainer, [0.5, 0.9, 0.4])
        _dies_at(trainer, 32)
        with pytest.raises(_Killed):
            train_editor(trainer, best, tmp_path / "cut", progress=False)
    with MendTrainer(model, tokenizer, profile, _cases(), [], best) as trainer:
        _scripted_validation(trainer, [0.6])
        result = train_editor(trainer, best, tmp_path / "cut", resume=True, progress=False)
        resumed = trainer.state_dict()
    assert result.resumed_from == 30 and result.kept_step == 20
    assert all(torch.equal(resumed[k], at_twenty[k]) for k in kept), "the best state was not carried by the checkpoint"


def test_a_cosine_schedule_lowers_the_learning_rate_to_zero_and_resumes_on_the_same_curve(tiny, tmp_path):
    import math

    model, tokenizer, profile = tiny
    config = _quick(steps=20, checkpoint_every=5, validate_every=10, lr_schedule="cosine")
    with MendTrainer(model, tokenizer, profile, _cases(), [], config) as trainer:
        train_editor(trainer, config, tmp_path / "whole", progress=False)
        whole = trainer.state_dict()
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "whole" / LOSSES).read_text().splitlines()]
    assert lrs == pytest.approx([config.lr * 0.5 * (1 + math.cos(math.pi * s / 20)) for s in range(20)], rel=1e-4)
    with MendTrainer(model, tokenizer, profile, _cases(), [], config) as trainer:
        _dies_at(trainer, 12)
        with pytest.raises(_Killed):
            train_editor(trainer, config, tmp_path / "cut", progress=False)
    with MendTrainer(model, tokenizer, profile, _cases(), [], config) as trainer:
        result = train_editor(trainer, config, tmp_path / "cut", resume=True, progress=False)
        resumed = trainer.state_dict()
    assert result.resumed_from == 10
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert [json.loads(line)["lr"] for line in (tmp_path / "cut" / LOSSES).read_text().splitlines()] == lrs


def _train_spec(tmp_path, steps: int = 30, **train) -> dict:
    records = tmp_path / "records.json"
    records.write_text(json.dumps([{"src": c.prompt, "subject": c.subject, "alt": c.target, "answers": ["x"],
                                    "rephrase": c.rephrase[0], "loc": "nq question: " + c.locality[0].prompt,
                                    "loc_ans": c.locality[0].answer} for c in _cases()]))
    return {"keditlab": 1, "name": "train-tiny", "model": "smollm2-135m",
            "train": {"editor": "mend", "records": {"dataset": "zsre", "path": str(records), "limit": 6},
                      "validation": {"dataset": "zsre", "path": str(records), "offset": 6},
                      "steps": steps, "batch_size": 3, "rank": 8, "lr": 1e-2, "edit_lr": 1e-2, "validate_every": 10,
                      "checkpoint_every": 10, **train}}


def test_keditlab_train_caches_an_archive_that_mend_finds_and_edits_with(tiny, tmp_path, cache):
    from keditlab.runner.train_run import train_spec
    from keditlab.spec import spec_from_dict

    model, tokenizer, profile = tiny
    copy = tmp_path / "mine.pt"
    spec = spec_from_dict(_train_spec(tmp_path, archive=str(copy)))
    run = train_spec(spec, tmp_path / "runs", loaded=tiny, log=lambda _m: None, progress=False)
    assert run.archive.parent.parent == cache / "editors" and run.archive.is_file() and copy.is_file()
    for name in ("manifest.json", "losses.jsonl", "validation.jsonl", "losses.png", "training.json", CHECKPOINT):
        assert (run.path / name).is_file(), name
    assert json.loads((run.path / "manifest.json").read_text())["status"] == "complete"
    archive = load_archive(run.archive, "mend", model)
    assert archive["training"]["count"] == 6 and archive["build"]["edited_layers"] == [0, 1, 2]
    assert find_archive(model, "mend") == run.archive

    # a second training with the same archive path is refused before any work: nothing is overwritten
    with pytest.raises(FileExistsError, match="never overwrites"):
        train_spec(spec, tmp_path / "runs", loaded=tiny, log=lambda _m: None, progress=False)

    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    case = _cases()[7]   # a validation record, never trained on
    before = _target_logprob(model, tokenizer, case)
    handle = get_method("mend").apply(model, tokenizer, profile, [case], {"edit_scale": 1.0}, EditContext(progress=False))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, params[n])}
    assert changed == set(handle.changed_parameters) and len(changed) == 3
    assert handle.details["archive"] == str(run.archive)
    assert _target_logprob(model, tokenizer, case) > before
    handle.restore()
    assert all(torch.equal(p, params[n]) for n, p in model.named_parameters())


def test_a_method_names_its_archive_by_the_training_that_wrote_it(tiny, tmp_path, cache):
    """Two trainings of one editor for one model: the newest is the default; `archive: NAME` takes the other's."""
    from keditlab.runner.train_run import train_spec
    from keditlab.spec import spec_from_dict

    model, _tokenizer, _profile = tiny
    first = train_spec(spec_from_dict({**_train_spec(tmp_path, steps=2), "name": "train-a"}), tmp_path / "runs",
                       loaded=tiny, log=lambda _m: None, progress=False)
    second = train_spec(spec_from_dict({**_train_spec(tmp_path, steps=3), "name": "train a/b"}), tmp_path / "runs",
                        loaded=tiny, log=lambda _m: None, progress=False)
    assert first.archive.name.startswith("mend-train-a-") and second.archive.name.startswith("mend-train-a-b-")
    assert find_archive(model, "mend") == second.archive
    assert find_archive(model, "mend", "train-a") == first.archive
    assert find_archive(model, "mend", "train-a-b") == second.archive
    assert find_archive(model, "mend", str(first.archive)) == first.archive
    with pytest.raises(ArchiveError) as error:
        find_archive(model, "mend", "train-aa")
    assert "did you mean 'train-a'?" in str(error.value) and "train-a-b" in str(error.value)


def test_exclude_keeps_the_evaluation_records_subjects_out_of_training(tiny, tmp_path, cache):
    """`train.exclude`: a record about a subject of the excluded records (even with another prompt) is left out."""
    from keditlab.runner.train_run import train_spec
    from keditlab.spec import spec_from_dict

    data = _train_spec(tmp_path, steps=2)
    cases = _cases()
    held = tmp_path / "held.json"   # the evaluation records: the subject of record 1 (another prompt), record 7's prompt
    other = cases[7].prompt.split()[0]   # a word of record 7's prompt that is not its subject
    held.write_text(json.dumps([
        {"src": f"Where was {cases[1].subject} born?", "subject": cases[1].subject, "alt": "Oslo", "answers": ["x"]},
        {"src": "  " + cases[7].prompt.upper(), "subject": other.upper(), "alt": "y", "answers": ["x"]}]))
    data["train"]["exclude"] = {"dataset": "zsre", "path": str(held)}
    spec = spec_from_dict(data)
    assert [c.prompt for c in spec.train.records] == [c.prompt for i, c in enumerate(cases[:6]) if i != 1]
    assert [c.prompt for c in spec.train.validation] == [cases[6].prompt]
    assert spec.train.excluded == (1, 1) and spec.train.exclude_count == 2
    lines: list[str] = []
    run = train_spec(spec, tmp_path / "runs", loaded=tiny, log=lines.append, progress=False)
    training = json.loads((run.path / "training.json").read_text())
    assert training["count"] == 5 and training["excluded"]["records"] == 1 and training["excluded"]["validation"] == 1
    assert training["records"].startswith("records 0-5 of records.json")
    assert any("Left out 1 training and 1 validation records" in line for line in lines)
    assert spec_from_dict(spec.to_spec_data()).train.excluded == (1, 1)

    from keditlab.spec import validate_text   # excluding every training record is an error at the spec's line
    text = (f"keditlab: 1\ntrain:\n  editor: mend\n  records: {{dataset: zsre, path: {tmp_path / 'records.json'}, limit: 2}}\n"
            f"  exclude: {{dataset: zsre, path: {tmp_path / 'records.json'}}}\n")
    errors = validate_text(text, "t.yaml")
    assert len(errors) == 1 and str(errors[0]).startswith("t.yaml:5:12: train.exclude: leaves none of the 2") \
        and "Fix:" in str(errors[0]), errors


@pytest.mark.parametrize("editor", trained_editors())
def test_without_an_archive_a_trained_editor_says_how_to_train_one(tiny, cache, editor):
    model, tokenizer, profile = tiny
    with pytest.raises(ArchiveError) as error:
        get_method(editor).apply(model, tokenizer, profile, _cases(1), {}, EditContext(progress=False))
    assert f"keditlab train specs/train/{editor}.yaml" in str(error.value) and "Fix:" in str(error.value)
    with pytest.raises(ArchiveError, match="no archive at"):
        get_method(editor).apply(model, tokenizer, profile, _cases(1), {"archive": str(cache / "none.pt")},
                                 EditContext(progress=False))


def test_an_archive_trained_for_another_model_is_refused_by_name(tiny, tokenizer, tmp_path, cache):
    from keditlab.runner.train_run import train_spec
    from keditlab.spec import spec_from_dict

    run = train_spec(spec_from_dict(_train_spec(tmp_path, steps=2)), tmp_path / "runs", loaded=tiny,
                     log=lambda _m: None, progress=False)
    torch.manual_seed(1)
    other = tiny_with_embedded_vocab("llama")
    with torch.no_grad():
        other.model.layers[0].mlp.down_proj.weight.add_(1.0)
    with pytest.raises(ArchiveError) as error:
        get_method("mend").apply(other, tokenizer, derive_profile(other), _cases(1), {"archive": str(run.archive)},
                                 EditContext(progress=False))
    assert "was trained for the model 'smollm2-135m'" in str(error.value) and "Fix:" in str(error.value)
    assert find_archive is not None
    with pytest.raises(ArchiveError, match="no trained mend archive is in the cache"):
        find_archive(other, "mend")


def test_a_file_that_is_not_an_archive_is_refused(tiny, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ArchiveError, match="not a readable keditlab archive"):
        load_archive(junk, "mend")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ArchiveError, match="not a keditlab editor archive"):
        load_archive(tmp_path / "other.pt", "mend")


def test_train_section_errors_are_positioned_with_a_fix():
    from keditlab.spec import validate_text

    records = "  records: {dataset: zsre, file: zsre/zsre_mend_train-1k.json, on_bad_record: skip}\n"
    errors = [str(e) for e in validate_text("keditlab: 1\ntrain:\n  editor: mnd\n" + records, "t.yaml")]
    assert len(errors) == 1 and "t.yaml:3:11: train.editor" in errors[0] and "did you mean 'mend'" in errors[0], errors
    errors = [str(e) for e in validate_text("keditlab: 1\ntrain:\n  editor: mend\n" + records + "  stepz: 3\n  rank: 0\n",
                                            "t.yaml")]
    assert any("t.yaml:5:3: train.stepz" in e and "did you mean 'steps'" in e for e in errors), errors
    assert any("t.yaml:6:9: train.rank" in e and "at least 1" in e for e in errors), errors
    assert validate_text("keditlab: 1\ntrain:\n  editor: mend\n" + records, "t.yaml") == []
    errors = validate_text("keditlab: 1\ntrain:\n  editor: mend\n  records: {dataset: zsre, file: zsre/zsre_mend_train-1k.json}\n",
                           "t.yaml")   # a bad training record is named, on the records' line
    assert len(errors) == 1 and errors[0].path == "train.records.file" and "record 534" in errors[0].message


def test_keditlab_train_needs_a_train_section(tmp_path, capsys):
    from keditlab.cli import main

    spec = tmp_path / "s.yaml"
    spec.write_text("keditlab: 1\nedits: [{prompt: The sky is, subject: sky, target: green}]\n")
    assert main(["train", str(spec)]) == 2
    assert "has no `train:` section" in capsys.readouterr().err
    assert main(["train", str(spec), "--resume", str(tmp_path)]) == 2


def test_a_training_shows_its_curves_in_a_notebook(tiny, tmp_path, cache):
    from keditlab.runner.train_run import train_spec
    from keditlab.spec import spec_from_dict
    from keditlab.widgets import show
    from keditlab.widgets.magic import _training_bundle
    from keditlab.widgets.training import is_training_folder, training_html

    run = train_spec(spec_from_dict(_train_spec(tmp_path, steps=20)), tmp_path / "runs", loaded=tiny,
                     log=lambda _m: None, progress=False, cache=False)
    assert run.archive == run.path / "archive.pt" and not (cache / "editors").exists()   # a trial stays out of the cache
    assert is_training_folder(run.path) and not is_training_folder(tmp_path)
    page = training_html(run.path)
    assert "data:image/png;base64," in page and "edit_success" in page and "20 steps" in page
    assert page.count("<tr>") == 3   # the header and the validations at steps 10 and 20
    assert "mend" in _training_bundle(run)["text/html"] and "validation:" in _training_bundle(run)["text/plain"]
    assert "edit_success" in show(str(run.path)).value


def test_keditlab_train_resume_continues_an_interrupted_training(tiny, tmp_path, cache, monkeypatch):
    from keditlab.runner.train_run import resume_training, train_spec
    from keditlab.spec import spec_from_dict

    real_loss, calls = MendTrainer.loss, []

    def interrupted(self, records):
        calls.append(1)
        if len(calls) == 15:
            raise KeyboardInterrupt
        return real_loss(self, records)
    monkeypatch.setattr(MendTrainer, "loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_spec(spec_from_dict(_train_spec(tmp_path, steps=30)), tmp_path / "runs", loaded=tiny,
                   log=lambda _m: None, progress=False)
    folder = next((tmp_path / "runs").iterdir())
    assert json.loads((folder / "manifest.json").read_text())["status"] == "interrupted"
    assert not (cache / "editors").exists()   # no archive from a training that did not finish
    run = resume_training(folder, loaded=tiny, log=lambda _m: None, progress=False)
    assert run.result.resumed_from == 10 and run.result.steps == 30 and run.archive.is_file()
    assert json.loads((folder / "manifest.json").read_text())["status"] == "complete"
    with pytest.raises(ValueError, match="not written by `keditlab train`"):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "manifest.json").write_text('{"format": "keditlab.run/1"}')
        resume_training(tmp_path / "other", loaded=tiny)
