"""``keditlab.apply_edit`` says what it is doing: a progress line per phase, and the seconds at the end."""

from __future__ import annotations

import torch

import keditlab
from keditlab.models import derive_profile
from keditlab.spec import EditCase
from tests.conftest import tiny_with_embedded_vocab

CASE = EditCase(prompt="The Eiffel Tower is located in the city of", subject="Eiffel Tower", target="Rome", case_id="eiffel")


def test_apply_edit_shows_its_phases_and_the_seconds(tokenizer, capsys):
    model = tiny_with_embedded_vocab()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with keditlab.apply_edit("ft-m", model, tokenizer, derive_profile(model), [CASE], {"steps": 1}) as handle:
        assert handle.seconds >= 0
    shown = capsys.readouterr().err
    assert "ft-m: checking its settings" in shown
    assert "ft-m: applying 1 edit" in shown
    assert "ft-m: 1 edit applied in" in shown
    assert all(torch.equal(before[n], p.detach()) for n, p in model.named_parameters())


def test_apply_edit_is_quiet_when_asked(tokenizer, capsys):
    model = tiny_with_embedded_vocab()
    keditlab.apply_edit("ft-m", model, tokenizer, derive_profile(model), [CASE], {"steps": 1}, progress=False).restore()
    assert "ft-m:" not in capsys.readouterr().err
