"""``keditlab plan SPEC``: what a spec will change and cost, from the model's configuration alone.

No weight is loaded.  The model is built on torch's ``meta`` device from its
``config.json`` (a local folder, keditlab's cache of an embedded model, or
the Hugging Face cache, offline), its :class:`~keditlab.models.ModelProfile`
is derived from that module tree by :func:`~keditlab.models.derive_profile`
(by structure, as for a real run), and each method's settings are resolved
by the method itself: its config dataclass, its default-layer rule
(:mod:`keditlab.methods.layers`) and :meth:`EditMethod.plan
<keditlab.methods.base.EditMethod.plan>`, which says which values it changes,
trains, copies and holds.  ``layer: auto`` needs causal tracing, a real
forward pass: the plan says so and is made for the default layer instead.

**One-off statistics.**  For the layers whose key covariance a method asks
for: the token count (``stats.samples``; ``auto`` is ten per unit of key
width, :func:`keditlab.stats.covariance.resolve_num_tokens`), whether each is
already in the cache (the cache key needs the model's fingerprint, which
reads the first entries of every weight from the checkpoint's safetensors
files; when they are not at hand, "unknown"), and a time class from a cost model of
floating-point operations::

    pass      = 2 × (parameters of the blocks up to the last statistics layer) × tokens
    sampling  = 2 × (all parameters) × tokens      (stats.corpus: model-samples, when the corpus is not cached)
    seconds   = (pass + sampling) / throughput

with the throughput :data:`CPU_FLOPS` measured on a 2-core CPU (README: 71 s
for the embedded model's 15,360 tokens) and :data:`GPU_FLOPS` an assumption
(a T4-class GPU reaches a few TFLOP/s on this mixed sampling work).  Classes:
under a minute "seconds", under ten "minutes", under an hour "tens of
minutes", else "hours".

**Peak memory** on the spec's device, in bytes, with ``B`` the bytes of a
value of the model's dtype (4, or 2 for float16/bfloat16), ``h`` the hidden
size, ``m`` the MLP width, ``V`` the vocabulary, ``L`` the number of layers::

    peak = runtime + weights + copies + held + max(evaluation, statistics, edit)

    runtime     CPU: the process with torch and transformers (RUNTIME_CPU) and the tokenizer
                (TOKENIZER_FIXED + V × TOKENIZER_PER_ENTRY), both measured;
                CUDA: the CUDA context (CUDA_CONTEXT, an assumption: it is not in torch's accounting)
    weights     parameters × B (tied embeddings once)
    copies      the values EditHandle copies to restore them (changed weights) × B
    held        values a method keeps beside the model (side memory, anchors) × 4
    evaluation  rows × tokens × V × B: the teacher-forced logits of one evaluation batch
                (rows = evaluate.batch_size; tokens = longest probe + answer + IKE's context)
    statistics  only when a statistics layer is not cached: 2 float64 m × m sums per layer (the
                split halves) + the float32 result
    edit        trained × 3 × B (gradient and Adam's two moments)
                + rows × tokens × (L − backward_from) × (4h + 3m) × B (activations kept for the
                  backward pass; frozen weights keep no input)
                + rows × answer tokens × V × 12 (float32 logits at the answer, log-softmax, gradient)
                + (solved_at_once + 2) × m² × 8 (ridged float64 covariances and the solve's system and LU)
                + AlphaEdit: one float64 m × m projector per layer
                + on a CPU, the float32 covariances the statistics provider holds (on a GPU they stay in host RAM)

``rows`` is the method's rows per edit (ROME: its contexts plus the KL
prompt) times the edits of one call (``run.batch_size`` in batch and
sequential runs), at most :data:`~keditlab.methods.keyvalue.MAX_PASS_TOKENS`
padded tokens a pass for the locate-then-edit methods.  Token counts are
estimated without a tokenizer, a token for every :data:`CHARS_PER_TOKEN`
characters.  docs/plan.md compares the estimates with measured peaks.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keditlab.models.embedded import (
    SMOLLM2, cache_root, embedded_cache_dir, embedded_model, find_embedded_gguf, is_embedded_name, is_valid_cache,
)
from keditlab.models.errors import ModelLoadError, ProfileError, UnknownArchitectureError
from keditlab.models.profile import ModelProfile
from keditlab.spec import Spec

if TYPE_CHECKING:   # torch and the methods load inside plan_spec, so a bad size or spec fails at once
    from keditlab.methods import MethodPlan

GiB = 2**30
MiB = 2**20

#: Peak resident memory of a process that has imported torch, transformers and keditlab's runner: 268 MiB,
#: measured on the CPU of docs/plan.md (torch 2.13, transformers 5.24).
RUNTIME_CPU = 268 * MiB
#: What loading the tokenizer adds, which grows with the vocabulary: measured 113 MiB for SmolLM2's 49,152
#: entries and 463 MiB for Gemma 3's 262,144; the line through the two.
TOKENIZER_FIXED = 32 * MiB
TOKENIZER_PER_ENTRY = 1723
#: GPU memory the CUDA context takes before any tensor (not counted by torch.cuda.max_memory_allocated): an assumption.
CUDA_CONTEXT = 512 * MiB
#: Floating-point operations per second of the statistics pass and sampling: measured on a 2-core CPU (README).
CPU_FLOPS = 6.7e10
#: The same on a GPU: an assumption (a T4 reaches a few TFLOP/s on this mixed sampling and reading).
GPU_FLOPS = 2e12
#: Characters per token, to estimate prompt lengths without a tokenizer (English text, BPE vocabularies).
CHARS_PER_TOKEN = 4
#: Tokens of each context prefix ROME's family puts before a prompt (ten sampled tokens and ". ").
PREFIX_TOKENS = 12
#: Tokens per sequence of the statistics pass (stats.max_length is the cap) and sequences per batch.
STATS_BATCH = 16

_UNITS = {"b": 1, "kb": 10**3, "kib": 2**10, "mb": 10**6, "mib": 2**20, "gb": 10**9, "gib": 2**30, "tb": 10**12, "tib": 2**40}


class PlanError(ValueError):
    """The plan cannot be made: the model's configuration is not at hand, or a setting is malformed."""


def parse_memory(text: str) -> int:
    """``"16GiB"``, ``"16 GB"``, ``"15360MiB"`` → bytes (GB = 10⁹, GiB = 2³⁰); anything else is a :class:`PlanError`."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B|B)\s*", str(text), flags=re.IGNORECASE)
    if not match:
        raise PlanError(f"--gpu-memory {text!r} is not a memory size. Fix: write a number and a unit, e.g. 16GiB, 16GB or 15360MiB.")
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if value <= 0:
        raise PlanError(f"--gpu-memory {text!r} is not a positive size. Fix: write e.g. 16GiB.")
    return int(value)


def size_text(count: float) -> str:
    """Bytes as GiB or MiB, one decimal place."""
    return f"{count / GiB:.1f} GiB" if count >= GiB else f"{count / MiB:.0f} MiB"


def count_text(count: int) -> str:
    """1,557,611,200 → ``1.56B``; 884,736 → ``885K``."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= size:
            return f"{count / size:.3g}{suffix}" if count < 100 * size else f"{count / size:.0f}{suffix}"
    return str(count)


@dataclass(frozen=True)
class StatisticsPlan:
    """The key statistics a method asks for: which layers, how many tokens, cached or not, how long."""

    layers: tuple[int, ...]
    tokens: int
    corpus: str
    width: int                          # the key width m: each matrix is m × m
    cached: tuple[int, ...] | None      # the layers found in the cache; None: cannot tell (no checkpoint file here)
    seconds: float                      # estimated for the layers not cached (0 when all are)
    time_class: str
    null_space: bool = False

    @property
    def missing(self) -> tuple[int, ...]:
        return self.layers if self.cached is None else tuple(l for l in self.layers if l not in self.cached)

    def describe(self) -> str:
        layers = _layer_text(self.layers)
        where = ("cache unknown" if self.cached is None else "cached" if not self.missing
                 else f"to compute: {_layer_text(self.missing)}" if self.cached else "not cached")
        cost = "" if self.cached is not None and not self.missing else f", {self.time_class}"
        extra = " + null space" if self.null_space else ""
        return f"C at {layers}{extra}: {self.tokens:,} tokens, {where}{cost}"


@dataclass(frozen=True)
class MethodEstimate:
    """One method of the spec, planned: its settings, what it changes, its statistics and its peak memory."""

    label: str
    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    layers: tuple[int, ...] = ()
    auto: str | None = None               # what `layer: auto` will do, when the spec asks for it
    changed: tuple[tuple[str, int], ...] = ()
    changed_values: int = 0
    changes_weights: bool = True
    statistics: StatisticsPlan | None = None
    memory: dict[str, int] = field(default_factory=dict)   # the parts of the peak, bytes
    peak_bytes: int = 0
    fits: bool | None = None
    #: On a GPU: how many GPUs of the given memory the peak fills (1 when it fits); None on a CPU or when unknown.
    gpus: int | None = None
    problem: str | None = None            # why the method cannot be planned (then the peak is a lower bound)
    notes: tuple[str, ...] = ()

    def changes_text(self) -> str:
        if self.problem:
            return "—"
        if not self.changed:
            return "nothing (prompt only)"
        what = "weights" if self.changes_weights else "beside the model"
        return f"{count_text(self.changed_values)} ({len(self.changed)} × {what})" if len(self.changed) > 1 else \
            f"{count_text(self.changed_values)} ({what})"


@dataclass(frozen=True)
class Plan:
    """``keditlab plan``'s answer for a whole spec (``print(plan)`` is the table the command prints)."""

    spec: str
    model: str
    source: str
    architecture: str
    dtype: str
    device: str
    parameters: int
    weights_bytes: int
    num_layers: int | None
    hidden_size: int | None
    mlp_size: int | None
    vocab_size: int | None
    profile: ModelProfile | None
    profile_problem: str | None
    capacity_bytes: int | None
    capacity_text: str
    methods: tuple[MethodEstimate, ...]
    seconds: float = 0.0

    def method(self, label: str) -> MethodEstimate:
        for estimate in self.methods:
            if estimate.label == label:
                return estimate
        raise KeyError(f"no method {label!r} in this plan; it has {', '.join(m.label for m in self.methods)}")

    def __str__(self) -> str:
        return render_plan(self)


# -- the model's configuration, never its weights ------------------------------------------------

def model_config(name: str, profile_hint: Any = None) -> tuple[Any, Path | None, str]:
    """``(config, folder, where)`` for a model name: the config of keditlab's cached copy, a local folder or the HF cache.

    ``folder`` is where the checkpoint's files are (None for a hub id); nothing but ``config.json`` is read.
    """
    from transformers import AutoConfig

    if is_embedded_name(name):
        embedded = embedded_model(name)
        folder = embedded_cache_dir(embedded.name)
        if is_valid_cache(folder, None) and (folder / "config.json").is_file():
            return AutoConfig.from_pretrained(folder, local_files_only=True), folder, str(folder / "config.json")
        gguf = find_embedded_gguf() if embedded is SMOLLM2 else None   # the others' GGUF is assembled when converted
        if gguf is None:
            raise PlanError(f"the embedded model {name!r} is not converted in {folder} yet. Fix: {embedded.install}, "
                            f"then `keditlab run` a spec naming it once (it is converted into the cache).")
        try:
            config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        except Exception as exc:  # noqa: BLE001 - the gguf package missing, a damaged file
            raise PlanError(f"could not read the GGUF header of {gguf}: {exc}. Fix: run `keditlab run` once to convert it.") from None
        return config, None, f"{gguf} (GGUF header)"
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise PlanError(f"the folder {name!r} holds no config.json. Fix: give the folder of a transformers checkpoint.")
        return AutoConfig.from_pretrained(path, local_files_only=True), path.resolve(), str(path / "config.json")
    cached = cache_root() / "models" / name
    if "/" not in name and (cached / "config.json").is_file():   # another model keditlab converted into its cache
        return AutoConfig.from_pretrained(cached, local_files_only=True), cached, str(cached / "config.json")
    try:
        config = AutoConfig.from_pretrained(name, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached, not a valid id: one message says both
        raise PlanError(
            f"no configuration for model {name!r}: it is not a local folder with config.json, and its config.json is not in "
            "the Hugging Face cache. Fix: give a folder, or fetch the config once where the hub is reachable "
            f"(huggingface-cli download {name} config.json)."
        ) from None
    return config, None, f"{name} (Hugging Face cache)"


def _text_config(config: Any) -> Any:
    """The language model's part of a multimodal config (``text_config``), else the config itself."""
    inner = getattr(config, "text_config", None)
    return inner if inner is not None and getattr(config, "num_hidden_layers", None) is None else config


def meta_model(config: Any, dtype: Any) -> Any:
    """The model built on the meta device: the module tree and every parameter's shape, no storage."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def _checkpoint_samples(folder: Path | None, repo: str, parameters: list[str]) -> dict[str, Any] | None:
    """``{name: weight_sample(weight)}`` for each of ``parameters``, read from the checkpoint's safetensors files
    without loading them whole (only the first rows of each tensor); None when any is not at hand."""
    try:
        from safetensors import safe_open
    except ImportError:
        return None
    from keditlab.stats.covariance import FINGERPRINT_ELEMENTS, weight_sample

    def local(filename: str) -> str | None:
        if folder is not None:
            candidate = folder / filename
            return str(candidate) if candidate.is_file() else None
        try:
            from huggingface_hub import try_to_load_from_cache

            hit = try_to_load_from_cache(repo, filename)
        except Exception:  # noqa: BLE001
            return None
        return hit if isinstance(hit, str) else None

    index = local("model.safetensors.index.json")
    try:
        files = json.loads(Path(index).read_text(encoding="utf-8"))["weight_map"] if index else {}
        files = {name: files.get(name) if index else "model.safetensors" for name in parameters}
        if None in files.values():   # a parameter stored under another name (a converted checkpoint): unknown
            return None
        samples = {}
        for filename in sorted(set(files.values())):
            path = local(filename)
            if path is None:
                return None
            with safe_open(path, "pt") as handle:
                for name in (n for n in parameters if files[n] == filename):
                    part = handle.get_slice(name)
                    shape = part.get_shape()
                    row = math.prod(shape[1:]) if len(shape) > 1 else 1
                    samples[name] = weight_sample(part[: math.ceil(FINGERPRINT_ELEMENTS / max(row, 1))])
        return samples
    except Exception:  # noqa: BLE001 - another layout, a missing tensor, a damaged file: the cache state is "unknown"
        return None


def _fingerprint(model: Any, folder: Path | None, repo: str) -> str | None:
    """The statistics cache's model fingerprint (:func:`keditlab.stats.fingerprint_of`), or None when it cannot be read."""
    from keditlab.stats.covariance import fingerprint_of

    samples = _checkpoint_samples(folder, repo, [name for name, _ in model.named_parameters()])
    return None if samples is None else fingerprint_of(model.config, samples)


# -- estimates ---------------------------------------------------------------------------------

def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


@dataclass(frozen=True)
class _Lengths:
    """Token counts of the spec's edits, estimated from their characters."""

    prompt: int
    answer: int
    probe: int          # the longest probe sequence, prompt + answer
    probes: int         # how many probe sequences there are in all


def _lengths(spec: Spec) -> _Lengths:
    cases = list(spec.edits) or []
    prompts = [c.prompt for c in cases] or ["The Eiffel Tower is located in the city of"]
    answers = [c.target for c in cases] + [c.ground_truth for c in cases if c.ground_truth] or ["Rome"]
    probes: list[int] = []
    for case in cases:
        probes += [_tokens(case.prompt) + _tokens(case.target)] * (2 if case.ground_truth else 1)
        probes += [_tokens(text) + _tokens(case.target) for text in case.rephrase]
        probes += [_tokens(p.prompt) + _tokens(p.answer) for p in (*case.locality, *case.portability)]
    probe = max(probes, default=_tokens(prompts[0]) + _tokens(answers[0]))
    return _Lengths(max(map(_tokens, prompts)), max(map(_tokens, answers)), probe, max(1, len(probes)))


def time_class(seconds: float) -> str:
    if seconds < 60:
        return "seconds"
    if seconds < 600:
        return "minutes"
    if seconds < 3600:
        return "tens of minutes"
    return "hours"


def _statistics(plan: MethodPlan, spec: Spec, profile: ModelProfile, parameters: int, block_parameters: int,
                fingerprint: str | None, on_gpu: bool) -> StatisticsPlan | None:
    from keditlab.stats.corpus import MODEL_SAMPLES
    from keditlab.stats.covariance import corpus_path, resolve_num_tokens, statistics_path

    if not plan.statistics:
        return None
    stats = spec.stats
    tokens = resolve_num_tokens(stats.samples, profile.mlp_size)
    cached: tuple[int, ...] | None = None
    corpus_cached = False
    if fingerprint is not None:
        cached = tuple(layer for layer in plan.statistics
                       if statistics_path(fingerprint, layer, stats.corpus, tokens, stats.max_length, spec.run.seed,
                                          experts=bool(getattr(profile, "is_moe", False))).exists())
        corpus_cached = corpus_path(fingerprint, stats.corpus, tokens, stats.max_length, spec.run.seed).exists()
    missing = plan.statistics if cached is None else [l for l in plan.statistics if l not in cached]
    seconds = 0.0
    if missing:
        flops = 2 * block_parameters * (max(missing) + 1) / profile.num_layers * tokens
        if stats.corpus == MODEL_SAMPLES and not corpus_cached:
            flops += 2 * parameters * tokens
        seconds = flops / (GPU_FLOPS if on_gpu else CPU_FLOPS)
    return StatisticsPlan(tuple(plan.statistics), tokens, stats.corpus, profile.mlp_size, cached, round(seconds, 1),
                          time_class(seconds), plan.null_space)


def _memory(plan: MethodPlan | None, statistics: StatisticsPlan | None, spec: Spec, lengths: _Lengths, dims: dict[str, int],
            value_bytes: int, weights: int, on_gpu: bool) -> dict[str, int]:
    """The parts of the peak (bytes), as the module docstring writes them."""
    from keditlab.methods.keyvalue import MAX_PASS_TOKENS

    h, m, vocab, layers = dims["hidden"], dims["mlp"], dims["vocab"], dims["layers"]
    extra = plan.extra_tokens if plan else 0
    eval_rows = min(spec.evaluate.batch_size, lengths.probes)
    parts = {
        "runtime": CUDA_CONTEXT if on_gpu else RUNTIME_CPU + TOKENIZER_FIXED + vocab * TOKENIZER_PER_ENTRY,
        "weights": weights,
        "evaluation": eval_rows * (lengths.probe + extra) * vocab * value_bytes,
    }
    if plan is None:
        return parts
    edits = 1 if spec.run.mode == "single" else spec.run.batch_size
    parts["copies"] = plan.copied_values * value_bytes
    parts["held"] = plan.held * 4
    edit = plan.trained * 3 * value_bytes
    if plan.backward_from is not None:
        prefix = PREFIX_TOKENS if plan.statistics else 0
        tokens = prefix + lengths.prompt + lengths.answer
        rows = plan.rows_per_edit * edits
        if plan.statistics:   # the locate-then-edit passes hold at most MAX_PASS_TOKENS padded tokens
            rows = min(rows, max(1, MAX_PASS_TOKENS // tokens))
        edit += rows * tokens * (layers - plan.backward_from) * (4 * h + 3 * m) * value_bytes
        edit += rows * lengths.answer * vocab * 12
    host = 0
    if statistics is not None:
        square = statistics.width ** 2
        edit += (plan.solved_at_once + 2) * square * 8
        if plan.null_space:
            edit += len(statistics.layers) * square * 8
        host = len(statistics.layers) * square * 4
        if not on_gpu:
            edit += host
        missing = statistics.missing
        if missing:
            parts["statistics"] = 2 * len(missing) * square * 8 + (0 if on_gpu else host)
    parts["edit"] = edit
    return parts


def _peak(parts: dict[str, int]) -> int:
    fixed = sum(parts.get(k, 0) for k in ("runtime", "weights", "copies", "held"))
    return fixed + max(parts.get(k, 0) for k in ("evaluation", "statistics", "edit"))


def _capacity(device: str, gpu_memory: int | None) -> tuple[int | None, str]:
    if gpu_memory is not None:
        return gpu_memory, f"GPU memory given: {size_text(gpu_memory)}"
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            index = torch.device(device).index or 0
            total = torch.cuda.get_device_properties(index).total_memory
            return total, f"{torch.cuda.get_device_name(index)}: {size_text(total)}"
        return None, "no CUDA GPU on this machine (give --gpu-memory, e.g. 16GiB for Colab's T4)"
    available = _available_ram()
    return available, f"CPU: {size_text(available)} available" if available else "CPU: available memory unknown"


def _available_ram() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _layer_text(layers: tuple[int, ...] | list[int]) -> str:
    layers = list(layers)
    if not layers:
        return "—"
    if len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}–{layers[-1]}"
    return ", ".join(map(str, layers))


def plan_spec(spec: Spec, gpu_memory: int | str | None = None) -> Plan:
    """Plan every method of ``spec`` without loading weights; see the module docstring for what is estimated and how."""
    import torch

    from keditlab.methods import MethodConfigError, get_method
    from keditlab.models.derive import derive_profile
    from keditlab.models.loader import resolve_dtype
    from keditlab.models.peek import layers_from_config_dict

    started = time.perf_counter()
    if isinstance(gpu_memory, str):
        gpu_memory = parse_memory(gpu_memory)
    dtype = resolve_dtype(spec.model.dtype)
    value_bytes = torch.empty((), dtype=dtype).element_size()
    config, folder, where = model_config(spec.model.name)
    config = _text_config(config)
    config._name_or_path = str(folder) if folder is not None else spec.model.name   # as the loader leaves it
    config.dtype = dtype
    try:
        model = meta_model(config, dtype)
    except Exception as exc:  # noqa: BLE001 - an architecture this transformers does not know
        raise PlanError(f"transformers cannot build a {getattr(config, 'model_type', '?')!r} model from {where}: {exc}") from None
    unbuilt = [name for name, p in model.named_parameters() if p.device.type != "meta"]
    assert not unbuilt, f"weights were materialised: {unbuilt[:3]}"
    parameters = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings()
    tied = head is None or head.weight is model.get_input_embeddings().weight
    block_parameters = parameters - embedding - (0 if tied else head.weight.numel())

    profile, profile_problem = None, None
    try:
        profile = derive_profile(model, spec.model.profile)
        profile_problem = None if spec.model.profile else _experts_mismatch(config, profile)
    except (UnknownArchitectureError, ProfileError) as exc:
        profile_problem = str(exc).splitlines()[0]
    if profile_problem:
        profile = None
    num_layers = profile.num_layers if profile else layers_from_config_dict(config.to_dict())
    hidden = profile.hidden_size if profile else getattr(config, "hidden_size", None)
    mlp = profile.mlp_size if profile else None
    vocab = int(getattr(config, "vocab_size", 0) or model.get_input_embeddings().weight.shape[0])

    device = "cuda" if gpu_memory is not None else spec.run.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    on_gpu = device.startswith("cuda")
    capacity, capacity_text = _capacity(device, gpu_memory)
    fingerprint = _fingerprint(model, folder, spec.model.name) if profile else None
    lengths = _lengths(spec)
    weights = parameters * value_bytes
    dims = {"hidden": hidden or 0, "mlp": mlp or 0, "vocab": vocab, "layers": num_layers or 0}

    estimates = []
    for method_spec in spec.methods:
        method = get_method(method_spec.name)
        params = dict(method_spec.params)
        auto = None
        for key in ("layer", "layers"):
            if params.get(key) == "auto":
                params.pop(key)
                auto = (f"{key}: auto is found by causal tracing when the spec runs (forward passes over "
                        f"{_auto_facts()} known facts, cached per model); planned here at the default")
        problem, plan, config_dict, notes = None, None, {}, ()
        try:
            method_config = method.config_class.from_params(params)
            config_dict = method_config.to_dict()
            if profile is None and _edits_layers(method_config):
                raise MethodConfigError(f"keditlab could not derive this model's structure ({profile_problem}); "
                                        "describe it under model.profile in the spec")
            if profile is not None:
                method_config.check_layers(profile.num_layers)
            plan = method.plan(profile, method_config, model)
        except (MethodConfigError, TypeError, ValueError) as exc:
            problem = str(exc)
        statistics = _statistics(plan, spec, profile, parameters, block_parameters, fingerprint, on_gpu) if plan else None
        parts = _memory(plan, statistics, spec, lengths, dims, value_bytes, weights, on_gpu)
        peak = _peak(parts)
        if plan is not None:
            notes = plan.notes
            for key in ("layer", "layers"):   # shown resolved: the layers the method will edit
                if key in config_dict and config_dict[key] is None and plan.layers:
                    config_dict[key] = plan.layers[0] if key == "layer" else list(plan.layers)
        estimates.append(MethodEstimate(
            label=method_spec.label, name=method_spec.name, settings=config_dict,
            layers=plan.layers if plan else (), auto=auto,
            changed=plan.changed if plan else (), changed_values=plan.changed_values if plan else 0,
            changes_weights=plan.changes_weights if plan else True, statistics=statistics, memory=parts, peak_bytes=peak,
            fits=None if capacity is None else peak <= capacity, problem=problem, notes=notes,
            gpus=-(-peak // capacity) if capacity and device.startswith("cuda") else None,
        ))
    return Plan(
        spec=spec.name, model=spec.model.name, source=where, architecture=str(getattr(config, "model_type", "?")),
        dtype=str(dtype).removeprefix("torch."), device=device, parameters=parameters, weights_bytes=weights,
        num_layers=num_layers, hidden_size=hidden, mlp_size=mlp, vocab_size=vocab, profile=profile,
        profile_problem=profile_problem, capacity_bytes=capacity, capacity_text=capacity_text,
        methods=tuple(estimates), seconds=round(time.perf_counter() - started, 2),
    )


#: Config keys that count a mixture-of-experts model's experts.
_EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
#: Config keys that give an MLP width (dense, per expert, shared expert).
_WIDTH_KEYS = ("intermediate_size", "moe_intermediate_size", "shared_expert_intermediate_size", "ffn_dim", "d_ff", "n_inner")


def _experts_mismatch(config: Any, profile: ModelProfile) -> str | None:
    """Why a derived profile of a mixture-of-experts model is not trusted, or None.

    When the config counts experts and the derived MLP output's width is none of
    the MLP widths the config declares, the derivation fell back on another
    projection (an attention output, say): planning an edit there would be wrong.
    """
    experts = max((v for k in _EXPERT_KEYS if isinstance(v := getattr(config, k, None), int)), default=0)
    widths = {v for k in _WIDTH_KEYS if isinstance(v := getattr(config, k, None), int)}
    if experts > 1 and widths and profile.mlp_size not in widths:
        declared = ", ".join(f"{k} {getattr(config, k)}" for k in _WIDTH_KEYS if isinstance(getattr(config, k, None), int))
        return (f"a mixture of {experts} experts, and the projection found as the MLP output ({profile.mlp_out}, width "
                f"{profile.mlp_size}) has none of the config's MLP widths ({declared}); keditlab cannot edit its experts yet")
    return None


def _edits_layers(config: Any) -> bool:
    """True when a method's settings name layers (a field marked ``layer_index``): it needs the model's structure."""
    import dataclasses

    return any(f.metadata.get("layer_index") for f in dataclasses.fields(config))


def _auto_facts() -> int:
    from keditlab.trace.auto_layer import AUTO_FACTS

    return len(AUTO_FACTS)


# -- the table -----------------------------------------------------------------------------------

def render_plan(plan: Plan) -> str:
    """The plan as the command prints it: the model, one row per method, then each method's settings and memory."""
    from keditlab.runner.render import _aligned

    shape = (f"{plan.num_layers} layers, hidden {plan.hidden_size}, MLP {plan.mlp_size}, vocabulary {plan.vocab_size:,}"
             if plan.profile else f"vocabulary {plan.vocab_size:,}")
    lines = [
        f"plan for {plan.spec} on {plan.model} ({plan.architecture}; config from {plan.source}; no weights loaded, "
        f"{plan.seconds:.1f} s)",
        f"{count_text(plan.parameters)} parameters ({plan.parameters:,}) in {plan.dtype}: {size_text(plan.weights_bytes)} of weights; {shape}",
        f"device: {plan.device}; {plan.capacity_text}",
    ]
    if plan.profile_problem:
        lines.append(f"structure: not derived ({plan.profile_problem}); methods that edit layers cannot be planned")
    rows = [["method", "layers", "changes", "one-off statistics", "peak memory", "fits?"]]
    for m in plan.methods:
        fits = "—" if m.fits is None else "fits" if m.fits else "does not fit" + (
            f" (the memory of {m.gpus} such GPUs)" if m.gpus else "")
        peak = size_text(m.peak_bytes) if not m.problem else f"≥ {size_text(m.peak_bytes)}"
        rows.append([m.label, "cannot plan" if m.problem else _layer_text(m.layers), m.changes_text(),
                     m.statistics.describe() if m.statistics else "none", peak, fits])
    lines += _aligned(rows, rule=True)
    for m in plan.methods:
        lines.append("")
        head = f"{m.label}" + (f" ({m.name})" if m.label != m.name else "")
        if m.problem:
            lines.append(f"{head}: cannot be planned: {m.problem}")
            lines.append(f"  memory at least: {_parts_text(m.memory)}")
            continue
        settings = ", ".join(f"{k}={v}" for k, v in m.settings.items())
        lines.append(f"{head}: layers {_layer_text(m.layers)}; settings: {settings}")
        if m.auto:
            lines.append(f"  {m.auto} ({_layer_text(m.layers)})")
        for what, count in m.changed:
            lines.append(f"  changes {what}: {count:,} values")
        lines.append(f"  memory: {_parts_text(m.memory)}")
        for note in m.notes:
            lines.append(f"  note: {note}")
    lines.append("")
    lines.append("(estimates from the configuration alone; how they are made and how close they came to measured peaks: docs/plan.md)")
    return "\n".join(lines)


def _parts_text(parts: dict[str, int]) -> str:
    shown = [f"{name} {size_text(value)}" for name, value in parts.items() if value]
    return ", ".join(shown) + f"; peak = fixed parts + the largest of evaluation, statistics, edit = {size_text(_peak(parts))}"
