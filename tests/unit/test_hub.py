"""A hub model that is neither cached nor reachable fails in seconds, with the alternatives named.

No test here touches the network: the connection to the hub is monkeypatched.
"""

from __future__ import annotations

import socket
import time

import pytest

from keditlab.models import ModelLoadError, load_model
from keditlab.models import hub
from keditlab.models.hub import is_cached as real_is_cached

NAME = "some-org/some-model"


class Reached(Exception):
    """Raised by the stand-in for transformers: the loader got as far as loading."""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No offline flag, endpoint or proxy from the machine running the tests; the model is not cached."""
    for var in ("HF_HUB_OFFLINE", "HF_ENDPOINT", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "is_cached", lambda repo_id: False)
    monkeypatch.setattr("keditlab.models.loader.is_cached", lambda repo_id: False)

    def transformers_stand_in(*args, **kwargs):
        raise Reached()

    monkeypatch.setattr("keditlab.models.loader._load_pretrained", transformers_stand_in)


@pytest.fixture
def connections(monkeypatch):
    """Record where the check connects; by default nothing answers."""
    seen: list[tuple[str, int]] = []

    def refuse(address, timeout=None):
        seen.append(address)
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    return seen


def test_unreachable_hub_fails_fast_naming_the_alternatives(connections):
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        load_model(NAME, device="cpu")
    assert time.monotonic() - start < 2
    message = str(info.value)
    assert f"model '{NAME}' is not available locally (not in the Hugging Face cache) and the hub can't be reached" in message
    assert "https://huggingface.co does not answer: Network is unreachable" in message
    assert "the embedded model 'smollm2-135m'" in message and "local directory" in message
    assert "connect this machine to the network" in message
    assert connections == [("huggingface.co", 443)]


def test_a_hub_that_never_answers_costs_the_timeout_only(monkeypatch):
    monkeypatch.setattr(hub, "HUB_CHECK_TIMEOUT", 0.2)
    def hang(address, timeout=None):  # a lookup or connect that takes far longer than the timeout
        time.sleep(2)
        raise OSError(110, "Connection timed out")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match=r"did not answer within 0.2 s"):
        load_model(NAME, device="cpu")
    assert time.monotonic() - start < 1.5


def test_hf_endpoint_is_the_address_checked(connections, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example.org:8443/")
    with pytest.raises(ModelLoadError, match=r"https://hf-mirror.example.org:8443 does not answer.*now: https://hf-mirror.example.org:8443"):
        load_model(NAME, device="cpu")
    assert connections == [("hf-mirror.example.org", 8443)]


def test_through_a_proxy_the_proxy_is_checked(connections, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.org:3128")
    with pytest.raises(ModelLoadError, match=r"the proxy http://proxy.example.org:3128"):
        load_model(NAME, device="cpu")
    assert connections == [("proxy.example.org", 3128)]


def test_hf_hub_offline_asks_nothing(connections, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        load_model(NAME, device="cpu")
    assert "(HF_HUB_OFFLINE is set)" in str(info.value) and "unset HF_HUB_OFFLINE" in str(info.value)
    assert connections == []


def test_reachable_hub_goes_on_to_load(monkeypatch):
    class Connection:
        def close(self):
            pass

    monkeypatch.setattr(socket, "create_connection", lambda address, timeout=None: Connection())
    with pytest.raises(Reached):
        load_model(NAME, device="cpu")


def test_a_cached_model_is_loaded_without_asking_the_hub(connections, monkeypatch):
    monkeypatch.setattr("keditlab.models.loader.is_cached", lambda repo_id: True)
    with pytest.raises(Reached):
        load_model(NAME, device="cpu")
    assert connections == []


def test_is_cached_reads_the_local_cache(monkeypatch, tmp_path):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    snapshot = tmp_path / "models--some-org--some-model" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--some-org--some-model" / "refs").mkdir()
    (tmp_path / "models--some-org--some-model" / "refs" / "main").write_text("abc123")
    assert real_is_cached(NAME) is True
    assert real_is_cached("gpt2") is False
    assert real_is_cached("not a valid id!!") is None
