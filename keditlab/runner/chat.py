"""``model.chat_template``: every prompt of a case through the tokenizer's chat template, for editing and evaluation alike.

An instruct model is asked questions inside its chat format; editing it with
bare prompts and asking it in chat (or the reverse) measures a different
thing from what was edited.  So when the chat template is on, the runner
rewrites the cases once, before anything reads them: each prompt (edit
prompt, rephrases, every probe and condition, joint edits) becomes a user
turn followed by the assistant header, and methods and evaluation both see
those prompts.  The subject stays inside the user turn, so subject positions
are found as before.  ``auto`` turns it on exactly when ``evaluate.context``
is ``chat``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from keditlab.vocabulary import EditCase, Probe


class ChatTemplateError(ValueError):
    """The spec asks for the chat template and the tokenizer has none."""


def chat_on(setting: str, context: str) -> bool:
    """Whether prompts go through the chat template: ``on``, or ``auto`` with ``evaluate.context: chat``."""
    return setting == "on" or (setting == "auto" and context == "chat")


def chat_prompt(tokenizer: Any, text: str) -> str:
    """``text`` as a user turn, followed by the assistant header, as text (the template's own system turn included)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            "the spec asks for the chat template (model.chat_template: on, or evaluate.context: chat) but this "
            "model's tokenizer has none. Fix: set model.chat_template: off and evaluate.context: bare or qa")
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


def map_prompts(case: EditCase, fn: Callable[[str], str]) -> EditCase:
    """A copy of ``case`` with ``fn`` applied to every prompt it holds (probes, conditions and joint edits too)."""

    def probe(p: Probe) -> Probe:
        return dataclasses.replace(p, prompt=fn(p.prompt), conditions=tuple(probe(c) for c in p.conditions))

    return dataclasses.replace(
        case, prompt=fn(case.prompt), rephrase=tuple(fn(r) for r in case.rephrase),
        locality=tuple(map(probe, case.locality)), portability=tuple(map(probe, case.portability)),
        questions=tuple(map(probe, case.questions)), joint=tuple(map_prompts(j, fn) for j in case.joint))
