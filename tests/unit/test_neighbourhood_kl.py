"""``neighbourhood_kl``: CounterFact+'s divergence of next-token distributions on locality prompts, before and after.

The divergence is kept coarse (the unedited model's top tokens and one bucket
for the rest, :mod:`keditlab.evaluate.divergence`); these tests compare it
with the full divergence computed by hand from the model's logits.
"""

from __future__ import annotations

import math

import pytest
import torch

from keditlab.evaluate import measure
from keditlab.evaluate.divergence import coarse_kl
from keditlab.evaluate.teacher_forced import TOP_K
from keditlab.models.tokens import encode_prompt_answer
from keditlab.spec import validate_text
from keditlab.spec.types import EvalSpec
from keditlab.vocabulary import EditCase, Probe
from tests.conftest import tiny_with_embedded_vocab

CASE = EditCase("The capital of France is", "France", "Rome",
                locality=(Probe("locality", "The capital of Spain is", "Madrid"), Probe("locality", "Water is made of", "hydrogen")))
SETTINGS = EvalSpec(metrics=("reliability", "locality", "neighbourhood_kl"), protocols=("teacher_forced",))


def _next_token_logprobs(model, tokenizer, probe: Probe) -> torch.Tensor:
    prompt_ids, _ = encode_prompt_answer(tokenizer, probe.prompt, probe.answer)
    with torch.no_grad():
        return model(input_ids=torch.tensor([prompt_ids])).logits[0, -1].float().log_softmax(-1)


def _peaked():
    """A tiny model with a sharp output layer, so its top tokens hold much of the mass (as a trained model's do)."""
    torch.manual_seed(0)
    model = tiny_with_embedded_vocab("llama")
    with torch.no_grad():
        model.lm_head.weight.mul_(40)
    return model


def test_the_divergence_is_zero_before_and_the_coarse_kl_of_the_distributions_after(tokenizer):
    model = _peaked()
    before = measure(model, tokenizer, [CASE], SETTINGS)
    assert [p.value for p in before[0].probes if p.metric == "neighbourhood_kl"] == [0.0, 0.0]
    old = [_next_token_logprobs(model, tokenizer, p) for p in CASE.locality]
    with torch.no_grad():
        model.model.layers[-1].mlp.down_proj.weight.add_(0.3 * torch.randn_like(model.model.layers[-1].mlp.down_proj.weight))
    after = measure(model, tokenizer, [CASE], SETTINGS, reference=before)
    new = [_next_token_logprobs(model, tokenizer, p) for p in CASE.locality]
    values = [p.value for p in after[0].probes if p.metric == "neighbourhood_kl"]
    for value, p, q in zip(values, old, new):
        full = float((p.exp() * (p - q)).sum())
        top = p.topk(min(TOP_K, p.shape[0])).indices
        rest_p, rest_q = 1 - float(p[top].exp().sum()), 1 - float(q[top].exp().sum())
        by_hand = float((p[top].exp() * (p[top] - q[top])).sum()) + rest_p * math.log(rest_p / rest_q)
        assert value == pytest.approx(by_hand, rel=1e-3, abs=1e-6)
        assert 0 < value <= full + 1e-6          # merging tokens never raises a divergence
    assert after[0].scores()[("neighbourhood_kl", "teacher_forced")] == pytest.approx(sum(values) / 2)


def test_the_coarse_kl_is_exact_when_mass_moves_only_among_the_top_tokens():
    before = [math.log(0.5), math.log(0.3)]           # 0.2 on every other token
    after = [math.log(0.3), math.log(0.5)]
    full = 0.5 * math.log(0.5 / 0.3) + 0.3 * math.log(0.3 / 0.5)
    assert coarse_kl(before, after) == pytest.approx(full)
    assert coarse_kl(before, before) == 0.0


def test_neighbourhood_kl_is_asked_for_by_name_and_measured_teacher_forced_only():
    assert not validate_text("keditlab: 1\nedits: [{prompt: The capital of France is, subject: France, target: Rome}]\n"
                             "evaluate: [reliability, locality, neighbourhood_kl]\n", "kl.yaml")
    assert "neighbourhood_kl" not in EvalSpec().metrics      # not measured unless asked for
