"""Text corpora for estimating statistics of a model's hidden activations.

ROME-style methods need to know what "typical" keys at a layer look like: the
second moment ``C = E[k kᵀ]`` of the inputs to an MLP output projection over
ordinary text.  The original paper uses Wikipedia.  keditlab accepts three
sources, named by ``stats.corpus`` in a spec:

``model-samples``
    Text sampled from the model itself, starting from short everyday openings.
    It needs no network, so it is the default for the embedded model, and it is
    recorded as such: statistics from self-generated text are an approximation
    of statistics over real text.
a local path
    A ``.txt``/``.md`` file or a folder of them; paragraphs are used as samples.
``hf:<dataset id>[:<config>]``
    A Hugging Face dataset (e.g. ``hf:wikitext:wikitext-103-raw-v1``), read with
    the ``datasets`` library where the network allows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keditlab.models.sampling import sample_ids, seeded

MODEL_SAMPLES = "model-samples"

# Openings the model continues when it writes its own corpus: varied registers
# (narrative, encyclopaedic, news, instructions) so the keys cover more than one style.
OPENINGS = (
    "The", "In", "A", "It", "When", "This", "He", "She", "My", "According to",
    "Today", "One of the", "After the", "There are", "Many people", "The city of",
    "During the", "If you", "Scientists", "The history of", "Last year", "Born in",
    "The company", "Why", "How to", "Our", "In the early", "The first", "We", "Although",
)


class CorpusError(ValueError):
    """The corpus named in ``stats.corpus`` cannot be read."""


@dataclass(frozen=True)
class Corpus:
    """Tokenized text, ready for a statistics pass, and where it came from."""

    description: str
    sequences: list[list[int]]

    @property
    def num_tokens(self) -> int:
        return sum(len(s) for s in self.sequences)


def load_corpus(
    source: str, model: Any, tokenizer: Any, num_tokens: int, max_length: int, seed: int = 0
) -> Corpus:
    """Token sequences holding at least ``num_tokens`` tokens from ``source``."""
    if source == MODEL_SAMPLES:
        return _sample_from_model(model, tokenizer, num_tokens, max_length, seed)
    if source.startswith("hf:"):
        return _chunk_texts(_hf_texts(source[3:], num_tokens), tokenizer, num_tokens, max_length, source)
    path = Path(os.path.expanduser(source))
    if path.exists():
        return _chunk_texts(_local_texts(path), tokenizer, num_tokens, max_length, f"local:{path.resolve()}")
    raise CorpusError(
        f"stats.corpus {source!r} is neither 'model-samples', an existing local file or folder, "
        "nor a Hugging Face dataset written as 'hf:<id>[:<config>]'. Fix: give one of those."
    )


def _local_texts(path: Path) -> list[str]:
    files = sorted(p for p in path.rglob("*") if p.suffix in {".txt", ".md"}) if path.is_dir() else [path]
    if not files:
        raise CorpusError(f"stats.corpus folder {path} holds no .txt or .md files")
    texts = []
    for file in files:
        texts.extend(p.strip() for p in file.read_text(encoding="utf-8", errors="replace").split("\n\n"))
    return [t for t in texts if t]


def _hf_texts(dataset: str, num_tokens: int) -> list[str]:
    try:
        import datasets  # optional dependency
    except ImportError as exc:
        raise CorpusError("reading a Hugging Face dataset needs the datasets library: pip install datasets") from exc
    name, _, config = dataset.partition(":")
    try:
        data = datasets.load_dataset(name, config or None, split="train", streaming=True)
    except Exception as exc:  # offline, unknown id, ...: say which and what to do
        raise CorpusError(
            f"could not open Hugging Face dataset {dataset!r} ({type(exc).__name__}: {exc}). "
            "Offline? Use stats.corpus: model-samples, or a local text file or folder."
        ) from exc
    texts, chars = [], 0
    for row in data:
        text = str(row.get("text", "")).strip()
        if text:
            texts.append(text)
            chars += len(text)
        if chars > num_tokens * 8:  # a token is ~4 characters; read generously
            break
    return texts


def _chunk_texts(texts: list[str], tokenizer: Any, num_tokens: int, max_length: int, description: str) -> Corpus:
    sequences: list[list[int]] = []
    total = 0
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids), max_length):
            chunk = ids[start : start + max_length]
            if len(chunk) < 8:
                continue
            sequences.append(chunk)
            total += len(chunk)
            if total >= num_tokens:
                return Corpus(description, sequences)
    if total < min(num_tokens, 1000):
        raise CorpusError(f"stats.corpus {description} holds only {total} tokens; at least 1000 are needed")
    return Corpus(description, sequences)


#: Sequences sampled side by side.  On a CPU a decoding step costs nearly the
#: same for 32 or 128 sequences (the weights are read once per step), so wide
#: batches give about 1.6 times the tokens per second of 32-wide ones.
SAMPLE_BATCH = 128


def _native_bfloat16_cpu() -> bool:
    """Whether this CPU multiplies bfloat16 natively (:func:`keditlab.models.precision.native_bfloat16_cpu`)."""
    from keditlab.models.precision import native_bfloat16_cpu

    return native_bfloat16_cpu()


def _sampler(model: Any) -> tuple[Any, str]:
    """The model to sample the corpus with, and its dtype's name.

    On a CPU that computes in bfloat16 natively, a bfloat16 copy samples about
    1.5 times faster than float32 (measured on the 2-core CPU of
    ``docs/methods.md``); the corpus is text, so the rounding of the weights
    does not matter there (the statistics themselves are always computed with
    the model as loaded).  Elsewhere the model samples itself as it is.
    """
    import copy

    import torch

    param = next(model.parameters())
    if param.device.type == "cpu" and param.dtype == torch.float32 and _native_bfloat16_cpu():
        return copy.deepcopy(model).to(torch.bfloat16), "bfloat16"
    return model, str(param.dtype).removeprefix("torch.")


def _sample_from_model(model: Any, tokenizer: Any, num_tokens: int, max_length: int, seed: int) -> Corpus:
    """Sample ``num_tokens`` tokens from the model (temperature 1, top-k 50), reproducibly.

    The progress bar moves with every decoding step, so its rate and time left
    are true from the first second (it counts generated tokens and is set to the
    tokens kept, which can be fewer when a sequence ends early, after each batch).
    """
    from tqdm.auto import tqdm

    sequences: list[list[int]] = []
    total = 0
    sampler, dtype = _sampler(model)
    with tqdm(total=num_tokens, desc="Sampling a corpus from the model (once per model)", unit="tok") as progress, seeded(sampler, seed):
        batch_index = 0
        while total < num_tokens:
            # never sample much more than asked: the last batch is only as wide as needed
            width = max(1, min(SAMPLE_BATCH, -(-(num_tokens - total) // max_length)))
            prompts = [OPENINGS[(batch_index * SAMPLE_BATCH + i) % len(OPENINGS)] for i in range(width)]
            rows = sample_ids(sampler, tokenizer, prompts, max_new_tokens=max_length, top_k=50,
                              min_new_tokens=max_length // 2, on_step=progress.update)
            for ids in rows:
                ids = ids[:max_length]
                sequences.append(ids)
                total += len(ids)
            progress.n = min(total, num_tokens)
            progress.refresh()
            batch_index += 1
    return Corpus(f"{MODEL_SAMPLES} (seed {seed}, top-k 50, sampled in {dtype})", sequences)
