"""IKE: editing by in-context demonstrations, no weight changes.

Zheng et al., 2023, "Can We Edit Factual Knowledge by In-Context Learning?"
(EMNLP 2023, arXiv:2305.12740).  The new fact is *written in front of the
prompt*, after a few demonstrations that teach the model what to do with a
"New Fact:" line.  Each demonstration is a fact from a pool, shown in one of
three roles:

``copy``     New Fact: Paris is the capital of Italy.  Prompt: Paris is the capital of → Italy
``update``   the same fact, asked in other words (a paraphrase) → the new answer
``retain``   the same fact, then an *unrelated* prompt → its usual answer,
             which teaches the model that a new fact does not change everything

The demonstrations shown for an edit are the ``demonstrations`` pool facts
most similar to the new fact (cosine similarity of embeddings), least similar
first so that the closest sits next to the query, as in the paper.  Roles go
round ``roles`` (default ``copy, update``), nearest first.

Defaults measured on the embedded 135M model (docs/methods.md): 4
demonstrations in the roles ``copy, update``.  ``retain`` demonstrations and
longer contexts make this small model answer with a *demonstration's* object
(with 8 demonstrations, half of them ``retain``, reliability falls to 0.55 on
the ten reference edits, against 0.87 with the defaults); the paper's 32
demonstrations were chosen for GPT-J (6B).

Where the edit lives: nowhere in the weights.  :attr:`EditHandle.context` gives,
for any prompt, the text to read before it; the evaluator reads every probe
that way (``measure(..., context=handle.context)``), and ``restore()`` removes
the facts of that call, so the model answers as before.  With several facts
stored (batch and sequential runs), each prompt is given the ``facts`` stored
facts whose prompts are most similar to it: retrieval, as a memory-based
editor would do, never the answer key.

Embeddings: by default the edited model's own hidden states (mean over the
text's tokens at the middle layer, no extra download); ``embedding`` names a
sentence-embedding model (a Hugging Face id or a local folder, loaded from the
local cache) to use instead.

The shipped pool (``ike_demonstrations.json``) is 32 counterfactual facts of
assorted relations written for keditlab, each with a paraphrase and an
unrelated prompt; ``pool`` reads a benchmark file instead.  A pool record about
the edit's own subject is never shown as a demonstration.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import torch

from keditlab.methods.base import Capabilities, EditContext, EditHandle, EditMethod, MethodConfig, MethodConfigError, MethodPlan
from keditlab.methods.common import SHIPPED_FACTS, mean_hidden_states

ROLES = ("copy", "update")


@dataclass
class IKEConfig(MethodConfig):
    demonstrations: int = field(default=4, metadata={"help": "Demonstrations placed before each prompt (0: the new fact alone).", "minimum": 0})
    facts: int = field(default=1, metadata={"help": "Stored new facts placed before each prompt, the ones most similar to it (batch and sequential runs store several).", "minimum": 1})
    roles: list[str] = field(default_factory=lambda: list(ROLES), metadata={"help": "Roles the demonstrations take in turn, nearest first: copy, update or retain."})
    pool: str | None = field(default=None, metadata={"help": "Benchmark file whose records are the demonstrations. Empty: the 32 facts shipped with keditlab."})
    pool_format: str = field(default="easyedit", metadata={"help": "Format of the pool file.", "choices": ["easyedit", "counterfact", "zsre"]})
    embedding: str | None = field(default=None, metadata={"help": "Sentence-embedding model (Hugging Face id or local folder, from the local cache) used to rank demonstrations and facts. Empty: the edited model's own hidden states."})

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = sorted(set(self.roles) - {"copy", "update", "retain"})
        if unknown or not self.roles:
            raise MethodConfigError(
                f"roles: {unknown or 'an empty list'} {'is not a role' if unknown else 'names no role'}. "
                f"Fix: list roles among copy, update and retain (default: {', '.join(ROLES)})."
            )


@dataclass
class _Fact:
    prompt: str
    target: str
    key: torch.Tensor        # embedding of the prompt, for retrieving the fact
    demos: str               # the demonstrations retrieved for this fact, as text


class IKE(EditMethod, name="ike", family="in-context", paper="Zheng et al., EMNLP 2023, arXiv:2305.12740",
          config_class=IKEConfig, capabilities=Capabilities(batch=True, sequential=True, changes_weights=False, saveable=False),
          model_needs=()):
    """In-context editing: demonstrations and the new fact placed before the prompt (IKE)"""

    #: Tokens one demonstration or stored fact adds before a prompt, about (a fact and a question with its answer).
    TOKENS_PER_DEMONSTRATION = 30

    @classmethod
    def plan(cls, profile, config: IKEConfig, model=None) -> MethodPlan:
        """No weight; every prompt the model reads grows by the demonstrations and stored facts placed before it."""
        return MethodPlan(changes_weights=False, extra_tokens=cls.TOKENS_PER_DEMONSTRATION * (config.demonstrations + config.facts))

    def _apply(self, model, tokenizer, profile, cases, config: IKEConfig, context: EditContext) -> EditHandle:
        embed = _embedder(model, tokenizer, profile, config.embedding)
        pool = _pool(config.pool, config.pool_format)
        pool_keys = _pool_keys(pool, embed, config.embedding, config.pool, config.pool_format, context)
        memory: list[_Fact] = context.memory.setdefault(self.name, [])
        new: list[_Fact] = []
        used: dict[str, list[str]] = {}
        for case in cases:
            fact = f"{case.prompt} {case.target}"
            allowed = [i for i, record in enumerate(pool) if record.subject.lower() != case.subject.lower()]
            chosen = _nearest(embed([fact])[0], pool_keys[allowed], config.demonstrations)
            chosen = [allowed[i] for i in chosen]
            demos = "".join(_demonstration(pool[i], config.roles[rank % len(config.roles)])
                            for rank, i in reversed(list(enumerate(chosen))))
            new.append(_Fact(case.prompt, case.target, embed([case.prompt])[0], demos))
            used[case.case_id] = [pool[i].case_id for i in chosen]
        memory.extend(new)

        def forget() -> None:
            for fact in new:
                memory.remove(fact)

        prompt_keys: dict[str, torch.Tensor] = {}

        def context_for(prompt: str) -> str:
            if not memory:
                return ""
            if len(memory) <= config.facts:
                nearest = list(memory)
            else:
                if prompt not in prompt_keys:
                    prompt_keys[prompt] = embed([prompt])[0]
                keys = torch.stack([f.key for f in memory])
                nearest = [memory[i] for i in _nearest(prompt_keys[prompt], keys, config.facts)]
            lines = "".join(f"New Fact: {f.prompt} {f.target}\n" for f in reversed(nearest))
            return nearest[0].demos + lines + "Prompt: "

        handle = EditHandle(self.name, model, originals={}, on_restore=[forget], context=context_for)
        handle.details = {"demonstrations": used, "facts_stored": len(memory),
                          "pool": config.pool or "shipped (ike_demonstrations.json)"}
        return handle


def _demonstration(record, role: str) -> str:
    """One demonstration: the pool fact, then a prompt answered in ``role``'s way."""
    fact = f"New Fact: {record.prompt} {record.target}\n"
    if role == "update" and record.rephrase:
        return f"{fact}Prompt: {record.rephrase[0]} {record.target}\n\n"
    if role == "retain" and record.locality:
        probe = record.locality[0]
        return f"{fact}Prompt: {probe.prompt} {probe.answer}\n\n"
    return f"{fact}Prompt: {record.prompt} {record.target}\n\n"


def _nearest(query: torch.Tensor, keys: torch.Tensor, k: int) -> list[int]:
    """Indices of the ``k`` rows of ``keys`` most cosine-similar to ``query``, most similar first."""
    if k == 0 or keys.shape[0] == 0:
        return []
    scores = torch.nn.functional.cosine_similarity(keys, query[None], dim=-1)
    return scores.topk(min(k, keys.shape[0])).indices.tolist()


def _pool(path: str | None, fmt: str) -> list[Any]:
    from keditlab.data.records import read_cases

    source = path or SHIPPED_FACTS
    try:
        records = read_cases(fmt if path else "easyedit", source)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise MethodConfigError(
            f"pool: the demonstration pool {str(source)!r} could not be read as {fmt} records ({type(err).__name__}: {err}). "
            f"Fix: give the path of a readable benchmark file and its pool_format, or leave pool out for the shipped demonstrations."
        ) from None
    if not records:
        raise MethodConfigError(f"pool: {source} holds no records. Fix: give a file with at least one record, or leave pool out.")
    return records


def _pool_keys(pool, embed, embedding: str | None, path: str | None, fmt: str, context: EditContext) -> torch.Tensor:
    """Embeddings of the pool's facts, computed once per run (the pool and the embedder do not change)."""
    cache = context.memory.setdefault("ike-pool", {})
    key = (embedding, path, fmt)
    if key not in cache:
        with context.setup():
            cache[key] = embed([f"{r.prompt} {r.target}" for r in pool])
    return cache[key]


def _embedder(model, tokenizer, profile, name: str | None):
    """A function from texts to unit-length embedding rows."""
    if name is None:
        return functools.partial(mean_hidden_states, model, tokenizer, profile.num_layers // 2, blocks=profile.layers)
    other_model, other_tokenizer = _sentence_model(name)
    return functools.partial(mean_hidden_states, other_model, other_tokenizer, None)


@functools.lru_cache(maxsize=2)
def _sentence_model(name: str):
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
        model = AutoModel.from_pretrained(name, local_files_only=True).eval()
    except (OSError, ValueError) as err:
        raise MethodConfigError(
            f"embedding: the sentence-embedding model {name!r} is not available offline ({type(err).__name__}). "
            f"Fix: download it once where the hub is reachable (e.g. `huggingface-cli download {name}`), give a local folder, "
            f"or leave embedding out to rank by the edited model's own hidden states."
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return model, tokenizer
