"""``logits_at``: logits at chosen positions equal the rows of the full logits, on every path.

Teacher-forced checks read a few positions per sequence; models that take
``logits_to_keep`` compute only those, others compute all and pick.  Both must
give what the full forward pass gives, for rows of different lengths and
position lists of different lengths (right padding).
"""

from __future__ import annotations

import pytest
import torch

from keditlab.models import logits as logits_module
from keditlab.models.logits import logits_at
from keditlab.models.sampling import right_padded
from tests.conftest import make_tiny_model

ROWS = [[5, 9, 3, 7, 11, 2], [4, 8], [6, 6, 6, 1]]
POSITIONS = [[3, 4, 5], [1], [0, 2]]


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3_text", "qwen3_moe"])
@pytest.mark.parametrize("keep", [True, False], ids=["logits_to_keep", "full_then_gather"])
def test_positions_read_equal_the_full_forward_pass(family, keep, monkeypatch):
    model = make_tiny_model(family).eval()
    if not keep:
        monkeypatch.setattr(logits_module, "_takes_logits_to_keep", lambda _cls: False)
    else:
        assert logits_module._takes_logits_to_keep(type(model)), f"{family} should take logits_to_keep"
    ids, mask = right_padded(ROWS, 0, "cpu")
    with torch.inference_mode():
        full = model(input_ids=ids, attention_mask=mask).logits
        picked = logits_at(model, ids, mask, POSITIONS)
    assert picked.shape == (3, 3, full.shape[-1])
    for row, positions in enumerate(POSITIONS):
        torch.testing.assert_close(picked[row, : len(positions)], full[row, positions], rtol=1e-5, atol=1e-5)


def test_a_model_without_the_argument_is_read_in_full():
    class Plain(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            return type("Out", (), {"logits": input_ids.float().unsqueeze(-1).expand(-1, -1, 4)})()

    assert not logits_module._takes_logits_to_keep(Plain)
    ids, mask = right_padded(ROWS, 0, "cpu")
    picked = logits_at(Plain(), ids, mask, POSITIONS)
    assert picked[0, :, 0].tolist() == [7.0, 11.0, 2.0] and picked[1, 0, 0] == 8.0 and picked[2, :2, 0].tolist() == [6.0, 6.0]
