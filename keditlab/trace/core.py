"""Causal tracing: which hidden states carry a fact from the subject to the answer.

Meng, Bau, Andonian and Belinkov, "Locating and Editing Factual Associations
in GPT", NeurIPS 2022 (arXiv:2202.05262), §2.1.  Three runs of the model on a
prompt that names a subject ("The Eiffel Tower is located in the city of"):

1. **clean**: the prompt as it is; every hidden state is recorded, and the
   probability of the answer's first token is ``clean_prob``;
2. **corrupted**: Gaussian noise is added to the embeddings of the subject's
   tokens, so the model no longer knows what the subject is; the answer's
   probability drops to ``corrupted_prob`` (averaged over ``samples`` draws);
3. **corrupted with one state restored**: as 2, but the state of one token at
   one layer is set back to its clean value.  If that state carries the fact,
   the answer's probability comes back.  Its rise over ``corrupted_prob`` is
   the state's *indirect effect*.

The state restored is the block's output (``residual``: the residual stream
after layer ``l``), the MLP's output (``mlp``) or the attention's output
(``attn``).  For the last two, ROME restores a window of ``window`` layers
centred on ``l`` at once, because one sub-layer alone is a small part of
the stream.

**Batching.**  Every restoration is a separate run of the model, so one fact
with ``T`` tokens, ``L`` layers and three kinds is ``3·T·L·samples`` runs.
They are batched: the noise draws are shared by all restorations (as in
ROME's code), each row of a batch is one (restoration, noise draw), and
forward hooks on the embedding and on each restored module add the noise and
write the clean values into the rows that restore there.  Two identities save
most of the work without changing any result:

* restoring a token *before* the subject changes nothing (the noise has not
  reached it: the causal mask hides later tokens), so its score is the
  corrupted probability, without a run;
* restoring token ``t`` cannot change tokens before ``t``, so the corrupted
  prefix ``[0, t)`` is run once per noise draw and its keys and values are
  reused (the model's KV cache) by every restoration at ``t``, which then
  runs only the tokens from ``t`` on.  The last token's restorations cost one
  token each.  (``reuse_prefix=False`` runs every row in full; the tests
  check both give the same numbers.)
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from keditlab.models.hooks import HookSpec, hooks
from keditlab.models.kvcache import copied, forward_with_cache
from keditlab.models.sampling import device_of
from keditlab.models.tokens import encode_answer, encode_prompt, subject_token_range
from keditlab.spec.hints import did_you_mean
from keditlab.trace.noise import NoiseLevel, given_noise, noise_level
from keditlab.trace.result import KINDS, TraceResult, window_layers

#: Attention modules of a block, by the names common architectures give them.
_ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention")


class TraceError(ValueError):
    """A trace that cannot be run as asked (an unknown kind, a subject not in the prompt, ...)."""


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise TraceError(f"unknown kind {kind!r}{did_you_mean(str(kind), KINDS)}; a trace restores one of: "
                         f"{', '.join(KINDS)} (the block's output, the MLP output, the attention output)")
    return kind


def attention_path(model: Any, profile: Any, layer: int) -> str:
    """Module path of the attention sub-layer of block ``layer`` (``model.layers.5.self_attn`` in Llama)."""
    block_path = profile.layer_module(layer)
    block = model.get_submodule(block_path)
    children = dict(block.named_children())
    for name in _ATTENTION_NAMES:
        if name in children:
            return f"{block_path}.{name}"
    found = [n for n in children if "attn" in n.lower() or "attention" in n.lower()]
    if len(found) == 1:
        return f"{block_path}.{found[0]}"
    raise TraceError(f"could not find the attention module of {block_path} (children: {', '.join(children)}); "
                     "kind 'attn' needs it. Fix: trace kind 'residual' or 'mlp' for this model.")


def module_path(model: Any, profile: Any, kind: str, layer: int) -> str:
    """The module whose output is the state of ``kind`` at ``layer``."""
    if kind == "residual":
        return profile.layer_module(layer)
    if kind == "mlp":
        return profile.mlp_out_module(layer)
    return attention_path(model, profile, layer)


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _replace_first(output: Any, hidden: torch.Tensor) -> Any:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


@dataclass
class _Prepared:
    """One prompt, tokenized and run clean: everything the corrupted runs need."""

    ids: list[int]
    subject: tuple[int, int]
    answer_id: int
    answer: str
    clean_prob: float
    predicted_id: int
    predicted_prob: float
    clean: dict[tuple[str, int], torch.Tensor]  # (kind, layer) -> (T, hidden) clean outputs


class Tracer:
    """Runs the clean, corrupted and restored passes of one model (see the module's docstring).

    ``trace`` / ``trace_kinds`` build one; use it directly to trace many
    facts with the same hooks' module lookup and noise level.
    """

    def __init__(self, model: Any, tokenizer: Any, profile: Any = None, batch_size: int = 512, reuse_prefix: bool = True):
        from keditlab.models import derive_profile

        self.model, self.tokenizer = model, tokenizer
        self.profile = profile if profile is not None else derive_profile(model)
        self.num_layers = self.profile.num_layers
        self.batch_size = max(1, int(batch_size))
        self.reuse_prefix = reuse_prefix
        self.device = device_of(model)
        self.embed = model.get_input_embeddings()
        self.head = model.get_output_embeddings()
        self.decoder = model.base_model
        self._modules: dict[tuple[str, int], torch.nn.Module] = {}

    def module(self, kind: str, layer: int) -> torch.nn.Module:
        key = (kind, layer)
        if key not in self._modules:
            self._modules[key] = self.model.get_submodule(module_path(self.model, self.profile, kind, layer))
        return self._modules[key]

    # -- passes ---------------------------------------------------------------------------------------------

    def _forward(self, ids: torch.Tensor, cache: Any = None, want_cache: bool = False) -> tuple[torch.Tensor, Any]:
        """Next-token probabilities at the last position (float32), and the cache when asked."""
        out, kept = forward_with_cache(self.decoder, ids, cache, keep=want_cache)
        logits = self.head(out.last_hidden_state[:, -1]).float()
        return torch.softmax(logits, dim=-1), kept

    def prepare(self, prompt: str, subject: str, answer: str | None, kinds: Sequence[str]) -> _Prepared:
        """Tokenize, locate the subject, run the clean pass and record every state ``kinds`` will restore."""
        ids = encode_prompt(self.tokenizer, prompt)
        span = subject_token_range(self.tokenizer, prompt, subject)
        clean: dict[tuple[str, int], torch.Tensor] = {}
        grabs = []
        for kind in kinds:
            for layer in range(self.num_layers):
                def grab(_m, _i, output, key=(kind, layer)):
                    clean[key] = _first(output)[0].detach().clone()
                grabs.append((self.module(kind, layer), grab))
        with hooks(forward=grabs), torch.no_grad():
            probs, _ = self._forward(torch.tensor([ids], device=self.device))
        probs = probs[0]
        predicted_id = int(probs.argmax())
        if answer is None:
            answer_id, answer_text = predicted_id, self.tokenizer.decode([predicted_id]).strip()
        else:
            answer_id, answer_text = encode_answer(self.tokenizer, answer)[0], answer
        return _Prepared(ids, span, answer_id, answer_text, float(probs[answer_id]), predicted_id,
                         float(probs[predicted_id]), clean)

    def _noise(self, prep: _Prepared, samples: int, noise: float, seed: int) -> torch.Tensor:
        """``(samples, subject tokens, hidden)`` Gaussian noise of standard deviation ``noise``, from ``seed``."""
        generator = torch.Generator().manual_seed(int(seed))
        width = prep.subject[1] - prep.subject[0]
        dim = int(self.embed.weight.shape[-1])   # the embedding's width (narrower than the blocks' in OPT-350m)
        draws = torch.randn(samples, width, dim, generator=generator) * float(noise)
        return draws.to(self.device, self.embed.weight.dtype)

    def _noise_hook(self, prep: _Prepared, draws: torch.Tensor, start: int, repeats: int) -> HookSpec:
        """A forward hook on the embedding adding ``draws`` at the subject tokens of a pass over tokens ``start..``, as ``(module, hook)``.

        Rows are laid out draw-major: row ``s * repeats + r`` carries draw ``s``.
        """
        s0, s1 = prep.subject
        lo, hi = max(s0, start), s1

        def hook(_m, _i, output):
            if hi <= lo:
                return output
            width = output.shape[1]
            part = draws[:, lo - s0: hi - s0].repeat_interleave(repeats, dim=0)
            end = min(hi - start, width)
            if end <= lo - start:
                return output
            output = output.clone()
            output[:, lo - start: end] += part[:, : end - (lo - start)]
            return output

        return self.embed, hook

    def corrupted(self, prep: _Prepared, draws: torch.Tensor) -> float:
        """P(answer) with the subject corrupted and nothing restored, averaged over the draws."""
        samples = draws.shape[0]
        ids = torch.tensor([prep.ids] * samples, device=self.device)
        with hooks(forward=[self._noise_hook(prep, draws, 0, 1)]), torch.no_grad():
            probs, _ = self._forward(ids)
        return float(probs[:, prep.answer_id].mean())

    def restored(self, prep: _Prepared, draws: torch.Tensor, runs: list[list[tuple[str, int, int]]],
                 progress: Any = None) -> np.ndarray:
        """P(answer) for each run, each a list of ``(kind, layer, token)`` states restored together, averaged over the draws.

        Runs whose states all sit at one token ``t`` share the corrupted prefix
        ``[0, t)`` (see the module's docstring); other runs are run in full.
        """
        samples = draws.shape[0]
        scores = np.zeros(len(runs))
        groups: dict[int, list[int]] = defaultdict(list)
        for index, states in enumerate(runs):
            tokens = {token for _, _, token in states}
            groups[tokens.pop() if len(tokens) == 1 and self.reuse_prefix else 0].append(index)
        per_chunk = max(1, self.batch_size // samples)
        for start, members in sorted(groups.items()):
            cache = self._prefix_cache(prep, draws, start) if start > 0 else None
            for offset in range(0, len(members), per_chunk):
                chunk = members[offset: offset + per_chunk]
                probs = self._restored_pass(prep, draws, [runs[i] for i in chunk], start, cache)
                scores[chunk] = probs[:, prep.answer_id].reshape(samples, len(chunk)).mean(0).cpu().numpy()
                if progress is not None:
                    progress.update(len(chunk))
        return scores

    def _prefix_cache(self, prep: _Prepared, draws: torch.Tensor, start: int) -> Any:
        samples = draws.shape[0]
        ids = torch.tensor([prep.ids[:start]] * samples, device=self.device)
        with hooks(forward=[self._noise_hook(prep, draws, 0, 1)]), torch.no_grad():
            _, cache = self._forward(ids, want_cache=True)
        return cache

    def _restored_pass(self, prep: _Prepared, draws: torch.Tensor, runs: list[list[tuple[str, int, int]]],
                       start: int, cache: Any) -> torch.Tensor:
        samples, count = draws.shape[0], len(runs)
        rows: dict[tuple[str, int], tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
        for r, states in enumerate(runs):
            for kind, layer, token in states:
                row_list, token_list = rows[(kind, layer)]
                for s in range(samples):
                    row_list.append(s * count + r)
                    token_list.append(token)
        patches = [self._noise_hook(prep, draws, start, count)]
        for (kind, layer), (row_list, token_list) in rows.items():
            where_rows = torch.tensor(row_list, device=self.device)
            where_tokens = torch.tensor(token_list, device=self.device)
            values = prep.clean[(kind, layer)][where_tokens]

            def patch(_m, _i, output, r=where_rows, t=where_tokens - start, v=values):
                hidden = _first(output).clone()
                hidden[r, t] = v.to(hidden.dtype)
                return _replace_first(output, hidden)

            patches.append((self.module(kind, layer), patch))
        ids = torch.tensor([prep.ids[start:]] * (samples * count), device=self.device)
        run_cache = copied(cache, count) if cache is not None else None
        with hooks(forward=patches), torch.no_grad():
            probs, _ = self._forward(ids, cache=run_cache)
        return probs


def _check_settings(samples: int, window: int, noise: float | None) -> None:
    if not isinstance(samples, int) or samples < 1:
        raise TraceError(f"samples must be a whole number of noise draws, 1 or more; got {samples!r}")
    if not isinstance(window, int) or window < 1:
        raise TraceError(f"window must be a whole number of layers, 1 or more; got {window!r}")
    if noise is not None and (not isinstance(noise, (int, float)) or noise < 0):
        raise TraceError(f"noise must be a standard deviation, 0 or more (or None for 3 x the subjects' embedding std); got {noise!r}")


def _warnings(prep: _Prepared, corrupted: float, tokenizer: Any, noise: float) -> list[str]:
    found = []
    if prep.predicted_id != prep.answer_id:
        found.append(
            f"the model does not predict the answer {prep.answer!r} in the clean run: its top next token is "
            f"{tokenizer.decode([prep.predicted_id])!r} (p={prep.predicted_prob:.3f}) and P(answer) is only "
            f"{prep.clean_prob:.3f}, so these effects say little about where the fact is stored. "
            "Fix: trace a fact the model knows (leave answer out to trace whatever it predicts)."
        )
    if noise > 0 and prep.clean_prob > 0 and corrupted >= 0.9 * prep.clean_prob:
        found.append(
            f"the noise hardly lowered P(answer) (clean {prep.clean_prob:.3f}, corrupted {corrupted:.3f}): "
            "no restoration can show much effect. Fix: raise noise."
        )
    return found


def trace_kinds(model: Any, tokenizer: Any, prompt: str, subject: str, answer: str | None = None,
                kinds: Sequence[str] = KINDS, samples: int = 10, noise: float | NoiseLevel | None = None,
                window: int = 10, seed: int = 0, tokens: Sequence[int] | None = None, profile: Any = None,
                tracer: Tracer | None = None, progress: bool = False) -> dict[str, TraceResult]:
    """Trace one fact for several kinds in one batched computation; ``{kind: TraceResult}``.

    All kinds share the clean run, the noise draws and the corrupted baseline.
    ``tokens`` limits the traced token indices (default: every token).
    Other arguments as in :func:`trace`.
    """
    kinds = [check_kind(k) for k in kinds]
    _check_settings(samples, window, noise if not isinstance(noise, NoiseLevel) else noise.value)
    started = time.perf_counter()
    tracer = tracer or Tracer(model, tokenizer, profile)
    try:
        prep = tracer.prepare(prompt, subject, answer, kinds)
    except ValueError as exc:
        raise TraceError(str(exc)) from None
    level = noise if isinstance(noise, NoiseLevel) else noise_level(model, tokenizer) if noise is None else given_noise(noise)
    draws = tracer._noise(prep, samples, level.value, seed)
    corrupted = tracer.corrupted(prep, draws)
    count = len(prep.ids)
    positions = list(range(count)) if tokens is None else sorted({t if t >= 0 else count + t for t in tokens})
    if any(not 0 <= t < count for t in positions):
        raise TraceError(f"tokens {list(tokens or [])} are outside the prompt's {count} tokens")
    num_layers = tracer.num_layers
    runs, slots = [], []
    for kind in kinds:
        width = None if kind == "residual" else window
        for i, token in enumerate(positions):
            if token < prep.subject[0]:
                continue  # before the subject: clean == corrupted, restoring changes nothing
            for layer in range(num_layers):
                runs.append([(kind, j, token) for j in window_layers(layer, num_layers, width)])
                slots.append((kind, i, layer))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(runs), desc=f"tracing {subject!r}", unit="run", leave=False)
    try:
        values = tracer.restored(prep, draws, runs, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    grids = {kind: np.full((len(positions), num_layers), corrupted) for kind in kinds}
    for (kind, i, layer), value in zip(slots, values):
        grids[kind][i, layer] = value
    seconds = time.perf_counter() - started
    texts = [tokenizer.decode([i]) for i in prep.ids]
    warnings = _warnings(prep, corrupted, tokenizer, level.value)
    name = getattr(model, "keditlab_name", "") or getattr(getattr(model, "config", None), "_name_or_path", "")
    return {
        kind: TraceResult(
            prompt=prompt, subject=subject, answer=prep.answer, answer_token_id=prep.answer_id, kind=kind, tokens=texts,
            subject_range=prep.subject, positions=positions, scores=grids[kind], clean_prob=prep.clean_prob,
            corrupted_prob=corrupted, predicted=tokenizer.decode([prep.predicted_id]), predicted_prob=prep.predicted_prob,
            samples=samples, noise=level.value, noise_basis=level.describe(), window=None if kind == "residual" else window,
            seed=seed, model=str(name), seconds=round(seconds, 3), warnings=list(warnings),
        )
        for kind in kinds
    }


def trace(model: Any, tokenizer: Any, prompt: str, subject: str, answer: str | None = None, kind: str = "residual",
          samples: int = 10, noise: float | NoiseLevel | None = None, window: int = 10, seed: int = 0,
          tokens: Sequence[int] | None = None, profile: Any = None, progress: bool = False) -> TraceResult:
    """Causal trace of one fact: the indirect effect of every (token, layer) state of one ``kind``.

    ``prompt`` must contain ``subject`` (spelled as in the prompt); ``answer``
    is the expected completion (its first token is scored; default: whatever
    the model predicts).  ``kind`` is ``"residual"`` (block outputs),
    ``"mlp"`` or ``"attn"`` (a window of ``window`` layers restored around each
    layer).  ``samples`` noise draws of standard deviation ``noise`` are added
    to the subject's token embeddings; ``noise=None`` uses three times the
    standard deviation of subject-token embeddings (:func:`noise_level`), and
    the value used is recorded in the result.  The draws come from a
    ``torch.Generator`` seeded with ``seed``, so a trace is repeatable.

    A subject that is not in the prompt, or an unknown ``kind``, is a
    :class:`TraceError`.  A fact the model does not predict in the clean run
    is traced, with a warning in ``result.warnings``.
    """
    check_kind(kind)
    return trace_kinds(model, tokenizer, prompt, subject, answer, (kind,), samples, noise, window, seed, tokens,
                       profile, progress=progress)[kind]


def restored_probability(model: Any, tokenizer: Any, prompt: str, subject: str, states: list[tuple[str, int, int]],
                         answer: str | None = None, samples: int = 10, noise: float = 0.1, seed: int = 0,
                         profile: Any = None) -> dict[str, float]:
    """P(answer) clean, corrupted, and corrupted with all of ``states`` (``(kind, layer, token)``) restored at once.

    The building block of :func:`trace`, open for checks such as "restoring
    the residual stream at every token of the first layer gives back the clean
    probability".  Returns ``{"clean", "corrupted", "restored"}``.
    """
    tracer = Tracer(model, tokenizer, profile)
    kinds = sorted({kind for kind, _, _ in states}, key=KINDS.index)
    prep = tracer.prepare(prompt, subject, answer, [check_kind(k) for k in kinds])
    draws = tracer._noise(prep, samples, noise, seed)
    restored = tracer.restored(prep, draws, [states])[0]
    return {"clean": prep.clean_prob, "corrupted": tracer.corrupted(prep, draws), "restored": float(restored)}
