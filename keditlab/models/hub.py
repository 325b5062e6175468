"""Is a Hugging Face model at hand?  The local cache, and a quick look at whether the hub answers.

Without network, ``transformers`` asked for a model that is not cached does
not fail at once: ``huggingface_hub`` retries its requests for most of a
minute before it gives up.  So before loading a hub id that is not in the
local cache, :func:`hub_unreachable_reason` opens one TCP connection to the
hub (or to the proxy that would carry the request), waiting at most
``timeout`` seconds, and the loader turns a failure into one clear error.

It honours what ``huggingface_hub`` honours:

* ``HF_HUB_OFFLINE=1``: the hub is not asked at all;
* ``HF_ENDPOINT``: a mirror instead of ``https://huggingface.co``;
* ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` (through ``urllib``'s reading
  of them): with a proxy, the proxy is what must answer.

Nothing here imports torch or transformers.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
import urllib.request

DEFAULT_ENDPOINT = "https://huggingface.co"

#: Seconds to wait for the hub (or proxy) to accept a connection.
HUB_CHECK_TIMEOUT = 3.0


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` says not to use the network."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:
        return False


def hub_endpoint() -> str:
    """The hub's address: ``$HF_ENDPOINT`` or ``https://huggingface.co``."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def is_cached(repo_id: str) -> bool | None:
    """True when the model's ``config.json`` is in the local Hugging Face cache.

    None when ``repo_id`` is not a valid hub id (then ``transformers`` says so
    itself, without the network), or ``huggingface_hub`` is missing.
    """
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        hit = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # HFValidationError: not a repo id
        return None
    return isinstance(hit, str)


def _address(url: str) -> tuple[str, int] | None:
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def connection_target(endpoint: str) -> tuple[str, int, str]:
    """``(host, port, what)``: where a request to ``endpoint`` first connects, and how to name it."""
    address = _address(endpoint)
    if address is None:
        raise ValueError(f"HF_ENDPOINT {endpoint!r} is not a URL like https://huggingface.co")
    host = address[0]
    scheme = urllib.parse.urlsplit(endpoint).scheme or "https"
    proxy = urllib.request.getproxies().get(scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_address = _address(proxy)
        if proxy_address is not None:
            return proxy_address[0], proxy_address[1], f"the proxy {proxy} (for {endpoint})"
    return address[0], address[1], endpoint


def hub_unreachable_reason(timeout: float | None = None) -> str | None:
    """None when the hub accepts a connection within ``timeout`` s, else why not, in words.

    The connection runs in a helper thread, so a slow name lookup cannot
    hold the caller longer than ``timeout`` either.
    """
    timeout = HUB_CHECK_TIMEOUT if timeout is None else timeout
    if hub_offline():
        return "HF_HUB_OFFLINE is set"
    try:
        host, port, what = connection_target(hub_endpoint())
    except ValueError as exc:
        return str(exc)
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(f"{what} does not answer: {exc.strerror or exc}")

    worker = threading.Thread(target=connect, name="keditlab-hub-check", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        return f"{what} did not answer within {timeout:g} s"
    return outcome[0]
