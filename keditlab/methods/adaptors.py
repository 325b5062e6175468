"""Plumbing shared by the methods that add a memory beside the weights instead of changing them (GRACE, WISE, T-Patcher).

Such a method leaves every weight of the model as it is and hangs an *adaptor*
on one module of one layer (the MLP output projection for GRACE and WISE, the
whole feed-forward block for T-Patcher: :meth:`AdaptorMethod.host_module`): a
child module named after the method, called by a forward hook on that module,
that may replace or add to the module's output.  Three rules make this safe to
stack and to undo:

* **One adaptor per module, found in the module tree.**  The first edit
  installs it; later edits (``run.mode: sequential``, or a user calling
  ``apply`` again in a notebook) find it as a child of the module and extend
  it, whatever ``EditContext`` they were given.
* **Each edit takes back exactly its own share.**  An edit pushes an undo record
  on the adaptor's stack; its handle's ``restore()`` pops it.  Handles are
  restored last-first (the runner's order); restoring an earlier edit while a
  later one is still applied is refused with a clear error, because the later
  edit was made on top of it.
* **Empty means gone.**  When the last edit is taken back the hook is removed
  and the child deleted, so the module tree and the outputs are bit for bit
  the model's own again.

:class:`UpperPasses` makes the adaptors' optimisation cheap: it runs the blocks
below the edited layer once and replays their outputs, so each optimisation
step runs only the blocks from the edited layer up.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import field
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch

from keditlab.methods.base import Capabilities, EditContext, EditHandle, EditMethod, MethodConfigError
from keditlab.methods.layers import adaptor_layer
from keditlab.models.hooks import HookHandle, add_hook, hooks
from keditlab.models.sampling import device_of, right_padded, sample_ids, seeded
from keditlab.models.tokens import encode_prompt, encode_prompt_answer

A = TypeVar("A", bound="Adaptor")


class AdaptorOrderError(RuntimeError):
    """An edit was restored while a later edit of the same adaptor is still applied."""


#: Every adaptor class by name, so that a saved adaptor (:mod:`keditlab.methods.saved`) can be built again.
ADAPTOR_CLASSES: dict[str, type["Adaptor"]] = {}


class Adaptor(torch.nn.Module):
    """Base class of the adaptors: an undo stack and the hook that calls :meth:`adapt`."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        ADAPTOR_CLASSES[cls.__name__] = cls

    def __init__(self, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.undo_stack: list[tuple[int, Callable[[], None]]] = []
        self._next_token = 0
        self._hooks: list[HookHandle] = []
        self._host: torch.nn.Module | None = None
        self._child_name = ""

    # -- what a subclass implements -------------------------------------------------------------
    def adapt(self, key: torch.Tensor, output: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """The module's new output given its input ``key`` ``(batch, tokens, in)`` and its own ``output``."""
        raise NotImplementedError

    def installed(self, model: torch.nn.Module) -> None:
        """Called once the adaptor is on its module; a subclass may hang more hooks (``add_hook`` handles appended to ``_hooks``)."""

    # -- saving (keditlab.methods.saved) --------------------------------------------------------
    def build_args(self) -> dict[str, Any]:  # pragma: no cover
        """The constructor's arguments besides ``layer`` and ``device``: how to build an empty one like it again."""
        raise NotImplementedError

    def saved_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:  # pragma: no cover
        """Everything the adaptor holds, as ``(tensors, plain JSON facts)``; :meth:`load_state` puts it back."""
        raise NotImplementedError

    def load_state(self, tensors: dict[str, torch.Tensor], facts: dict[str, Any]) -> None:  # pragma: no cover
        raise NotImplementedError

    def state_digest(self) -> str:
        """SHA-256 of :meth:`saved_state`: tells whether two adaptors hold the same edits."""
        import hashlib
        import json

        tensors, facts = self.saved_state()
        digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode())
        for name in sorted(tensors):
            flat = tensors[name].detach().to("cpu").contiguous().reshape(-1)
            digest.update(name.encode() + flat.view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    # -- installation -------------------------------------------------------------------------
    def _call(self, _module, inputs, output):
        if not self.undo_stack:
            return output
        return self.adapt(inputs[0], output)

    def push(self, handle: EditHandle, undo: Callable[[], None]) -> None:
        """Record one edit's undo; ``handle.restore()`` will run it (and detach the adaptor once empty)."""
        token = self._next_token
        self._next_token += 1
        self.undo_stack.append((token, undo))
        handle.on_restore.append(lambda: self._undo(token))

    def _undo(self, token: int) -> None:
        if not self.undo_stack or self.undo_stack[-1][0] != token:
            raise AdaptorOrderError(
                f"this {type(self).__name__} edit has later edits on top of it that are still applied. "
                "Fix: restore edits last-first (the later handles first), as the runner does."
            )
        _, undo = self.undo_stack.pop()
        undo()
        if not self.undo_stack:
            self.detach()

    def detach(self) -> None:
        """Remove the hook and the child module: the host module is exactly as it was before the first edit."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        if self._host is not None and self._child_name in self._host._modules:
            del self._host._modules[self._child_name]
        self._host = None


def own_output(module: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """What ``module`` alone computes for ``inputs`` (rows ``(n, in)``), without the hooks on it (its adaptor's).

    A projection takes the rows as they are; a mixture-of-experts block (the
    adaptor's host on an MoE model) reads ``(batch, tokens, hidden)``, so the rows are given as one sequence.
    """
    if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":
        return module.forward(inputs)
    return module.forward(inputs[None])[0]


def ffn_module(profile: Any, layer: int) -> str:
    """The module that reads the feed-forward block's input and returns its output at ``layer``.

    Derived from the MLP output projection's path, never from the family's
    name: its parent (``model.layers.5.mlp`` for ``...mlp.down_proj``,
    ``transformer.h.5.mlp`` for GPT-2's ``...mlp.c_proj``); on a
    mixture-of-experts model the MoE block, which the profile already names as
    ``mlp_out``.  A family whose block holds the feed-forward layers directly
    (OPT's ``fc1``/``fc2`` sit in the decoder layer itself) has no such module:
    then the projection itself, whose input is the FFN's inner activation.
    """
    projection = profile.mlp_out_module(layer)
    if profile.is_moe:
        return projection
    parent = projection.rpartition(".")[0]
    return projection if parent == profile.layer_module(layer) else parent


def host_input_width(profile: Any, layer: int, module_name: str) -> int:
    """Width of what ``module_name`` (the projection, or :func:`ffn_module`) reads at ``layer``."""
    return profile.mlp_out_input_size if module_name == profile.mlp_out_module(layer) else profile.hidden_size


def adaptor_layer_setting(noun: str) -> Any:
    """The ``layer`` field of an adaptor method's config; ``noun`` names the adaptor ("codebook", "side memory")."""
    return field(
        default=None,
        metadata={"help": f"Layer whose MLP output projection gets the {noun}. Empty: 80% of the depth (layer 24 of 30 on the embedded model).",
                  "layer_index": True},
    )


class AdaptorSite:
    """Mixin of an adaptor method's config (its ``layer`` is :func:`adaptor_layer_setting`): the layer resolved.

    Empty, the layer is :func:`~keditlab.methods.layers.adaptor_layer`.
    """

    layer: int | None

    def resolved_layer(self, num_layers: int) -> int:
        return adaptor_layer(num_layers) if self.layer is None else self.layer


class AdaptorMethod(EditMethod, family="memory",
                    capabilities=Capabilities(batch=True, sequential=True, needs_statistics=False, changes_weights=False)):
    """Base class of the methods that hang an adaptor beside one module of one layer (GRACE, WISE, T-Patcher).

    The module is :meth:`host_module`: the MLP output projection unless a
    method says otherwise.  ``_apply`` checks that the stream's adaptor is not on another layer, makes
    the (weightless) handle and leaves the rest to :meth:`_edit_at`, which
    finds or installs the adaptor, pushes the call's undo record and writes
    the cases, one after another (several cases in one call are written
    one after another into the adaptor).
    """

    #: The adaptor's class, and what the error messages call it (given in the card: ``adaptor_class=``, ``adaptor_noun=``).
    adaptor_class: type[Adaptor]
    adaptor_noun: str = "adaptor"

    def __init_subclass__(cls, *, adaptor_class: type[Adaptor] | None = None, adaptor_noun: str | None = None,
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if adaptor_class is not None:
            cls.adaptor_class = adaptor_class
        if adaptor_noun is not None:
            cls.adaptor_noun = adaptor_noun

    @classmethod
    def host_module(cls, profile: Any, layer: int) -> str:
        """The path of the module the adaptor hangs on at ``layer``: the MLP output projection (GRACE, WISE).

        A method whose adaptor reads the feed-forward block's input overrides
        this with :func:`ffn_module` (T-Patcher).
        """
        return profile.mlp_out_module(layer)

    def _apply(self, model, tokenizer, profile, cases, config, context: EditContext) -> EditHandle:
        layer = config.resolved_layer(profile.num_layers)
        module_name = self.host_module(profile, layer)
        elsewhere = installed_elsewhere(model, self.name, self.adaptor_class, module_name)
        if elsewhere:
            raise MethodConfigError(
                f"layer: a {self.name} {self.adaptor_noun} is already installed on {elsewhere}; edits of one stream share one "
                f"{self.adaptor_noun}. Fix: use the same layer for every {self.name} edit, or restore the earlier edits first."
            )
        handle = EditHandle(self.name, model, {})
        existing = model.get_submodule(module_name)._modules.get(self.name)
        before = existing.state_digest() if isinstance(existing, Adaptor) and existing.undo_stack else None
        # a failed edit leaves nothing behind (methods/transaction.py): its share is taken back by its handle,
        # and an adaptor it installed, with its hooks, is taken off with the module tree
        summary = self._edit_at(model, tokenizer, profile, layer, module_name, cases, config, context, handle)
        # where the adaptor is and what it held before this call: saved edits (methods/saved.py) load only on that state
        handle.details = {"layer": layer, "module": module_name, **summary,
                          "adaptor": {"path": f"{module_name}.{self.name}", "before_sha256": before}}
        return handle

    def _edit_at(self, model, tokenizer, profile, layer: int, module_name: str, cases, config, context: EditContext,
                 handle: EditHandle) -> dict[str, Any]:  # pragma: no cover
        """Write ``cases`` into the adaptor on ``module_name`` (installed if absent); return the handle's details."""
        raise NotImplementedError


def find_or_install(model: torch.nn.Module, module_name: str, child: str, layer: int, make: Callable[[], A],
                    kind: type[A]) -> tuple[A, bool]:
    """The adaptor named ``child`` on ``module_name``, installed (``make()``) if absent; ``(adaptor, new)``."""
    host = model.get_submodule(module_name)
    existing = host._modules.get(child)
    if existing is not None:
        if not isinstance(existing, kind):
            raise TypeError(f"{module_name}.{child} is a {type(existing).__name__}, not a {kind.__name__}")
        return existing, False
    adaptor = make()
    host.add_module(child, adaptor)
    # a plain attribute, not a child: registered as a submodule, the host would contain its own child's parent
    # (a cycle that makes state_dict() and named_modules(remove_duplicate=False) recurse without end)
    object.__setattr__(adaptor, "_host", host)
    adaptor._child_name = child
    adaptor._hooks.append(add_hook(host, adaptor._call))
    adaptor.installed(model)
    return adaptor, True


def installed_elsewhere(model: torch.nn.Module, child: str, kind: type[Adaptor], module_name: str) -> str | None:
    """The path of an adaptor of ``kind`` installed under another module than ``module_name``, if any."""
    for name, module in model.named_modules():
        if isinstance(module, kind) and name != f"{module_name}.{child}":
            return name.rsplit(".", 1)[0]
    return None


#: Openings of the unrelated texts an adaptor is trained to leave alone: questions, like the edits, and statements.
_UNRELATED_OPENINGS = ("What", "Who", "When", "Where", "Which", "How", "The", "In", "It", "She", "Why", "I")
_unrelated_cache: "weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple[int, int], list[str]]]" = weakref.WeakKeyDictionary()


def unrelated_texts(model: torch.nn.Module, tokenizer: Any, count: int, seed: int = 0, length: int = 12) -> list[str]:
    """``count`` short texts sampled from the model itself, half of them questions; sampled once per model and seed.

    They stand for "everything else" where an adaptor must not act.  They are
    sampled before the first edit (callers ask for them before installing
    anything) and reused, so every edit of a stream sees the same ones.
    """
    per_model = _unrelated_cache.setdefault(model, {})
    if (count, seed) not in per_model:
        openings = [_UNRELATED_OPENINGS[i % len(_UNRELATED_OPENINGS)] for i in range(count)]
        with seeded(model, seed):
            rows = sample_ids(model, tokenizer, openings, max_new_tokens=length, top_k=5)
        per_model[(count, seed)] = [" ".join(text.split()) for text in tokenizer.batch_decode(rows, skip_special_tokens=True)]
    return per_model[(count, seed)]


class _Replay(torch.nn.Module):
    """Stands in for a block below the edited layer: returns what the block returned the first time."""

    def __init__(self, output: Any) -> None:
        super().__init__()
        self.output = output

    def forward(self, *_args: Any, **_kwargs: Any) -> Any:
        return self.output


def answer_positions(tokenizer: Any, pairs: Sequence[tuple[str, str]]) -> tuple[list[list[int]], list[list[int]]]:
    """The rows a model reads for ``(prompt, answer)`` pairs, and where in them each answer is predicted.

    Each row is ``prompt + answer[:-1]`` (teacher forcing); its selection is 1
    at the positions that predict the answer's tokens (the prompt's last token
    and the answer's tokens but its last), which are exactly the positions a
    teacher-forced probe reads, and 0 elsewhere.
    """
    rows, selected = [], []
    for prompt, answer in pairs:
        prompt_ids, answer_ids = encode_prompt_answer(tokenizer, prompt, answer)
        rows.append(prompt_ids + answer_ids[:-1])
        selected.append([0] * (len(prompt_ids) - 1) + [1] * len(answer_ids))
    return rows, selected


def unrelated_positions(model, tokenizer, count: int, seed: int,
                        pairs: Sequence[tuple[str, str]] = ()) -> tuple[list[list[int]], list[list[int]]]:
    """Rows of "everything else" an adaptor must leave alone, and the positions of each to read.

    Two sources.  Without ``pairs``: every token of ``count`` short texts
    sampled from the model itself (half of them questions, see
    :func:`unrelated_texts`), so no corpus and no benchmark record is needed.
    With ``pairs`` (unrelated questions and their answers, ``(prompt,
    answer)``, at most ``count`` of them used): the positions at which each
    answer is predicted (:func:`answer_positions`), which are exactly the
    positions a teacher-forced locality probe reads.
    """
    if pairs:
        return answer_positions(tokenizer, list(pairs)[:count])
    rows = [encode_prompt(tokenizer, t) for t in unrelated_texts(model, tokenizer, count, seed=seed)]
    return rows, [[1] * len(row) for row in rows]


def read_inputs(model, tokenizer, modules: dict[int, torch.nn.Module], rows: list[list[int]], selected: list[list[int]],
                chunk: int = 32, output_norms: bool = False) -> Any:
    """What each module reads at the selected positions of ``rows``: float64 ``(n, d_in)`` per module.

    ``modules`` maps a layer to a module; ``selected`` has a 0/1 per token of
    each row (:func:`answer_positions`, :func:`unrelated_positions`).  With
    ``output_norms``, also the norm of what each module returns there (float64
    ``(n,)`` per module): ``(inputs, norms)``.  Rows of similar length are read
    together (little padding), a chunk at a time, through the blocks only: the
    output embedding would be most of the work (Gemma 3's 262k-token one), and
    nothing here reads it.  Nothing in the model is changed.
    """
    device = device_of(model)
    found: dict[int, list[torch.Tensor]] = {layer: [] for layer in modules}
    norms: dict[int, list[torch.Tensor]] = {layer: [] for layer in modules}
    where = torch.zeros(0)

    def hook(layer):
        def grab(_m, inputs, output):
            found[layer].append(inputs[0][where].detach().to(torch.float64))
            if output_norms:
                out = output[0] if isinstance(output, tuple) else output
                norms[layer].append(out[where].detach().to(torch.float64).norm(dim=-1))
        return grab
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    with hooks(forward=[(m, hook(layer)) for layer, m in modules.items()]), torch.no_grad():
        for start in range(0, len(order), chunk):
            part = order[start:start + chunk]
            ids, mask = right_padded([rows[i] for i in part], tokenizer.pad_token_id, device)
            where = right_padded([selected[i] for i in part], 0, device)[0].bool()
            model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)
    inputs = {layer: torch.cat(v) for layer, v in found.items()}
    return (inputs, {layer: torch.cat(v) for layer, v in norms.items()}) if output_norms else inputs


def preserved_keys(model, tokenizer, modules, count, seed, pairs: Sequence[tuple[str, str]] = (),
                   chunk: int = 32) -> dict[int, torch.Tensor]:
    """The second moment ``PᵀP / n`` of each module's keys over unrelated text (float32, ``(d_in, d_in)``).

    The keys are read at the positions of :func:`unrelated_positions`: every
    token of ``count`` texts sampled from the model, or, with ``pairs``, the
    positions at which each unrelated answer is predicted.  Read once per
    stream, before its first edit.
    """
    rows, selected = unrelated_positions(model, tokenizer, count, seed, pairs)
    keys = read_inputs(model, tokenizer, modules, rows, selected, chunk=chunk)
    return {layer: (p.T @ p / len(p)).float() for layer, p in keys.items()}


@contextlib.contextmanager
def upper_passes(model: torch.nn.Module, blocks_path: str, layer: int, ids: torch.Tensor,
                 mask: torch.Tensor, chunk: int = 64) -> Iterator[Callable[..., torch.Tensor]]:
    """Inside the block, ``run()`` gives the last hidden state of ``ids`` recomputing only blocks ``layer`` and up.

    Whatever is trained at ``layer`` (an adaptor, or one weight matrix as in
    LocFT-BF) changes nothing below it, so the blocks below are run once here
    (no gradients, ``chunk`` rows at a time) and, while the block lasts,
    replaced in the model's block list by a stand-in that returns the recorded
    output of block ``layer - 1``.  ``run(rows)`` reads only the rows ``rows``
    (a list of row indices) of ``ids``, trimmed to their longest row (``ids``
    must be right-padded); ``run()`` reads all of them.  The blocks are put back
    on exit, whatever happens.
    """
    blocks = model.get_submodule(blocks_path)
    if layer == 0:
        def plain(rows: list[int] | None = None) -> torch.Tensor:
            part_ids, part_mask = (ids, mask) if rows is None else _trimmed(rows, ids, mask)
            return model.base_model(input_ids=part_ids, attention_mask=part_mask, use_cache=False).last_hidden_state
        yield plain
        return
    pieces: list[Any] = []
    with hooks(forward=[(blocks[layer - 1], lambda _m, _i, out: pieces.append(out))]), torch.no_grad():
        for start in range(0, len(ids), chunk):   # each chunk read only up to its longest row (rows sorted by length waste least)
            part_mask = mask[start:start + chunk]
            width = max(1, int(part_mask.sum(1).max()))
            model.base_model(input_ids=ids[start:start + chunk, :width], attention_mask=part_mask[:, :width], use_cache=False)
    recorded = _concatenated(pieces, ids.shape[1])
    stand_in = _Replay(recorded)
    originals = [blocks[i] for i in range(layer)]

    def run(rows: list[int] | None = None) -> torch.Tensor:
        if rows is None:
            stand_in.output = recorded
            return model.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        part_ids, part_mask = _trimmed(rows, ids, mask)
        stand_in.output = _selected(recorded, rows, part_ids.shape[1])
        return model.base_model(input_ids=part_ids, attention_mask=part_mask, use_cache=False).last_hidden_state

    try:
        for i in range(layer):
            blocks[i] = stand_in
        yield run
    finally:
        for i, block in enumerate(originals):
            blocks[i] = block


def _trimmed(rows: list[int], ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    index = torch.as_tensor(rows, device=ids.device)
    length = int(mask[index].sum(1).max())
    return ids[index, :length], mask[index, :length]


def _concatenated(pieces: list[Any], width: int) -> Any:
    """Block outputs of several chunks joined along the batch, each padded to ``width`` tokens (zeros where a chunk was
    shorter: padding, which no real token reads); a tensor, or a tuple whose first item is the hidden state."""
    def joined(tensors: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([torch.nn.functional.pad(t, (0, 0, 0, width - t.shape[1])) for t in tensors])
    if isinstance(pieces[0], torch.Tensor):
        return joined(pieces)
    return (joined([piece[0] for piece in pieces]), *pieces[0][1:])


def _selected(recorded: Any, rows: list[int], length: int) -> Any:
    index = torch.as_tensor(rows, device=(recorded if isinstance(recorded, torch.Tensor) else recorded[0]).device)
    if isinstance(recorded, torch.Tensor):
        return recorded[index, :length]
    return (recorded[0][index, :length], *recorded[1:])
