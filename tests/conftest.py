"""Shared fixtures.

``embedded`` loads the real embedded model once per test session.  Tests that
edit it mutate it in place and must restore it.  ``$KEDITLAB_CACHE`` is used
when set; otherwise the default cache, so a machine converts the GGUF once.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: The shared benchmark files beside the checkout: the local copies of keditlab's published files.
SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def pytest_configure(config):
    """Specs naming a published file (``file: zsre/...``) read it from ``../shared/datasets``, never download it.

    ``$KEDITLAB_DATASETS`` is how keditlab finds local copies of its published
    files; set here when the shared folder is there and the variable is not
    set, so every test (and every ``keditlab`` it starts) reads those copies.
    """
    if "KEDITLAB_DATASETS" not in os.environ and SHARED_DATASETS.is_dir():
        os.environ["KEDITLAB_DATASETS"] = str(SHARED_DATASETS)


@pytest.fixture(scope="session")
def embedded():
    """``LoadedModel`` of the embedded SmolLM2-135M: ``model, tok, profile = embedded``."""
    from keditlab.models import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def gemma():
    """``LoadedModel`` of the second embedded model, Gemma 3 270M (skipped when its package is not installed)."""
    from keditlab.models import load_model
    from keditlab.models.embedded import GEMMA3, embedded_cache_dir, is_valid_cache

    if GEMMA3.source_stamp() is None and not is_valid_cache(embedded_cache_dir(GEMMA3.name)):
        pytest.skip(f"the second embedded model needs its package: {GEMMA3.install}")
    return load_model("gemma3-270m")


@pytest.fixture(scope="session")
def shared_datasets():
    """The shared benchmark files (``../shared/datasets`` beside the checkout, or ``$KEDITLAB_DATASETS``)."""
    folder = Path(os.environ.get("KEDITLAB_DATASETS", SHARED_DATASETS))
    if not (folder / "counterfact" / "counterfact_500.json").exists():
        pytest.skip(f"the shared benchmark files are not at {folder} (set KEDITLAB_DATASETS)")
    return folder


def make_tiny_model(model_type: str = "llama", seed: int = 0, **overrides):
    """A tiny randomly initialised causal LM (hidden 32, 2 layers, vocab 128), in eval mode.

    ``model_type`` is any family of the architecture matrix (``keditlab.devtools.architectures.FAMILIES``:
    gpt2, gptj, gpt_neox, opt, bloom, falcon, llama, mistral, qwen2, qwen3, gemma2, gemma3_text, phi3, olmo2,
    and the mixture-of-experts qwen3_moe and mixtral).
    """
    from keditlab.devtools.architectures import tiny_model

    return tiny_model(model_type, seed, **overrides)


@pytest.fixture
def tiny_llama():
    """A fresh tiny random Llama (hidden 32, MLP 64, 2 layers, vocab 128)."""
    return make_tiny_model("llama")


def tiny_with_embedded_vocab(model_type: str = "llama"):
    """A tiny random model (3 layers) with the embedded tokenizer's vocabulary, so real prompts can be fed to it."""
    depth = {"n_layer": 3} if model_type in ("gpt2", "gptj", "bloom") else {"num_hidden_layers": 3}
    return make_tiny_model(model_type, vocab_size=49152, **depth)


@pytest.fixture(scope="module")
def tokenizer():
    """The embedded model's tokenizer (converted once), with a pad token."""
    from transformers import AutoTokenizer

    from keditlab.models.embedded import ensure_embedded_cache

    tok = AutoTokenizer.from_pretrained(ensure_embedded_cache())
    tok.pad_token = tok.pad_token or tok.eos_token
    return tok


@pytest.fixture
def file_server(monkeypatch, tmp_path):
    """A local HTTP server on the files of a temporary folder, for downloads without the network:
    ``(folder, base_url, requested_paths)``."""
    import http.server
    import threading

    folder = tmp_path / "served"
    folder.mkdir()
    requested: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def do_GET(self):  # noqa: N802 - the standard library's name
            requested.append(self.path)
            super().do_GET()

        def log_message(self, *args):  # keep the test output quiet
            pass

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # a proxy in the environment must not catch it
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}", requested
    httpd.shutdown()
    httpd.server_close()


def spec_errors(text: str, source: str = "bad.yaml", **kwargs) -> list:
    """The validation errors of a spec written in a test (dedented), as read from the file ``source``."""
    import textwrap

    from keditlab.spec import validate_text

    return validate_text(textwrap.dedent(text), source, **kwargs)


def only_spec_error(text: str, source: str = "bad.yaml", **kwargs):
    """The one validation error of a spec written in a test (all of them in the message when there are more)."""
    errors = spec_errors(text, source, **kwargs)
    assert len(errors) == 1, "\n".join(map(str, errors))
    return errors[0]
