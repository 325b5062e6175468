"""``load_model``: one call from a name to a model, its tokenizer and its profile.

Three kinds of names are understood:

* ``"smollm2-135m"``: the embedded model (see ``keditlab.models.embedded``),
  no network needed;
* a local directory holding a ``transformers`` checkpoint;
* any Hugging Face model id (``"gpt2"``, ``"Qwen/Qwen2.5-0.5B"``), loaded by
  ``transformers`` exactly as on Colab, from the hub or from the local HF cache.
  One that is not cached is only asked of the hub after a quick check that the
  hub answers (:mod:`keditlab.models.hub`), so a machine without network
  fails in seconds.

Failures come back as ``ModelLoadError`` with a message that says what to do,
not as a ``transformers`` traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from keditlab.models.embedded import EMBEDDED_NAME, embedded_model, ensure_embedded_cache, is_embedded_name
from keditlab.models.errors import ModelLoadError
from keditlab.models.hub import hub_endpoint, hub_offline, hub_unreachable_reason, is_cached
from keditlab.models.profile import ModelProfile

if TYPE_CHECKING:
    import torch

_DTYPE_NAMES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}


class LoadedModel(NamedTuple):
    """``(model, tokenizer, profile)``; unpack it or use the attributes.

    ``name`` (what was asked for) and ``source`` (the local folder or hub id it
    came from) are kept on the model as ``keditlab_name`` / ``keditlab_source``
    and shown here as properties, so unpacking still gives exactly three values.
    """

    model: Any
    tokenizer: Any
    profile: ModelProfile

    @property
    def name(self) -> str:
        return getattr(self.model, "keditlab_name", "")

    @property
    def source(self) -> str:
        return getattr(self.model, "keditlab_source", "")

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device


def resolve_device(device: str | torch.device | None = "auto") -> str:
    """The device to put a model on, checked to exist on this machine.

    ``"auto"`` (or None) means the CUDA GPU when torch sees one, else the CPU.
    A GPU asked for by name (``"cuda"``, ``"cuda:N"``, ``"mps"``) must be there:
    otherwise this raises :class:`ModelLoadError` saying so and what to write
    instead, before any weights are loaded, rather than letting ``model.to``
    fail with a torch traceback.  Other devices torch knows (``"cpu"``,
    ``"xpu"``, ...) are passed on as they are.
    """
    import torch

    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    text = str(device).strip()
    fix = "Fix: set the device to 'auto' (a GPU when there is one, else the CPU) or 'cpu' (in a spec: run.device)."
    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        raise ModelLoadError(f"unknown device {text!r}; known devices: auto, cpu, cuda, cuda:N (N a GPU number), mps. {fix}") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                f"this torch {torch.__version__} is a CPU-only build"
                if torch.version.cuda is None
                else "no CUDA GPU or driver was found"
            )
            raise ModelLoadError(f"device {text!r} asks for a CUDA GPU, but torch sees none ({why}). {fix}")
        count = torch.cuda.device_count()
        if (parsed.index or 0) >= count:
            have = "cuda:0" if count == 1 else f"cuda:0 .. cuda:{count - 1}"
            raise ModelLoadError(
                f"device {text!r} asks for CUDA GPU number {parsed.index}, but this machine has "
                f"{count} GPU{'s' if count != 1 else ''} ({have}). Fix: use one of those ('cuda' is the first), "
                "or 'auto' or 'cpu' (in a spec: run.device)."
            )
    elif parsed.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ModelLoadError(
                f"device {text!r} asks for Apple's Metal GPU, but torch sees none "
                f"(it exists only on Apple-silicon Macs, with a torch built for it). {fix}"
            )
    return text


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """None / ``"auto"`` mean float32, the precision editing methods are written for."""
    import torch

    if dtype is None or dtype == "auto":
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPE_NAMES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of float32, float16, bfloat16 (or a torch.dtype)")
    return getattr(torch, _DTYPE_NAMES[key])


def _looks_like_path(name: str) -> bool:
    """True for names that can only be paths (a hub id is ``name`` or ``org/name``)."""
    return (
        name.startswith(("/", "./", "../", "~", "\\"))
        or name in (".", "..")
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
        or (len(name) > 1 and name[1] == ":")  # a Windows drive
    )


def _error_chain(err: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


_ALTERNATIVES = (
    "Alternatives: the embedded model 'smollm2-135m' (works offline), a local directory with a "
    "saved checkpoint, or run once where the Hugging Face hub is reachable so the model is cached."
)


def _hub_error(name: str, err: BaseException) -> ModelLoadError:
    """Turn a ``transformers``/hub failure into one message that says what to do."""
    chain = _error_chain(err)
    kinds = {type(e).__name__ for e in chain}
    text = " ".join(str(e) for e in chain).lower()
    unreachable = (
        hub_offline()
        or "LocalEntryNotFoundError" in kinds
        or any(k in kinds for k in ("ConnectionError", "ConnectError", "ConnectTimeout", "Timeout", "ReadTimeout"))
        or "offline" in text
        or "couldn't connect" in text
        or "failed to resolve" in text
        or "name resolution" in text
    )
    if unreachable:
        return ModelLoadError(
            f"model {name!r} is not available locally and the Hugging Face hub can't be reached "
            f"(offline or HF_HUB_OFFLINE=1). {_ALTERNATIVES}"
        )
    if "RepositoryNotFoundError" in kinds or "is not a local folder and is not a valid model identifier" in text:
        return ModelLoadError(
            f"model {name!r} was not found: it is not a local folder and not a model id on the Hugging Face hub "
            f"(private or gated models need `huggingface-cli login`). {_ALTERNATIVES}"
        )
    return ModelLoadError(f"could not load model {name!r}: {_short(err)}")


def _check_hub(name: str) -> None:
    """Fail in seconds, not after a minute of retries, when a hub model is neither cached nor reachable.

    A cached model is left to ``transformers`` (it reads the cache), and so is
    a name that is not a valid hub id (``transformers`` says so without the network).
    """
    if is_cached(name) is not False:
        return
    reason = hub_unreachable_reason()
    if reason is None:
        return
    if hub_offline():
        fix = f"{_ALTERNATIVES} To download it, unset HF_HUB_OFFLINE."
    else:
        fix = (
            f"{_ALTERNATIVES} To download it, connect this machine to the network (or set HTTPS_PROXY), "
            f"or point HF_ENDPOINT at a reachable mirror (now: {hub_endpoint()})."
        )
    raise ModelLoadError(
        f"model {name!r} is not available locally (not in the Hugging Face cache) and the hub can't be reached ({reason}). {fix}"
    )


def _load_pretrained(source: str, name: str, dtype: torch.dtype, local: bool) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # transformers' per-tensor "Loading weights" bar is noise for a one-second load
    # (download bars come from huggingface_hub and are kept).
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except ModelLoadError:
        raise
    except Exception as err:  # transformers raises OSError, ValueError, HTTP errors, KeyError...
        if local:
            raise ModelLoadError(
                f"could not load a model from the folder {source!r}: {_short(err)}. "
                "It should hold a transformers checkpoint (config.json, weights, tokenizer files)."
            ) from None
        raise _hub_error(name, err) from None
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    return model, tokenizer


def _prepare_tokenizer(tokenizer: Any) -> Any:
    """Give the tokenizer a pad token (EOS when it has none).

    Padding *side* is left alone: callers set it per use (left for generation,
    right for teacher-forced scoring).
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError("the tokenizer has neither a pad token nor an EOS token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name_or_path: str = EMBEDDED_NAME,
    device: str = "auto",
    dtype: str | torch.dtype | None = None,
    profile: dict[str, Any] | None = None,
) -> LoadedModel:
    """Load a causal LM, its tokenizer and its ``ModelProfile``.

    ``device``: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``,
    ``"cuda:N"``, ``"mps"``; a GPU that is not there is a ``ModelLoadError``
    (see :func:`resolve_device`), raised before anything is loaded.
    ``dtype``: None/``"auto"`` means float32; float16 on a CPU is a ``ModelLoadError``
    (:mod:`keditlab.models.precision` says how half precision is handled).  ``profile``: the spec's
    ``model.profile`` overrides for architectures keditlab cannot derive.
    The model comes back in eval mode.
    """
    from keditlab.models.derive import derive_profile

    from keditlab.models.precision import precision_problem

    torch_dtype = resolve_dtype(dtype)
    target_device = resolve_device(device)
    problem = precision_problem(torch_dtype, target_device)
    if problem is not None:
        raise ModelLoadError(problem)
    name = str(name_or_path)

    if is_embedded_name(name):
        name = embedded_model(name).name
        source = str(ensure_embedded_cache(name))
        model, tokenizer = _load_pretrained(source, name, torch_dtype, local=True)
    else:
        path = Path(name).expanduser()
        if path.is_dir():
            source = str(path.resolve())
            model, tokenizer = _load_pretrained(source, name, torch_dtype, local=True)
        elif path.exists():
            raise ModelLoadError(f"{name!r} is a file, not a model folder; give the folder that holds config.json")
        elif _looks_like_path(name):
            raise ModelLoadError(
                f"the local model folder {name!r} does not exist (resolved to {str(path.absolute())!r}). "
                f"Check the path, or use the embedded model {EMBEDDED_NAME!r} or a Hugging Face model id."
            )
        else:
            source = name
            _check_hub(name)
            model, tokenizer = _load_pretrained(source, name, torch_dtype, local=False)

    model.to(target_device)
    model.eval()
    model.keditlab_name = name
    model.keditlab_source = source
    tokenizer = _prepare_tokenizer(tokenizer)
    return LoadedModel(model, tokenizer, derive_profile(model, profile))
