"""SERAC: its scope classifier's training, its archive, and the memory it edits with.

On a tiny random Llama with the embedded tokenizer's vocabulary (as the MEND
tests in test_training.py); what a trained SERAC does on a real model is
measured in docs/methods.md.
"""

from __future__ import annotations

import json

from dataclasses import replace

import pytest
import torch

from keditlab.methods import EditContext, get_method
from keditlab.methods.archives import ArchiveError, find_archive, load_archive, model_facts, save_archive
from keditlab.methods.serac import SeracTrainConfig, SeracTrainer
from keditlab.methods.training import LOSSES, train_editor
from keditlab.models import LoadedModel, derive_profile
from tests.unit.test_training import _cases, cache, tiny_with_embedded_vocab  # noqa: F401 - cache is a fixture


@pytest.fixture(scope="module")
def tiny(tokenizer):
    torch.manual_seed(0)
    model = tiny_with_embedded_vocab("llama")
    return LoadedModel(model, tokenizer, derive_profile(model))


def _quick(**changes) -> SeracTrainConfig:
    settings = {"steps": 60, "batch_size": 4, "dim": 32, "lr": 1e-2, "validate_every": 30, "checkpoint_every": 30,
                "hard_negatives": 2}
    return SeracTrainConfig(**{**settings, **changes})


@pytest.fixture(scope="module")
def archive(tiny, tmp_path_factory):
    """A classifier trained on all eight facts for 200 steps, saved as an archive for this model."""
    model, tokenizer, profile = tiny
    folder = tmp_path_factory.mktemp("serac")
    config = _quick(steps=200, batch_size=8)
    with SeracTrainer(model, tokenizer, profile, _cases(), [], config) as trainer:
        train_editor(trainer, config, folder / "run", progress=False)
        return save_archive(folder / "archive.pt", "serac", model_facts(model, "tiny"), {}, trainer.build(),
                            trainer.state_dict())


def test_training_lowers_the_loss_and_leaves_the_model_as_it_was(tiny, tmp_path):
    model, tokenizer, profile = tiny
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = _quick()
    with SeracTrainer(model, tokenizer, profile, _cases(), _cases(4), config) as trainer:
        result = train_editor(trainer, config, tmp_path / "run", progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / LOSSES).read_text().splitlines()]
    assert result.steps == 60 and len(losses) == 60
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
    assert set(result.validation) == {"in_scope", "unrelated_out"}
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_pairs_label_a_records_own_prompt_and_rephrasing_in_scope_and_the_rest_out(tiny):
    model, tokenizer, profile = tiny
    with SeracTrainer(model, tokenizer, profile, _cases(4), [], _quick(hard_negatives=1)) as trainer:
        edits, queries, labels = trainer._pairs([0, 1])
    texts = {i: t for t, i in trainer._texts.items()}
    assert [texts[int(e)] for e in edits] == ["The Eiffel Tower is in the city of Rome", "The capital of France is Berlin"]
    inside = {texts[int(q)] for q, y in zip(queries, labels[0]) if y == 1}
    outside = {texts[int(q)] for q, y in zip(queries, labels[0]) if y == 0}
    assert inside == {"The Eiffel Tower is in the city of", "Where is the Eiffel Tower? In"}
    assert {"The capital of France is", "France's capital city is", "Dogs are animals that"} <= outside
    assert len(queries) > 6   # the nearest records' prompts come in as hard negatives


def test_an_in_scope_prompt_reads_the_edit_and_an_unrelated_one_reads_nothing(tiny, archive):
    model, tokenizer, profile = tiny
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    case = _cases()[0]
    handle = get_method("serac").apply(model, tokenizer, profile, [case], {"archive": str(archive)},
                                       EditContext(progress=False))
    assert handle.changed_parameters == [] and all(torch.equal(p, params[n]) for n, p in model.named_parameters())
    assert handle.context(case.prompt) == "The Eiffel Tower is in the city of Rome\n" * 5   # the default: the edit five times
    assert handle.context(case.rephrase[0]) == "The Eiffel Tower is in the city of Rome\n" * 5
    assert handle.context("Dogs are animals that") == ""
    handle.restore()
    assert handle.context(case.prompt) == ""


def test_sequential_edits_accumulate_and_restoring_takes_them_back_last_first(tiny, archive):
    model, tokenizer, profile = tiny
    serac, context, cases = get_method("serac"), EditContext(progress=False), _cases()
    settings = {"archive": str(archive), "template": "New fact: {prompt} {target}\n"}
    first = serac.apply(model, tokenizer, profile, [cases[0]], settings, context)
    second = serac.apply(model, tokenizer, profile, [cases[1], cases[2]], settings, context)
    assert second.details["edits_stored"] == 3 and [e.target for e in context.memory["serac"]] == ["Rome", "Berlin", "blue"]
    assert first.context(cases[0].prompt) == "New fact: The Eiffel Tower is in the city of Rome\n"
    spaced = serac.apply(model, tokenizer, profile, [replace(cases[2], prompt=cases[2].prompt + " ", target=" blue")],
                         settings, EditContext(progress=False))   # a record's stray spaces are not doubled
    assert spaced.context(cases[2].prompt) == "New fact: Apples are coloured blue\n"
    spaced.restore()
    assert first.context(cases[1].rephrase[0]) == "New fact: The capital of France is Berlin\n"   # the memory is shared
    assert second.context(cases[2].prompt) == "New fact: Apples are coloured blue\n"
    second.restore()
    assert [e.target for e in context.memory["serac"]] == ["Rome"] and first.context(cases[2].prompt) == ""
    assert first.context(cases[0].prompt).endswith("Rome\n")
    first.restore()
    assert context.memory["serac"] == [] and first.context(cases[0].prompt) == ""


def test_keditlab_train_caches_an_archive_that_serac_finds(tiny, tmp_path, cache):
    from keditlab.runner.train_run import train_spec
    from keditlab.spec import spec_from_dict

    model, tokenizer, profile = tiny
    records = tmp_path / "records.json"
    records.write_text(json.dumps([{"src": c.prompt, "subject": c.subject, "alt": c.target, "answers": ["x"],
                                    "rephrase": c.rephrase[0], "loc": "nq question: " + c.locality[0].prompt,
                                    "loc_ans": c.locality[0].answer} for c in _cases()]))
    spec = spec_from_dict({"keditlab": 1, "name": "train-tiny", "model": "smollm2-135m",
                           "train": {"editor": "serac", "records": {"dataset": "zsre", "path": str(records), "limit": 6},
                                     "validation": {"dataset": "zsre", "path": str(records), "offset": 6},
                                     "steps": 20, "batch_size": 3, "dim": 16, "lr": 1e-2, "validate_every": 10,
                                     "checkpoint_every": 10}})
    run = train_spec(spec, tmp_path / "runs", loaded=tiny, log=lambda _m: None, progress=False)
    assert run.archive.parent.parent == cache / "editors" and run.archive.is_file()
    saved = load_archive(run.archive, "serac", model)
    assert saved["training"]["count"] == 6 and saved["build"] == {"width": profile.hidden_size, "dim": 16, "layer": 1, "mention": True}
    assert set(saved["training"]["validation"]) == {"in_scope", "unrelated_out"}
    assert find_archive(model, "serac") == run.archive
    handle = get_method("serac").apply(model, tokenizer, profile, _cases(1), {}, EditContext(progress=False))
    assert handle.details["archive"] == str(run.archive) and handle.details["edits_stored"] == 1
    handle.restore()


def test_an_archive_trained_for_another_model_is_refused(tiny, tokenizer, archive):
    torch.manual_seed(1)
    other = tiny_with_embedded_vocab("llama")
    with torch.no_grad():   # the fingerprint reads a few weights: make sure this model's differ
        other.model.layers[0].mlp.down_proj.weight.add_(1.0)
    with pytest.raises(ArchiveError) as error:
        get_method("serac").apply(other, tokenizer, derive_profile(other), _cases(1), {"archive": str(archive)},
                                  EditContext(progress=False))
    assert "was trained for the model 'tiny'" in str(error.value) and "Fix:" in str(error.value)
    with pytest.raises(ArchiveError, match="an archive of 'serac', not of 'mend'"):
        get_method("mend").apply(*tiny, _cases(1), {"archive": str(archive)}, EditContext(progress=False))


def test_a_template_without_its_fields_is_refused_with_a_fix():
    from keditlab.methods.base import MethodConfigError
    from keditlab.methods.serac import SeracConfig

    with pytest.raises(MethodConfigError, match="Fix:"):
        SeracConfig(template="New fact: {fact}")


def test_embeddings_stop_after_their_layer_and_equal_the_whole_pass(tiny):
    """mean_hidden_states with the block list runs no block above the layer, and gives the same embedding."""
    from keditlab.methods.common import mean_hidden_states
    from keditlab.models.hooks import hooks

    model, tokenizer, profile = tiny
    texts = ["The Eiffel Tower is in the city of Rome", "Dogs are", "The capital of France is Berlin, said nobody"]
    whole = mean_hidden_states(model, tokenizer, 0, texts)
    ran: list[int] = []
    blocks = model.get_submodule(profile.layers)
    with hooks(pre=[(block, lambda _m, _i, n=n: ran.append(n)) for n, block in enumerate(blocks)]):
        stopped = mean_hidden_states(model, tokenizer, 0, texts, blocks=profile.layers)
    assert torch.allclose(whole, stopped, atol=1e-6) and set(ran) == {0} and len(blocks) > 1


def test_the_classifier_knows_whether_an_input_names_the_edits_subject():
    """names_subject: +1 / -1 / 0; an archive trained before the feature builds (and scores) without it."""
    from keditlab.methods.serac import ScopeClassifier, names_subject

    named = names_subject(["Danielle  Darrieux", ""], ["The mother tongue of danielle darrieux is", "Michel Rocard speaks"])
    assert named.tolist() == [[1.0, -1.0], [0.0, 0.0]]
    old = ScopeClassifier.from_build({"width": 8, "dim": 4, "layer": 0})
    assert old.mention is None and "mention" not in old.state_dict()
    new = ScopeClassifier.from_build({"width": 8, "dim": 4, "layer": 0, "mention": True})
    with torch.no_grad():
        new.mention.fill_(3.0)
    edits, queries = torch.randn(2, 8), torch.randn(2, 8)
    assert torch.allclose(new(edits, queries, named) - new(edits, queries), 3.0 * named)
