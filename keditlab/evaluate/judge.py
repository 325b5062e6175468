"""The generation protocol's judge: does a generated answer state the expected answer?

The rules of :mod:`keditlab.evaluate.answers` (exact match, answer contained)
are strict in both directions: "Paris, France." is not exactly "Paris", and
"not Paris" contains it.  Benchmark studies of free generation (WILD, QAEdit,
2025-2026) therefore ask a language model instead: given the question, the
expected answer and the answer given, does the answer state it?  That is
``evaluate.judge``:

``rule`` (the default)
    No judge: the value is exact match, as it has always been.
``{model: NAME_OR_PATH}``
    A local judge model, loaded with :func:`keditlab.models.load_model` on
    the run's device and asked greedily (:class:`ModelJudge`).
``{url: http://HOST:PORT/v1, model: NAME, api_key_env: VAR, timeout: 30}``
    A model behind any OpenAI-compatible endpoint: vLLM, llama.cpp's
    ``llama-server``, a hosted API (:class:`EndpointJudge`, through
    :mod:`keditlab.evaluate.chat_endpoint`).

Every judge is asked the same fixed prompt, :data:`JUDGE_PROMPT`, filled in
per answer (:meth:`JudgeQuestion.prompt`), and its reply is read by
:func:`read_verdict`: the first word ``yes`` or ``no`` in it (case ignored,
a ``<think>…</think>`` block skipped); a reply with neither is
``unreadable`` and counts as no.  Each verdict keeps the exact prompt and the
reply (:meth:`Verdict.record`), so a run's ``cases.jsonl`` shows, per probe,
what the judge was asked and what it said.

Before a run edits anything, :meth:`Judge.check` asks the judge one question
whose answer is known (:data:`TEST_QUESTION`): a missing key, a server that
is not there, a model that does not reply yes or no, all fail then, as one
:class:`JudgeError` naming the spec field and the fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from keditlab.evaluate.chat_endpoint import Endpoint, EndpointError, chat_reply
from keditlab.spec.types import JudgeSpec

#: The prompt every judge is asked, once per generated answer.  ``{expected}`` is the answer and its
#: aliases joined by `` or ``; ``{question}`` is the probe's prompt as written (before ``evaluate.context``
#: framed it or the chat template wrapped it).
JUDGE_PROMPT = (
    "You check whether an answer to a question states the expected answer.\n"
    "Question: {question}\n"
    "Expected answer: {expected}\n"
    "Answer given: {answer}\n"
    "Does the answer given state the expected answer (the same thing, in any wording)? "
    "Reply with one word: yes or no."
)
#: How a local judge model without a chat template reads the prompt (with one, the prompt is a user turn).
PLAIN_FRAME = "{prompt}\nReply:"
#: How the reply becomes a verdict (recorded in the manifest).
VERDICT_RULE = ("the first word 'yes' or 'no' in the reply, case ignored, after any <think>...</think> block; "
                "a reply with neither is 'unreadable' and counts as no")
#: Most tokens a local judge model generates for its reply.
MODEL_REPLY_TOKENS = 4
#: ``max_tokens`` of each request to an endpoint, and how many requests are in flight at once.
ENDPOINT_MAX_TOKENS = 16
ENDPOINT_WORKERS = 8
#: Tries per request during a run (a busy server gets another chance); the check before the run tries once.
ENDPOINT_ATTEMPTS = 3

_THINKING = re.compile(r"<think>.*?(</think>|$)", re.S | re.I)
_VERDICT = re.compile(r"\b(yes|no)\b")


class JudgeError(ValueError):
    """The judge cannot be used: the message names the spec field (``evaluate.judge...``), what is wrong and the fix."""


@dataclass(frozen=True)
class JudgeQuestion:
    """What the judge is asked about one generated answer: the question, the expected answers, the answer given."""

    question: str
    expected: tuple[str, ...]
    answer: str

    def prompt(self) -> str:
        """:data:`JUDGE_PROMPT` filled in: the exact text the judge is sent."""
        return JUDGE_PROMPT.format(question=self.question.strip(), expected=" or ".join(self.expected),
                                   answer=self.answer.strip())


#: The check before a run: a question whose verdict is known to be yes.
TEST_QUESTION = JudgeQuestion("What is the capital of France?", ("Paris",), "Paris.")


def read_verdict(reply: str) -> str:
    """``yes``, ``no`` or ``unreadable``: the first ``yes`` or ``no`` word of ``reply`` (see :data:`VERDICT_RULE`)."""
    found = _VERDICT.search(_THINKING.sub(" ", reply).casefold())
    return found.group(1) if found else "unreadable"


@dataclass(frozen=True)
class Verdict:
    """The judge's verdict on one answer (``yes``, ``no``, ``unreadable``), with the prompt sent and the reply."""

    verdict: str
    prompt: str
    reply: str

    @property
    def value(self) -> float:
        """1.0 for yes, else 0.0 (an unreadable reply confirms nothing)."""
        return 1.0 if self.verdict == "yes" else 0.0

    def record(self) -> dict[str, str]:
        """What a probe's ``extra["judge"]`` holds."""
        return {"verdict": self.verdict, "prompt": self.prompt, "reply": self.reply}


class Judge:
    """A judge: asks its model each prompt and reads the replies.  Subclasses say how a prompt is asked.

    ``questions`` maps a prompt as the edited model read it to the question as
    written, for prompts that were rewritten before measuring (the runner's
    chat template); a prompt not in it is its own question.
    """

    kind = ""

    def __init__(self, model: str) -> None:
        self.model = model
        self.questions: dict[str, str] = {}

    @property
    def name(self) -> str:
        """How tables name the judge."""
        return f"model {self.model}"

    def replies(self, prompts: Sequence[str]) -> list[str]:
        """The judge model's reply to each prompt, in order."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What a run's manifest records of the judge (never a key)."""
        return {"kind": self.kind, "name": self.name, "model": self.model, "prompt": JUDGE_PROMPT, "verdict": VERDICT_RULE}

    def question_of(self, prompt: str) -> str:
        """The question as written for a prompt as the edited model read it."""
        return self.questions.get(prompt, prompt)

    def judge(self, items: Sequence[JudgeQuestion]) -> dict[JudgeQuestion, Verdict]:
        """A verdict per distinct question (each asked once), keyed by the question."""
        unique = list(dict.fromkeys(items))
        prompts = [item.prompt() for item in unique]
        replies = self.replies(prompts) if prompts else []
        return {item: Verdict(read_verdict(reply), prompt, reply) for item, prompt, reply in zip(unique, prompts, replies)}

    def ask_once(self, prompt: str) -> str:
        """The reply to one prompt, asked once (the check before a run)."""
        return self.replies([prompt])[0]

    def check(self) -> Verdict:
        """Ask :data:`TEST_QUESTION` once, before a run edits anything: a judge that cannot be asked, or whose
        reply is neither yes nor no, is a :class:`JudgeError`.  Returns the verdict (yes, if the judge is sound)."""
        prompt = TEST_QUESTION.prompt()
        reply = self.ask_once(prompt)
        verdict = Verdict(read_verdict(reply), prompt, reply)
        if verdict.verdict == "unreadable":
            raise JudgeError(f"evaluate.judge.model: the judge {self.name} replied {reply!r} to a test question "
                             f"(is {TEST_QUESTION.answer!r} the capital of France?), which is neither yes nor no. Fix: use "
                             "an instruction-tuned model that follows the prompt (docs/protocols.md, The judge), or "
                             "`judge: rule`.")
        return verdict


class ModelJudge(Judge):
    """A local judge model: each prompt, as a user turn of its chat template (or :data:`PLAIN_FRAME` without one),
    answered greedily in at most :data:`MODEL_REPLY_TOKENS` tokens, in batches."""

    kind = "model"

    def __init__(self, loaded: Any, model: str, batch_size: int = 16) -> None:
        super().__init__(model)
        self.loaded, self.batch_size = loaded, batch_size

    def _text(self, prompt: str) -> str:
        tokenizer = self.loaded[1]
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                 add_generation_prompt=True)
        return PLAIN_FRAME.format(prompt=prompt)

    def replies(self, prompts: Sequence[str]) -> list[str]:
        from keditlab.evaluate.generation import greedy_generate

        model, tokenizer = self.loaded[0], self.loaded[1]
        return greedy_generate(model, tokenizer, [self._text(p) for p in prompts], max_new_tokens=MODEL_REPLY_TOKENS,
                               batch_size=self.batch_size)

    def describe(self) -> dict[str, Any]:
        tokenizer = self.loaded[1]
        chat = bool(getattr(tokenizer, "chat_template", None))
        return {**super().describe(), "source": getattr(self.loaded[0], "keditlab_source", None),
                "input": "the prompt as a user turn of the judge's chat template" if chat else PLAIN_FRAME,
                "max_new_tokens": MODEL_REPLY_TOKENS}


class EndpointJudge(Judge):
    """A model behind an OpenAI-compatible endpoint: each prompt one chat-completions request
    (:meth:`body`), :data:`ENDPOINT_WORKERS` at a time."""

    kind = "endpoint"

    def __init__(self, endpoint: Endpoint, model: str) -> None:
        super().__init__(model)
        self.endpoint = endpoint

    @property
    def name(self) -> str:
        return f"{self.model} at {self.endpoint.url}"

    def body(self, prompt: str) -> dict[str, Any]:
        """The JSON body posted for ``prompt``: one user message, greedy, a short reply."""
        return {"model": self.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
                "max_tokens": ENDPOINT_MAX_TOKENS}

    def _ask(self, prompt: str, attempts: int) -> str:
        try:
            return chat_reply(self.endpoint, self.body(prompt), attempts=attempts)
        except EndpointError as exc:
            raise JudgeError(str(exc)) from None

    def replies(self, prompts: Sequence[str]) -> list[str]:
        with ThreadPoolExecutor(max_workers=min(ENDPOINT_WORKERS, len(prompts) or 1)) as pool:
            return list(pool.map(lambda prompt: self._ask(prompt, ENDPOINT_ATTEMPTS), prompts))

    def ask_once(self, prompt: str) -> str:
        """One request, tried once: the check finds out at once whether the server is there, takes the key and
        serves the model."""
        return self._ask(prompt, attempts=1)

    def describe(self) -> dict[str, Any]:
        endpoint = self.endpoint
        return {**super().describe(), "url": endpoint.url, "api_key_env": endpoint.key_env, "timeout": endpoint.timeout,
                "request": {"method": "POST", "url": endpoint.address, "body": self.body("<the filled prompt>")}}


def open_judge(spec: JudgeSpec, *, device: str = "auto", batch_size: int = 16) -> Judge | None:
    """The judge ``evaluate.judge`` names, ready to ask (None for ``rule``); :meth:`Judge.check` tests it.

    A local judge model is loaded here (on ``device``); an endpoint's key is
    read here from its environment variable, and a missing one is a
    :class:`JudgeError` before any request.
    """
    if spec.kind == "rule":
        return None
    if spec.kind == "model":
        from keditlab.models import load_model

        try:
            loaded = load_model(spec.model, device=device)
        except (ValueError, OSError) as exc:   # ModelLoadError, ProfileError, a broken folder
            raise JudgeError(f"evaluate.judge.model: the judge model {spec.model!r} could not be loaded: {exc}. Fix: "
                             "give an embedded model, a Hugging Face id or a local model folder, or add `url:` if "
                             "the model is served by an endpoint.") from None
        return ModelJudge(loaded, spec.model, batch_size=batch_size)
    key = None
    if spec.api_key_env:
        key = os.environ.get(spec.api_key_env, "").strip()
        if not key:
            raise JudgeError(f"evaluate.judge.api_key_env: the environment variable {spec.api_key_env} is not set, so "
                             f"the judge endpoint {spec.url} cannot be asked. Fix: `export {spec.api_key_env}=<your key>` "
                             "before the run, or remove api_key_env for a server that needs no key (a local vLLM or "
                             "llama.cpp server).")
    endpoint = Endpoint(url=spec.url, key=key, timeout=float(spec.timeout), key_env=spec.api_key_env)
    return EndpointJudge(endpoint, spec.model)
