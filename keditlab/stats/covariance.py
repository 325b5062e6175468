"""The key covariance ``C = E[k kᵀ]`` of an MLP output projection, cached on disk.

Why it matters: ROME (Meng et al., 2022) treats the MLP output projection ``W``
of one layer as a linear associative memory that maps keys ``k`` (the inputs
to ``W``) to values.  To insert a new association ``k* → v*`` while disturbing
the others as little as possible, the rank-one update is aimed along
``C⁻¹ k*`` rather than ``k*`` itself: directions in which ordinary text rarely
puts keys are cheap to change, common ones are expensive.  ``C`` is estimated
once per model, layer and corpus, and reused by every later edit.

The estimate is the uncentred second moment over every token position of the
corpus, accumulated in float64.  It is cached under
``$KEDITLAB_CACHE/stats/`` keyed by model fingerprint (the checkpoint's, whatever
dtype it was loaded in), layer, corpus and token count, written atomically so
that two kernels cannot corrupt it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from keditlab.models.hooks import StopForward, hooks
from keditlab.models.sampling import device_of, right_padded
from keditlab.stats.corpus import Corpus, load_corpus


@dataclass
class CovarianceStats:
    """A layer's key second moment and where it came from (recorded in run manifests)."""

    layer: int
    matrix: torch.Tensor  # (mlp_size, mlp_size), float32; an MoE layer: (num_experts, expert_size, expert_size), one block per expert
    num_tokens: int
    corpus: str
    path: str
    loaded_from_cache: bool
    seconds: float = 0.0  # time to compute (or load) it in this run
    split_half_difference: float | None = None  # ‖C_even − C_odd‖ / ‖C‖ over alternate batches: the estimate's noise

    def describe(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "num_tokens": self.num_tokens,
            "corpus": self.corpus,
            "path": self.path,
            "loaded_from_cache": self.loaded_from_cache,
            "seconds": self.seconds,
            "split_half_difference": self.split_half_difference,
        }


def cache_dir() -> Path:
    """The keditlab cache root: ``$KEDITLAB_CACHE`` or ``~/.cache/keditlab``."""
    return Path(os.environ.get("KEDITLAB_CACHE", Path.home() / ".cache" / "keditlab")).expanduser()


def model_fingerprint(model: Any) -> str:
    """A short id of a checkpoint's weights, whatever dtype they were loaded in, so statistics never mix two checkpoints.

    Hashes the config (its ``dtype`` left out) and, for *every* weight, its
    name, shape and first :data:`FINGERPRINT_ELEMENTS` entries rounded to
    bfloat16 (:func:`fingerprint_of`).  Two checkpoints that differ anywhere a
    fine-tune or a merge writes (all of a tuned matrix's entries move) get
    different keys, also when they share their embeddings; the sample keeps it
    cheap on any device (a few hundred thousand numbers for a 7B model).

    The fingerprint is taken the first time it is asked for, which is before
    a method's first write (the statistics are read before the update), and
    kept on the model object as ``keditlab_fingerprint``: the statistics belong
    to the checkpoint, so later edits to an MLP do not make a notebook compute
    them again.  (Loading other weights into the same object in place keeps
    the old key: delete the attribute, or load a new model.)

    A float32 and a bfloat16 load of one checkpoint have the same fingerprint
    and share statistics: computed from the bfloat16 weights, the embedded
    model's layer-5 covariance differs from the float32 one by 0.4% of its
    norm (1.0% in bfloat16 arithmetic), against 51% between the two halves of
    its corpus (docs/performance.md).  A float16 load of a float32 checkpoint
    can round differently, and then computes its own.
    """
    known = getattr(model, "keditlab_fingerprint", None)
    if isinstance(known, str):
        return known
    samples = {name: weight_sample(weight) for name, weight in model.named_parameters()}
    fingerprint = fingerprint_of(model.config, samples)
    try:
        model.keditlab_fingerprint = fingerprint
    except AttributeError:  # a wrapper that refuses attributes: computed again next time
        pass
    return fingerprint


def _slug_of(config: Any) -> str:
    name = Path(str(getattr(config, "_name_or_path", "") or config.model_type)).name
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name) or "model"


#: Each weight contributes its first this many entries (in storage order) to the fingerprint.
FINGERPRINT_ELEMENTS = 1024


def weight_sample(weight: torch.Tensor) -> torch.Tensor:
    """The part of one weight the fingerprint reads: its first :data:`FINGERPRINT_ELEMENTS` entries, flattened."""
    return weight.detach().reshape(-1)[:FINGERPRINT_ELEMENTS]


def fingerprint_of(config: Any, samples: dict[str, torch.Tensor]) -> str:
    """:func:`model_fingerprint` from the config and ``{parameter name: weight_sample(weight)}`` alone.

    ``keditlab plan`` reads those samples from the checkpoint files (no model
    loaded, :mod:`keditlab.runner.plan`) to tell whether a run will find its
    statistics cached; the shapes are hashed through the config.
    """
    settings = json.loads(config.to_json_string(use_diff=False))
    for key in ("dtype", "torch_dtype"):
        settings.pop(key, None)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for name in sorted(samples):
        digest.update(name.encode())
        digest.update(samples[name].to(torch.bfloat16).float().cpu().numpy().tobytes())
    return f"{_slug_of(config)}-{digest.hexdigest()[:12]}"


def statistics_path(fingerprint: str, layer: int, corpus: str, num_tokens: int, max_length: int, seed: int,
                    experts: bool = False) -> Path:
    """Where the key statistics of one layer are cached: the one definition of the cache key.

    ``experts``: the layer is a mixture-of-experts block, whose statistics are one matrix per expert.
    """
    key = f"{fingerprint}/layer{layer}-{'experts-' if experts else ''}{_slug(corpus)}-{num_tokens}tok-len{max_length}-seed{seed}"
    return cache_dir() / "stats" / f"{key}.pt"


def corpus_path(fingerprint: str, corpus: str, num_tokens: int, max_length: int, seed: int) -> Path:
    """Where the tokenized corpus the statistics are read from is cached (beside them, shared by the layers)."""
    return cache_dir() / "stats" / fingerprint / f"corpus-{_slug(corpus)}-{num_tokens}tok-len{max_length}-seed{seed}.pt"


def layer_covariance(
    model: Any,
    tokenizer: Any,
    module_name: str,
    layer: int,
    corpus: str = "model-samples",
    num_tokens: int = 15360,
    max_length: int = 64,
    seed: int = 0,
    batch_size: int = 16,
) -> CovarianceStats:
    """``E[k kᵀ]`` of the inputs to ``module_name`` (the MLP output projection at ``layer``)."""
    return layer_covariances(model, tokenizer, {layer: module_name}, corpus, num_tokens, max_length, seed, batch_size)[layer]


def layer_covariances(
    model: Any,
    tokenizer: Any,
    modules: dict[int, Any],
    corpus: str = "model-samples",
    num_tokens: int = 15360,
    max_length: int = 64,
    seed: int = 0,
    batch_size: int = 16,
) -> dict[int, CovarianceStats]:
    """:func:`layer_covariance` for several layers (``{layer: module name}``), in one pass over the corpus.

    A value may also be a key site (``profile.key_site(model, layer)``,
    :class:`~keditlab.models.experts.ExpertSite`): an MoE layer's statistics
    are then one second moment per expert, over the tokens routed to it,
    gate-weighted and divided by all the tokens read (``(E, size, size)``).

    Each layer is cached in its own file under the same key as a single-layer
    call, so a layer already on disk is loaded and not recomputed, and a
    later single-layer call finds what this one wrote.  The layers not on disk
    are read together: one forward per corpus batch, with a hook on each of
    their modules, stopped after the last of them.  MEMIT's five layers cost
    one pass instead of five.
    """
    fingerprint = model_fingerprint(model)
    paths = {}
    for layer in modules:
        experts = not isinstance(modules[layer], str) and modules[layer].moe
        paths[layer] = statistics_path(fingerprint, layer, corpus, num_tokens, max_length, seed, experts=experts)
    found = {layer: stats for layer, path in paths.items() if (stats := _cached_stats(layer, path)) is not None}
    if len(found) == len(paths):
        return {layer: found[layer] for layer in modules}
    # One process computes a statistic while the others wait for it (pytest-xdist workers, two notebooks):
    # after the lock, what another process wrote meanwhile is read, not recomputed.
    lock = corpus_path(fingerprint, corpus, num_tokens, max_length, seed).with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):
        found.update({layer: stats for layer, path in paths.items()
                      if layer not in found and (stats := _cached_stats(layer, path)) is not None})
        missing = {layer: path for layer, path in paths.items() if layer not in found}
        if missing:
            found.update(_compute(model, tokenizer, modules, missing, fingerprint, corpus, num_tokens, max_length,
                                  seed, batch_size))
    return {layer: found[layer] for layer in modules}


def _cached_stats(layer: int, path: Path) -> CovarianceStats | None:
    """The statistics cached at ``path``, or ``None`` when absent or damaged (cut short, empty, not finite):
    a damaged file is recomputed, never used and never fatal."""
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        matrix = saved["matrix"]
        if not bool(torch.isfinite(matrix).all()) or int(saved["num_tokens"]) <= 0:
            raise ValueError("not a finite matrix over at least one token")
        return CovarianceStats(layer, matrix, int(saved["num_tokens"]), saved["corpus"], str(path), True,
                               split_half_difference=saved.get("split_half_difference"))
    except Exception as exc:  # noqa: BLE001 - any damage (a truncated zip, a missing key, NaN) means: compute again
        print(f"keditlab: the cached statistics {path} are damaged ({type(exc).__name__}: {exc}); computing them again",
              file=sys.stderr)
        return None


def _compute(model: Any, tokenizer: Any, modules: dict[int, Any], missing: dict[int, Path], fingerprint: str,
             corpus: str, num_tokens: int, max_length: int, seed: int, batch_size: int) -> dict[int, CovarianceStats]:
    """The statistics of the ``missing`` layers, in one pass over the corpus, each written to its cache file."""
    found: dict[int, CovarianceStats] = {}
    text = _cached_corpus(corpus_path(fingerprint, corpus, num_tokens, max_length, seed),
                          corpus, model, tokenizer, num_tokens, max_length, seed)
    named = dict(model.named_modules())
    moments = _second_moments(model, {layer: _reader(named, modules[layer]) for layer in missing}, text.sequences, batch_size)
    for layer, path in missing.items():
        matrix, count, split = moments[layer]
        atomic_save({"matrix": matrix, "num_tokens": count, "corpus": text.description, "split_half_difference": split}, path)
        module = modules[layer] if isinstance(modules[layer], str) else modules[layer].parameter
        path.with_suffix(".json").write_text(json.dumps({"corpus": text.description, "num_tokens": count, "module": module,
                                                         "split_half_difference": split}))
        found[layer] = CovarianceStats(layer, matrix, count, text.description, str(path), False, split_half_difference=split)
    return found


def _cached_corpus(path: Path, corpus: str, model: Any, tokenizer: Any, num_tokens: int, max_length: int, seed: int) -> Corpus:
    """The tokenized corpus, kept beside the statistics so other layers reuse it."""
    if path.exists():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved["sequences"]:
                return Corpus(saved["description"], saved["sequences"])
        except Exception as exc:  # noqa: BLE001 - damaged: read the corpus again
            print(f"keditlab: the cached corpus {path} is damaged ({type(exc).__name__}); reading it again", file=sys.stderr)
    text = load_corpus(corpus, model, tokenizer, num_tokens, max_length, seed)
    atomic_save({"description": text.description, "sequences": text.sequences}, path)
    return text


def _dense_sums(inputs: tuple[torch.Tensor, ...], mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    keys = inputs[0][mask].double()  # (real tokens, mlp_size); padding dropped
    return keys.T @ keys, keys.shape[0]


def _reader(named: dict[str, torch.nn.Module], where: Any) -> tuple[torch.nn.Module, Any]:
    """``(module to hook, sums(inputs, mask))`` for a module name (its input is the key) or a key site."""
    if isinstance(where, str):
        return named[where], _dense_sums
    return where.key_module, where.second_moment_sums


def _second_moments(model: Any, modules: dict[int, tuple[torch.nn.Module, Any]], sequences: list[list[int]],
                    batch_size: int) -> dict[int, tuple[torch.Tensor, int, float]]:
    """Per layer, ``(E[k kᵀ], tokens, split-half difference)`` of the inputs to its module over ``sequences``.

    One forward per batch reads every module; it stops once the last of them
    has been read (the layers above are not needed).  The sums of alternate
    batches are kept apart, so the estimate's own convergence is measured for
    free: ``‖C_even − C_odd‖ / ‖C‖`` (Frobenius).  It shrinks like 1/√tokens;
    it is recorded with the statistics.
    """
    from tqdm.auto import tqdm

    device = device_of(model)
    halves: dict[int, list[torch.Tensor | None]] = {layer: [None, None] for layer in modules}
    counts = {layer: [0, 0] for layer in modules}
    current: dict[str, Any] = {}

    def reader(layer: int):
        summed = modules[layer][1]

        def grab(_module: Any, inputs: tuple[torch.Tensor, ...]) -> None:
            gram, count = summed(inputs, current["mask"])
            half, sums = current["half"], halves[layer]
            sums[half] = gram if sums[half] is None else sums[half] + gram
            counts[layer][half] += count
            current["seen"].add(layer)
            if len(current["seen"]) == len(modules):
                raise StopForward
        return grab

    readers = [(module, reader(layer)) for layer, (module, _) in modules.items()]
    label = "Key statistics" if len(modules) == 1 else f"Key statistics, layers {', '.join(map(str, sorted(modules)))}"
    with tqdm(total=sum(len(s) for s in sequences), desc=label, unit="tok") as progress:
        for index, start in enumerate(range(0, len(sequences), batch_size)):
            batch = sequences[start : start + batch_size]
            ids, mask = right_padded(batch, 0, device)  # padded positions are dropped from the keys
            current.update(mask=mask.bool(), half=index % 2, seen=set())
            with hooks(pre=readers), torch.inference_mode():
                model(input_ids=ids, attention_mask=mask)
            progress.update(int(mask.sum()))
    results = {}
    for layer in modules:
        (even, odd), (even_count, odd_count) = halves[layer], counts[layer]
        if even is None:
            raise ValueError("the corpus holds no tokens")
        count = even_count + odd_count
        matrix = (even if odd is None else even + odd) / count
        split = float("nan") if odd is None else float((even / even_count - odd / odd_count).norm() / matrix.norm())
        results[layer] = (matrix.float().cpu(), count, round(split, 4))
    return results


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then renamed over it: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _slug(text: str) -> str:
    short = "".join(c if c.isalnum() or c in "-_" else "-" for c in text)[:40]
    return f"{short}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


#: ``stats.samples: auto`` reads this many tokens per unit of key width.  A
#: second moment of d-dimensional keys is well estimated from about 10·d tokens;
#: measured on the embedded model (d = 1536) against 20,000 and 40,000 tokens
#: in docs/methods.md.
TOKENS_PER_KEY_DIMENSION = 10


def resolve_num_tokens(samples: int | str, key_width: int) -> int:
    """``stats.samples`` as a token count: ``"auto"`` is ten times the key width."""
    if samples == "auto":
        return TOKENS_PER_KEY_DIMENSION * key_width
    if isinstance(samples, int) and samples > 0:
        return samples
    raise ValueError(f"stats.samples must be a positive number of tokens or 'auto', not {samples!r}")


class CovarianceProvider:
    """``provider(layer)`` → ``E[k kᵀ]`` at that layer, computed (or loaded) once per layer.

    This is what a method receives as ``EditContext.covariance``.  ``described``
    lists where each matrix came from, for the run manifest.
    """

    def __init__(self, model: Any, tokenizer: Any, profile: Any, corpus: str = "model-samples",
                 num_tokens: int | str = "auto", max_length: int = 64, seed: int = 0) -> None:
        self.model, self.tokenizer, self.profile = model, tokenizer, profile
        self.corpus, self.max_length, self.seed = corpus, max_length, seed
        # An MoE expert sees about top_k / num_experts of the tokens: read enough for each to see 10·width on average.
        share = profile.num_experts / profile.experts_per_token if getattr(profile, "is_moe", False) else 1
        self.num_tokens = resolve_num_tokens(num_tokens, int(profile.mlp_size * share))
        self.stats: dict[int, CovarianceStats] = {}
        self.null_spaces: dict[tuple[int, float], Any] = {}
        self.seconds = 0.0  # time spent computing or loading matrices: one-off, not per edit

    def __call__(self, layer: int) -> torch.Tensor:
        return self.for_layers([layer])[layer]

    def for_layers(self, layers: list[int]) -> dict[int, torch.Tensor]:
        """``E[k kᵀ]`` at each of ``layers``; those not yet known are computed (or loaded) together, in one corpus pass.

        A multi-layer method (MEMIT and its successors) asks for all its
        layers at once, so their statistics cost one pass over the corpus.
        The time is shared out equally among the layers it produced.
        """
        wanted = [layer for layer in dict.fromkeys(layers) if layer not in self.stats]
        if wanted:
            start = time.perf_counter()
            found = layer_covariances(
                self.model, self.tokenizer, {layer: self._where(layer) for layer in wanted}, corpus=self.corpus,
                num_tokens=self.num_tokens, max_length=self.max_length, seed=self.seed,
            )
            seconds = time.perf_counter() - start
            for layer, stats in found.items():
                stats.seconds = round(seconds / len(found), 3)
                self.stats[layer] = stats
            self.seconds += round(seconds, 3)
        return {layer: self.stats[layer].matrix for layer in layers}

    def _where(self, layer: int) -> Any:
        """A dense layer's projection by name (as before); an MoE layer's key site (per-expert statistics)."""
        if getattr(self.profile, "is_moe", False):
            return self.profile.key_site(self.model, layer)
        return self.profile.mlp_out_module(layer)

    def null_space(self, layer: int, energy: float) -> torch.Tensor:
        """AlphaEdit's projector at ``layer`` (:mod:`keditlab.stats.nullspace`), computed once and cached beside ``C``."""
        from keditlab.stats.nullspace import null_space

        if (layer, energy) not in self.null_spaces:
            self(layer)
            start = time.perf_counter()
            self.null_spaces[(layer, energy)] = null_space(self.stats[layer], energy)
            self.seconds += time.perf_counter() - start
        return self.null_spaces[(layer, energy)].projector

    @property
    def described(self) -> list[dict[str, Any]]:
        described = [stats.describe() for stats in self.stats.values()]
        for (layer, _energy), space in self.null_spaces.items():
            described.append({"kind": "null_space", **space.describe()})
        return described
