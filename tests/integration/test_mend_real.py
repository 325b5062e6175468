"""MEND and SERAC on the embedded SmolLM2-135M: small archives trained through `keditlab train`, then edits they were
never trained on.

A few minutes of training on 64 records of ZsRE's training split do not make a
good editor (the shipped spec trains for longer: docs/methods.md), but they
must already make one whose edits raise the target's probability on records
of the evaluation split, and leave the model bit for bit as it was once undone.
"""

from __future__ import annotations

import pytest
import torch

from keditlab.data.datasets import dataset_cases
from keditlab.methods import EditContext, get_method
from keditlab.models.tokens import encode_prompt_answer

pytestmark = pytest.mark.integration


def _target_logprob(model, tokenizer, prompt: str, target: str) -> float:
    prompt_ids, answer_ids = encode_prompt_answer(tokenizer, prompt, target)
    with torch.no_grad():
        logprobs = model(input_ids=torch.tensor([prompt_ids + answer_ids])).logits[0].float().log_softmax(-1)
    return float(sum(logprobs[len(prompt_ids) - 1 + i, token] for i, token in enumerate(answer_ids)))


def test_a_briefly_trained_mend_raises_the_targets_of_unseen_edits(embedded, shared_datasets, tmp_path, monkeypatch):
    from keditlab.runner.train_run import train_spec
    from keditlab.spec import spec_from_dict

    monkeypatch.setenv("KEDITLAB_CACHE", str(tmp_path / "cache"))   # the test's archive never reaches the user's cache
    model, tokenizer, profile = embedded
    train_file = str(shared_datasets / "zsre" / "zsre_mend_train-1k.json")
    spec = spec_from_dict({"keditlab": 1, "name": "mend-real", "model": "smollm2-135m", "train": {
        "editor": "mend", "records": {"dataset": "zsre", "path": train_file, "limit": 64},
        "validation": {"dataset": "zsre", "path": train_file, "offset": 64, "limit": 16},
        "steps": 60, "batch_size": 4, "validate_every": 30, "checkpoint_every": 30}})
    run = train_spec(spec, tmp_path / "runs", loaded=embedded, log=lambda _m: None, progress=False)
    assert run.result.steps == 60 and run.archive.is_file()

    cases = dataset_cases("zsre", shared_datasets / "zsre" / "zsre_mend_eval_portability_gpt4.json", limit=10)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    raised = []
    for case in cases:
        before = _target_logprob(model, tokenizer, case.prompt, case.target)
        handle = get_method("mend").apply(model, tokenizer, profile, [case], {}, EditContext(progress=False))
        raised.append(_target_logprob(model, tokenizer, case.prompt, case.target) - before)
        assert len(handle.changed_parameters) == 3 and handle.details["archive"] == str(run.archive)
        handle.restore()
    assert all(torch.equal(p, params[n]) for n, p in model.named_parameters())
    assert sum(r > 0 for r in raised) >= 9, raised
    assert sum(raised) / len(raised) > 1.0, raised   # nats: the target's probability rises by e times or more on average


def test_serac_trained_on_counterfact_without_its_evaluation_subjects_routes_unseen_edits(embedded, shared_datasets,
                                                                                            tmp_path, monkeypatch):
    """SERAC's classifier on the real model, trained through `keditlab train` with `exclude`, found by its training's
    name: an unseen edit's prompt reads the edit (and its target becomes likelier), its neighbours read nothing."""
    from keditlab.runner.train_run import train_spec
    from keditlab.spec import spec_from_dict

    monkeypatch.setenv("KEDITLAB_CACHE", str(tmp_path / "cache"))
    model, tokenizer, profile = embedded
    split = shared_datasets / "counterfact" / "easyedit"
    evaluated = shared_datasets / "counterfact" / "counterfact_500.json"
    spec = spec_from_dict({"keditlab": 1, "name": "serac-real", "model": "smollm2-135m", "train": {
        "editor": "serac", "records": {"dataset": "counterfact", "path": str(split / "counterfact-edit.json"), "limit": 300},
        "validation": {"dataset": "counterfact", "path": str(split / "counterfact-val.json"), "limit": 30},
        "exclude": {"dataset": "counterfact", "path": str(evaluated), "limit": 50}, "steps": 300}})
    left_out = spec.train.excluded[0]
    assert left_out > 0 and len(spec.train.records) == 300 - left_out
    run = train_spec(spec, tmp_path / "runs", loaded=embedded, log=lambda _m: None, progress=False)
    assert run.archive.name.startswith("serac-serac-real-")

    cases = dataset_cases("counterfact", evaluated, limit=10)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    routed, kept_out, raised = 0, [], []
    for case in cases:
        handle = get_method("serac").apply(model, tokenizer, profile, [case], {"archive": "serac-real"},
                                           EditContext(progress=False))
        context = handle.context(case.prompt)
        routed += bool(context)
        kept_out += [handle.context(probe.prompt) == "" for probe in case.locality]
        raised.append(_target_logprob(model, tokenizer, context + case.prompt, case.target)
                      - _target_logprob(model, tokenizer, case.prompt, case.target))
        handle.restore()
        assert handle.context(case.prompt) == ""
    assert all(torch.equal(p, params[n]) for n, p in model.named_parameters())
    assert routed >= 9 and sum(kept_out) >= 0.9 * len(kept_out), (routed, sum(kept_out), len(kept_out))
    assert sum(r > 0 for r in raised) >= 9, raised
