"""Small pieces several editing methods share: freezing, logits where a loss needs them, context prefixes, shipped facts,
text embeddings from the model's own hidden states.

(The default-layer rules are in :mod:`keditlab.methods.layers`.)"""

from __future__ import annotations

import contextlib
import functools
import json
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from keditlab.models.hooks import StopForward, hooks
from keditlab.models.logits import logits_at
from keditlab.models.sampling import device_of, sample_ids, seeded


@contextlib.contextmanager
def trainable_only(model: torch.nn.Module, names: Sequence[str] = ()) -> Iterator[None]:
    """Inside the block only the named parameters take gradients; flags are put back after.

    Computing gradients only for what is optimised is most of the speed of an
    edit on a CPU: autograd then keeps no state for the frozen weights.
    """
    wanted = set(names)
    saved = {name: p.requires_grad for name, p in model.named_parameters()}
    try:
        for name, param in model.named_parameters():
            param.requires_grad_(name in wanted)
        yield
    finally:
        for name, param in model.named_parameters():
            param.requires_grad_(saved[name])


def share_of_rms(share: float, weight: torch.Tensor) -> float:
    """``share`` × the root-mean-square of ``weight``'s entries: a learning rate or bound set against their size.

    Adam moves every entry by about its learning rate each step, whatever the
    gradient's scale, so an absolute rate means different things on different
    models: the MLP output projections of SmolLM2-135M have entries of RMS 0.18,
    Gemma 3 270M's 0.014, and the same 1e-3 is a 0.5% step on the first and a
    7% step on the second (which spilled the edit onto unrelated prompts).  A
    rate given as a share of the RMS is the same relative step on every model.
    """
    return share * float(weight.detach().float().pow(2).mean().sqrt())


#: 32 counterfactual facts of assorted relations written for keditlab, each with a paraphrase and an unrelated
#: prompt: IKE's demonstrations, and the other facts GRACE keeps its deferral radii short of.
SHIPPED_FACTS = Path(__file__).with_name("ike_demonstrations.json")


@functools.lru_cache(maxsize=1)
def shipped_fact_prompts() -> tuple[str, ...]:
    """The 96 prompts of :data:`SHIPPED_FACTS`: each fact's prompt, its paraphrase and its unrelated prompt."""
    records = json.loads(SHIPPED_FACTS.read_text(encoding="utf-8"))
    return tuple(text for r in records for text in (r["prompt"], r["rephrase_prompt"], r["locality"]["unrelated"]["prompt"]))


def target_logits(model, ids: torch.Tensor, mask: torch.Tensor, where: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Logits at the positions ``where`` (row indices, column indices) only, one row of logits per pair, in order.

    The output embedding at every position of every row is most of the work
    of a small model's forward and backward pass (a 49k vocabulary against a
    576 hidden size on the embedded model); the loss needs a few positions.
    :func:`~keditlab.models.logits.logits_at` computes only those (and keeps
    what the model does to its logits, such as Gemma 2's soft-capping).
    """
    rows, cols = where
    positions: list[list[int]] = [[] for _ in range(ids.shape[0])]
    slots = []
    for row, col in zip(rows.tolist(), cols.tolist()):
        slots.append(len(positions[row]))
        positions[row].append(col)
    picked = logits_at(model, ids, mask, positions)
    return picked[rows, torch.tensor(slots, dtype=torch.long, device=picked.device)]


# Openings of the short context prefixes (ROME averages keys and values over
# such prefixes, so the edit holds whatever text precedes the subject).
_PREFIX_OPENINGS = ("The", "Therefore", "Because", "I", "You", "However", "In", "It", "When", "She")
_prefix_cache: "weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple[int, int], list[str]]]" = weakref.WeakKeyDictionary()


def context_prefixes(model: torch.nn.Module, tokenizer: Any, count: int, seed: int = 0, length: int = 10) -> list[str]:
    """``""`` plus ``count`` short texts sampled from the model, each ending in ". ".

    Sampled once per model (and seed), before any edit, and then reused, so every
    edit of a run sees the same prefixes.
    """
    per_model = _prefix_cache.setdefault(model, {})
    if (count, seed) in per_model:
        return per_model[(count, seed)]
    prefixes = [""]
    if count > 0:
        openings = [_PREFIX_OPENINGS[i % len(_PREFIX_OPENINGS)] for i in range(count)]
        with seeded(model, seed):
            rows = sample_ids(model, tokenizer, openings, max_new_tokens=length, top_k=5)
        for row in tokenizer.batch_decode(rows, skip_special_tokens=True):
            text = " ".join(row.replace("{", " ").replace("}", " ").split())
            prefixes.append(text.rstrip(".") + ". ")
    per_model[(count, seed)] = prefixes
    return prefixes


def mean_hidden_states(model, tokenizer, layer: int | None, texts: list[str], batch_size: int = 32,
                       blocks: str | None = None) -> torch.Tensor:
    """Mean over each text's tokens of the hidden state after ``layer`` (``None``: the last), normalised: one row per text.

    A text embedding that needs no other model: IKE ranks its demonstrations and
    stored facts by it, SERAC's scope classifier reads it.  Texts are read
    right-padded, ``batch_size`` at a time, without gradients.  Given the path
    of the model's block list (``blocks``, a profile's ``layers``), the forward
    pass stops after block ``layer``: the blocks above it are never run, which
    halves the cost of a middle layer; the hidden state is the same.
    """
    device = device_of(model)
    rows = []
    saved = tokenizer.padding_side
    tokenizer.padding_side = "right"
    stop = model.get_submodule(blocks)[layer] if blocks is not None and layer is not None else None
    try:
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True)
                batch = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
                backbone = getattr(model, "base_model", model)
                if stop is None:
                    out = backbone(**batch, output_hidden_states=True)
                    hidden = out.hidden_states[-1 if layer is None else layer + 1].float()
                else:
                    seen: list[torch.Tensor] = []

                    def grab(_module, _inputs, output):
                        seen.append(output[0] if isinstance(output, tuple) else output)
                        raise StopForward

                    with hooks(forward=[(stop, grab)]):
                        backbone(**batch, use_cache=False)
                    hidden = seen[0].float()
                mask = batch["attention_mask"][..., None].float()
                rows.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).cpu())
    finally:
        tokenizer.padding_side = saved
    return torch.cat(rows)
