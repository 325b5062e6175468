"""One chat-completions request to an OpenAI-compatible server, with errors a person can act on.

vLLM (``vllm serve MODEL``), llama.cpp's ``llama-server``, Ollama, LM Studio
and the hosted APIs all speak the same HTTP dialect: ``POST
{url}/chat/completions`` with a JSON body ``{"model", "messages", ...}``,
answered by ``{"choices": [{"message": {"content": "..."}}]}``.  This module
speaks it with the standard library alone (:mod:`urllib.request`), so the
judge of :mod:`keditlab.evaluate.judge` needs no client package.

Whatever goes wrong (no server at the address, a refused key, a model the
server does not serve, a timeout, a reply that is not a chat completion)
comes out as one :class:`EndpointError` whose message names the spec field
to change, the URL, and the fix, never as a traceback from ``urllib``.  The
key is sent as ``Authorization: Bearer <key>`` and appears in no message.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

#: HTTP statuses worth a second try during a run (the server is busy or restarting), not at the preflight.
RETRIED_STATUSES = (429, 500, 502, 503, 504)


class EndpointError(ValueError):
    """A chat-completions request failed; the message names the spec field, the URL and the fix."""


@dataclass(frozen=True)
class Endpoint:
    """Where the requests go and how: the base ``url`` (ending in ``/v1``), the ``key`` (None: none sent),
    the seconds each request may take, and the spec field the URL came from (for messages)."""

    url: str
    key: str | None = None
    timeout: float = 30.0
    field: str = "evaluate.judge"
    key_env: str | None = None

    @property
    def address(self) -> str:
        """The full address posted to: the base URL and ``/chat/completions``."""
        return self.url.rstrip("/") + "/chat/completions"


def chat_reply(endpoint: Endpoint, body: dict[str, Any], attempts: int = 1) -> str:
    """The text of the first choice's message for the chat-completions ``body``.

    ``attempts`` > 1 tries again (after 1 s, 2 s, ...) when the server could
    not be reached, timed out, or answered a status of :data:`RETRIED_STATUSES`;
    a refused key or an unknown model fails at once.
    """
    for attempt in range(attempts):
        try:
            return _post(endpoint, body)
        except _Transient as exc:
            if attempt + 1 >= attempts:
                raise EndpointError(str(exc)) from None
            time.sleep(attempt + 1)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


class _Transient(Exception):
    """A failure another try may cure; its message is the final error's."""


def _post(endpoint: Endpoint, body: dict[str, Any]) -> str:
    headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "keditlab"}
    if endpoint.key:
        headers["Authorization"] = f"Bearer {endpoint.key}"
    request = urllib.request.Request(endpoint.address, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST")
    where = f"{endpoint.field}.url: the judge endpoint {endpoint.url}"
    try:
        with urllib.request.urlopen(request, timeout=endpoint.timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        raise _http_error(endpoint, exc) from None
    except (socket.timeout, TimeoutError):
        raise _Transient(f"{endpoint.field}.timeout: the judge endpoint {endpoint.url} did not answer within "
                         f"{endpoint.timeout:g} s. Fix: check that the server is up and not overloaded, or give it "
                         f"longer (`timeout:` under evaluate.judge).") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise _Transient(f"{endpoint.field}.timeout: the judge endpoint {endpoint.url} did not answer within "
                             f"{endpoint.timeout:g} s. Fix: check that the server is up, or raise `timeout:`.") from None
        raise _Transient(f"{where} cannot be reached ({_reason(reason)}). Fix: start the server (e.g. `vllm serve MODEL "
                         "--port 8000`, or llama.cpp's `llama-server -m MODEL.gguf --port 8080`) or correct the url: the "
                         "base address ending in /v1, to which keditlab adds /chat/completions.") from None
    except (OSError, ValueError) as exc:   # a reset connection, an address urllib cannot use
        raise _Transient(f"{where} cannot be reached ({_reason(exc)}). Fix: check the url (http://HOST:PORT/v1) and "
                         "that the server is up.") from None
    return _content(endpoint, raw)


def _reason(reason: Any) -> str:
    """A short readable cause: ``connection refused`` rather than ``[Errno 111] Connection refused``."""
    text = getattr(reason, "strerror", None) or str(reason)
    return text[:1].lower() + text[1:] if text else "no reason given"


def _snippet(exc: urllib.error.HTTPError) -> str:
    """The first 200 characters of an error reply's body (its message, where it is JSON with one)."""
    try:
        text = exc.read().decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - a body that cannot be read says nothing more
        return ""
    try:
        data = json.loads(text)
        error = data.get("error", data) if isinstance(data, dict) else data
        text = error.get("message", text) if isinstance(error, dict) else str(error)
    except ValueError:
        pass
    text = " ".join(str(text).split())
    return f": {text[:200]}" if text else ""


def _http_error(endpoint: Endpoint, exc: urllib.error.HTTPError) -> Exception:
    """The error for an HTTP status: which field is wrong, and what to do."""
    said = f"HTTP {exc.code}{_snippet(exc)}"
    if exc.code in (401, 403):
        key = (f"the key in ${endpoint.key_env}" if endpoint.key_env else "no key (evaluate.judge has no api_key_env)")
        return EndpointError(f"{endpoint.field}.api_key_env: the judge endpoint {endpoint.url} refused {key} ({said}). "
                             "Fix: put a valid key in the variable api_key_env names, or name the variable that holds it.")
    if exc.code == 404:
        return EndpointError(f"{endpoint.field}.url: the judge endpoint {endpoint.address} answered {said}. Fix: give the "
                             "base URL ending in /v1 (keditlab adds /chat/completions), and a model the server serves "
                             f"({endpoint.field}.model; GET {endpoint.url.rstrip('/')}/models lists them).")
    if exc.code in RETRIED_STATUSES:
        return _Transient(f"{endpoint.field}: the judge endpoint {endpoint.url} answered {said}. Fix: check the "
                          "server's log; it may be overloaded or still loading the model.")
    return EndpointError(f"{endpoint.field}: the judge endpoint {endpoint.url} refused the request ({said}). Fix: check "
                         f"{endpoint.field}.model and that the server speaks the OpenAI chat-completions API.")


def _content(endpoint: Endpoint, raw: bytes) -> str:
    """The first choice's message text of a chat-completions reply; an error naming the url when it is none."""
    try:
        data = json.loads(raw.decode("utf-8"))
        content = data["choices"][0]["message"].get("content")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        shown = " ".join(raw.decode("utf-8", "replace").split())[:200]
        raise EndpointError(f"{endpoint.field}.url: the reply of {endpoint.address} is not a chat completion "
                            f"({shown!r}). Fix: point url at an OpenAI-compatible API (its base, ending in /v1).") from None
    return content if isinstance(content, str) else ""
