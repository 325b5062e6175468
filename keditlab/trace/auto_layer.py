"""``layer: auto``: the edit layer of ROME-family methods, chosen by causal tracing.

ROME edits the MLP where causal tracing finds the largest average indirect
effect at the subject's last token (layer 17 of GPT-2 XL's 48; Meng et al.,
2022, §3); MEMIT edits a run of layers ending there.  keditlab's default
layer is a fixed share of the depth (17%), which is right for some models
and not others.  With ``layer: auto`` (ROME, r-ROME) or ``layers: auto``
(MEMIT, EMMET, AlphaEdit) the runner asks :func:`traced_layer` instead:

* it traces :data:`AUTO_FACTS` (general-knowledge facts written for keditlab;
  only those the model predicts are used), MLP outputs only, at the subject's
  last token, and takes the layer of the largest mean indirect effect;
* the answer is cached on disk under ``$KEDITLAB_CACHE/trace/``, keyed by
  the model's identity (its source, shape and a fingerprint of its weights),
  so the trace runs once per model (processes on one machine, such as the
  cells of a sweep, take turns under a file lock: the first traces, the
  others read its answer);
* the evidence (the curve, how many facts, the noise) is returned with it and
  the runner records it in the run manifest (``keditlab.runner.run``
  resolves ``auto`` before the method's settings are checked).

Hase, Bansal, Kim and Ghandeharioun ("Does Localization Inform Editing?",
NeurIPS 2023, arXiv:2301.04213) found that where tracing localises a fact
barely predicts where editing it works best; docs/tracing.md measures the
question on the embedded model.  ``auto`` is a choice with evidence, not a
guarantee.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from keditlab.trace.facts import Fact, trace_facts

#: Facts traced for ``layer: auto``: (prompt, subject, answer).
AUTO_FACTS = (
    ("The Eiffel Tower is located in the city of", "Eiffel Tower", "Paris"),
    ("The capital of France is the city of", "France", "Paris"),
    ("The capital of Japan is the city of", "Japan", "Tokyo"),
    ("The capital of Italy is the city of", "Italy", "Rome"),
    ("The capital of Germany is the city of", "Germany", "Berlin"),
    ("The capital of Spain is the city of", "Spain", "Madrid"),
    ("The capital of Russia is the city of", "Russia", "Moscow"),
    ("The capital of England is the city of", "England", "London"),
    ("The Colosseum is located in the city of", "Colosseum", "Rome"),
    ("Big Ben is located in the city of", "Big Ben", "London"),
    ("The Statue of Liberty is located in the city of", "Statue of Liberty", "New"),
    ("The Brandenburg Gate is located in the city of", "Brandenburg Gate", "Berlin"),
    ("The Kremlin is located in the city of", "Kremlin", "Moscow"),
    ("The Taj Mahal is located in the country of", "Taj Mahal", "India"),
    ("The Great Wall is located in the country of", "Great Wall", "China"),
    ("Mount Fuji is located in the country of", "Mount Fuji", "Japan"),
    ("The Sydney Opera House is located in the country of", "Sydney Opera House", "Australia"),
    ("The pyramids of Giza are located in the country of", "pyramids of Giza", "Egypt"),
    ("Toyota is a car company from the country of", "Toyota", "Japan"),
    ("Volkswagen is a car company from the country of", "Volkswagen", "Germany"),
    ("Ferrari is a car company from the country of", "Ferrari", "Italy"),
    ("The iPhone is made by the company", "iPhone", "Apple"),
    ("Windows is an operating system made by", "Windows", "Microsoft"),
    ("The PlayStation is a game console made by", "PlayStation", "Sony"),
    ("Albert Einstein was born in the country of", "Albert Einstein", "Germany"),
    ("Pablo Picasso was born in the country of", "Pablo Picasso", "Spain"),
    ("Wolfgang Amadeus Mozart was born in the country of", "Wolfgang Amadeus Mozart", "Austria"),
    ("Leonardo da Vinci was born in the country of", "Leonardo da Vinci", "Italy"),
    ("Romeo and Juliet was written by William", "Romeo and Juliet", "Shakespeare"),
    ("The theory of relativity was developed by Albert", "theory of relativity", "Einstein"),
    ("The official language of Brazil is", "Brazil", "Portuguese"),
    ("The official language of Mexico is", "Mexico", "Spanish"),
    ("The official language of France is", "France", "French"),
    ("The currency of Japan is the", "Japan", "yen"),
    ("The Amazon River flows through the continent of South", "Amazon River", "America"),
    ("The Nile flows through the country of", "Nile", "Egypt"),
    ("Lionel Messi plays the sport of", "Lionel Messi", "football"),
    ("Serena Williams plays the sport of", "Serena Williams", "tennis"),
    ("Barack Obama was the president of the United", "Barack Obama", "States"),
    ("Harry Potter was written by J.K.", "Harry Potter", "Rowling"),
)

#: Traces per model for ``auto``: facts the model knows, noise draws per fact.
AUTO_FACT_LIMIT = 20
AUTO_SAMPLES = 5
#: Bumped when the procedure changes, so old cached answers are not reused.
AUTO_VERSION = 1


@dataclass(frozen=True)
class TracedLayer:
    """The traced layer and the evidence for it (what the run manifest records)."""

    layer: int
    mlp_effect: list[float]  # mean indirect effect of MLP outputs per layer, at the subject's last token
    facts: int
    skipped: int
    samples: int
    noise: float
    window: int
    model_key: str
    seconds: float
    cached: bool = False
    cache_path: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_key(model: Any, profile: Any) -> str:
    """A short hash of the model's identity: its source, shape, and a sample of its weights.

    The weight sample (the start of the embedding and of the last MLP output
    projection) tells apart checkpoints that share a name, and an edited model
    from the unedited one.
    """
    import torch

    digest = hashlib.sha256()
    digest.update(json.dumps([getattr(model, "keditlab_source", "") or getattr(model, "keditlab_name", ""),
                              profile.to_dict(), AUTO_VERSION], sort_keys=True).encode())
    for weight in (model.get_input_embeddings().weight, model.get_parameter(profile.mlp_out_parameter(profile.num_layers - 1))):
        sample = weight.detach().reshape(-1)[:65536].to("cpu", torch.float32).contiguous()
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def traced_layer(model: Any, tokenizer: Any, profile: Any, *, use_cache: bool = True, seed: int = 0,
                 log: Any = None) -> TracedLayer:
    """The layer with the largest mean MLP indirect effect at the subject's last token, cached per model."""
    from keditlab.models import cache_root

    key = model_key(model, profile)
    path = cache_root() / "trace" / f"auto-layer-{key}.json"
    if use_cache:
        cached = _read_cached(path)
        if cached is not None:
            return cached
        # Processes on one machine (the cells of a sweep) take turns: the first traces, the others read its answer.
        from filelock import FileLock

        locks = cache_root() / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        with FileLock(str(locks / f"trace-{key}.lock")):
            cached = _read_cached(path)
            return cached if cached is not None else _trace_layer(model, tokenizer, profile, key, path, seed, log)
    return _trace_layer(model, tokenizer, profile, key, path, seed, log)


def _read_cached(path: Any) -> TracedLayer | None:
    """The cached answer at ``path``, or None (none there, or a damaged file, which is then traced again)."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return TracedLayer(**{**data, "cached": True, "cache_path": str(path)})
    except (ValueError, TypeError):
        return None


def _trace_layer(model: Any, tokenizer: Any, profile: Any, key: str, path: Any, seed: int, log: Any) -> TracedLayer:
    if log is not None:
        log(f"layer: auto: tracing up to {AUTO_FACT_LIMIT} facts the model knows, once for this model …")
    started = time.perf_counter()
    facts = [Fact(p, s, a, str(i)) for i, (p, s, a) in enumerate(AUTO_FACTS)]
    average = trace_facts(model, tokenizer, facts, kinds=("mlp",), samples=AUTO_SAMPLES, seed=seed,
                          limit=AUTO_FACT_LIMIT, profile=profile, progress=log is not None, positions=("subject_last",))
    curve = average.effects["mlp"]["subject_last"]
    result = TracedLayer(layer=average.peak_layer("mlp", "subject_last"), mlp_effect=curve, facts=len(average.facts),
                         skipped=len(average.skipped), samples=AUTO_SAMPLES, noise=round(average.noise, 6),
                         window=average.window, model_key=key, seconds=round(time.perf_counter() - started, 3),
                         cache_path=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(result.to_dict(), indent=1), encoding="utf-8")
    os.replace(partial, path)   # a reader never sees half a file
    return result
