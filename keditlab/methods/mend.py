"""MEND: a trained editor that turns one fine-tuning gradient into a weight edit.

Mitchell, Lin, Bosselut, Finn and Manning, "Fast Model Editing at Scale",
ICLR 2022 (arXiv:2110.11309).

**The idea.**  For a linear layer ``y = W u``, the gradient of a loss over a
sequence is a sum of rank-one pieces, one per token: ``∇W = Σₜ δₜ uₜᵀ``, with
``uₜ`` the layer's input at token ``t`` and ``δₜ`` the loss's gradient with
respect to its output there.  Plain fine-tuning steps along ``-∇W`` and
barely moves the fact, or moves everything.  MEND learns a small network
``g`` that reads each token's pair ``(uₜ, δₜ)`` and returns a better pair
``(ũₜ, δ̃ₜ)``; the edit is ``W ← W - α Σₜ δ̃ₜ ũₜᵀ``, still a sum of rank-one
pieces, so the edit costs one forward and one backward pass and a few small
matrix products, whatever the model's size.

**Training** (:class:`MendTrainer`, run by ``keditlab train``).  ``g`` is
meta-learned on many edits: for a training record, the gradient of the
target's negative log-likelihood on the edit prompt (teacher-forced) is
taken on the *unedited* model, passed through ``g``, and the resulting edit
is applied; then the edited model is asked

* to say the target on the edit prompt and on a rephrasing of it (``L_edit``,
  the mean negative log-likelihood of the target's tokens), and
* to predict on an unrelated prompt what the unedited model predicted
  (``L_loc``, the KL divergence of its next-token distributions at the
  positions that predict the unrelated prompt's answer: what locality reads;
  the paper takes every position, which on a CPU costs four times the output
  embedding's work for little more),

and ``g`` and the step sizes ``α`` are trained on ``edit_weight · L_edit +
locality_weight · L_loc``.  The base model never changes during training.

**The network** (paper, section 3).  One network for all edited layers (they
have the same shape here: MLP output projections), with each layer's own
scale and offset.  Its input is ``z = [u; δ]``, normalised to zero mean and
unit variance per entry with statistics collected during training; two
low-rank residual blocks ``h = z + s ⊙ U σ(V z + c) + o`` follow.  keditlab's
variant, like the paper's code: ``U`` starts at zero (and ``s`` at one, ``o``
at zero), so ``g`` starts as the identity, MEND starts as normalised
fine-tuning, and the first steps have a gradient (with the non-linearity
outside the zero matrix, as the paper writes it, ``U``'s gradient would be
zero at the start).  ``α`` is learned per layer, in log space.

**Where it edits.**  The MLP output projections of the last three layers
(:func:`~keditlab.methods.layers.last_layers`), as in the paper, on any model
depth.  A sparse mixture-of-experts MLP has no single projection whose
gradient is a sum of token pieces (the router splits it among experts), so
MEND refuses such models.

**Cheap training on a CPU.**  Only the last three blocks are edited, so the
blocks below them read every training record once, before the first step,
and their outputs are replayed
(:func:`~keditlab.methods.adaptors.upper_passes`): each step runs three
blocks and the output embedding, not thirty.  Each record of a batch is
its own edit (applied as its own low-rank term to its own rows), so a
batch of eight trains eight independent single edits at once.

Several edits in one call (``run.mode: batch``) add their token pieces into
one update, as the paper does for batched edits; sequential edits each take
the gradient on the model as the earlier ones left it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from keditlab.methods.adaptors import upper_passes
from keditlab.methods.archives import find_archive, loaded_editor
from keditlab.methods.base import Capabilities, EditContext, EditHandle, EditMethod, MethodConfig, MethodPlan
from keditlab.methods.common import trainable_only
from keditlab.methods.finetune import masked_batch, per_edit_nll
from keditlab.methods.layers import last_layers
from keditlab.methods.training import EditorTrainer, TrainConfig
from keditlab.models.hooks import hooks
from keditlab.models.sampling import device_of, right_padded
from keditlab.models.tokens import encode_prompt_answer


class MendNet(torch.nn.Module):
    """``g``: each token's ``(u, δ)`` → ``(ũ, δ̃)``, shared by the edited layers, each with its own scale, offset and ``α``."""

    def __init__(self, in_width: int, out_width: int, layers: int, rank: int, edit_lr: float) -> None:
        super().__init__()
        width = in_width + out_width
        self.in_width, self.out_width, self.rank = in_width, out_width, rank
        self.down = torch.nn.ModuleList([torch.nn.Linear(width, rank) for _ in range(2)])
        self.up = torch.nn.ModuleList([torch.nn.Linear(rank, width, bias=False) for _ in range(2)])
        for up in self.up:
            torch.nn.init.zeros_(up.weight)
        self.scale = torch.nn.Parameter(torch.ones(2, layers, width))
        self.offset = torch.nn.Parameter(torch.zeros(2, layers, width))
        self.log_lr = torch.nn.Parameter(torch.full((layers,), math.log(edit_lr)))
        # running mean and sum of squared deviations of z per layer (Welford), frozen outside training
        self.register_buffer("count", torch.zeros(layers, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(layers, width, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(layers, width, dtype=torch.float64))

    def observe(self, layer: int, z: torch.Tensor) -> None:
        """Add the tokens ``z`` ``(n, width)`` to layer ``layer``'s normalisation statistics (Chan et al.'s batch update)."""
        z = z.detach().to(torch.float64)
        n, batch_mean = z.shape[0], z.mean(0)
        batch_m2 = ((z - batch_mean) ** 2).sum(0)
        count = self.count[layer]
        delta = batch_mean - self.mean[layer]
        total = count + n
        self.mean[layer] += delta * n / total
        self.m2[layer] += batch_m2 + delta ** 2 * count * n / total
        self.count[layer] = total

    def forward(self, layer: int, u: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.cat([u, delta], dim=-1).float()
        if not bool(self.count[layer] > 1):   # nothing observed yet: no normalisation
            std, mean = torch.ones_like(z[0]), torch.zeros_like(z[0])
        else:
            std, mean = (self.m2[layer] / (self.count[layer] - 1)).sqrt().float().clamp(min=1e-6), self.mean[layer].float()
        h = (z - mean) / std
        for i in range(2):
            h = h + self.scale[i, layer] * self.up[i](torch.relu(self.down[i](h))) + self.offset[i, layer]
        return h[..., :self.in_width], h[..., self.in_width:]

    def build(self) -> dict[str, int]:
        return {"in_width": self.in_width, "out_width": self.out_width, "layers": self.scale.shape[1], "rank": self.rank}


# -- what one edit is made of: the token pieces (u, δ) of the edited layers -----------------------------------------


def _grab_pieces(modules: dict[int, torch.nn.Module]):
    """Hooks that keep each module's input and make its output a leaf whose gradient is ``δ``; returns (hooks, store)."""
    store: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def grab(layer):
        def hook(_module, inputs, output):
            leaf = output.detach().requires_grad_(True)
            store[layer] = (inputs[0].detach(), leaf)
            return leaf.clone()   # a copy: some blocks add to the MLP output in place (Falcon), which a leaf refuses
        return hook
    return [(module, grab(layer)) for layer, module in modules.items()], store


def _transformed(net: MendNet, order: list[int], store, loss: torch.Tensor, mask: torch.Tensor, *, observe: bool,
                 create_graph: bool = False) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """``(ũ, δ̃)`` per edited layer, ``(rows, tokens, width)``, zero at padding, from the pieces ``store`` holds."""
    leaves = [store[layer][1] for layer in order]
    deltas = torch.autograd.grad(loss, leaves)
    where = mask.bool()
    pieces = {}
    for index, (layer, delta) in enumerate(zip(order, deltas)):
        u = store[layer][0]
        if observe:
            net.observe(index, torch.cat([u[where], delta[where]], dim=-1))
        u_t, d_t = net(index, u[where], delta[where])
        full_u = u.new_zeros(*u.shape[:2], u_t.shape[-1], dtype=u_t.dtype)
        full_d = delta.new_zeros(*delta.shape[:2], d_t.shape[-1], dtype=d_t.dtype)
        pieces[layer] = (full_u.index_put((where.nonzero(as_tuple=True)), u_t),
                         full_d.index_put((where.nonzero(as_tuple=True)), d_t))
    return pieces


def _edit_hooks(net: MendNet, order: list[int], modules, pieces, episodes: torch.Tensor):
    """Forward hooks that add row ``r``'s own edit ``-α Σₜ δ̃ₜ ũₜᵀ`` (of episode ``episodes[r]``) to each edited layer's output."""
    def add(index, layer):
        u_t, d_t = pieces[layer]
        u_rows, d_rows = u_t[episodes], d_t[episodes]
        rate = net.log_lr[index].exp()

        def hook(_module, inputs, output):
            x = inputs[0].to(u_rows.dtype)
            change = torch.bmm(torch.bmm(x, u_rows.transpose(1, 2)), d_rows)
            return output - (rate * change).to(output.dtype)
        return hook
    return [(modules[layer], add(i, layer)) for i, layer in enumerate(order)]


# -- training ------------------------------------------------------------------------------------------------------


@dataclass
class MendTrainConfig(TrainConfig):
    """MEND's training settings (``train:`` with ``editor: mend``); defaults measured on the embedded model, docs/methods.md."""

    lr: float = field(default=1e-3, metadata={"exclusive_minimum": 0, "help": "Adam's learning rate for the network (1e-4 learned four times slower on the embedded model)."})
    layers: list[int] | None = field(default=None, metadata={"help": "Layers whose MLP output projection MEND edits. Empty: the last three, as in the paper.", "layer_index": True})
    rank: int = field(default=256, metadata={"minimum": 1, "help": "Width of the network's low-rank bottleneck (the paper's 1,920 is for 2,000-6,000-wide layers)."})
    edit_lr: float = field(default=1e-5, metadata={"exclusive_minimum": 0, "help": "Initial step size α of every edited layer (learned, per layer, in log space)."})
    edit_lr_lr: float = field(default=0.05, metadata={"exclusive_minimum": 0, "help": "Adam's learning rate for log α (α moves by a factor e in about 1/edit_lr_lr steps)."})
    edit_weight: float = field(default=1.0, metadata={"minimum": 0, "help": "Weight of the edit loss (target on the edit prompt and its rephrasing)."})
    locality_weight: float = field(default=1.0, metadata={"minimum": 0, "help": "Weight of the locality loss (KL divergence on unrelated prompts)."})


def _record_rows(tokenizer: Any, case: Any) -> tuple[list[tuple[list[int], list[int]]], bool]:
    """The three rows a record trains on: edit, rephrasing, unrelated prompt (ids, labels); False when it lacks one."""
    rows = []
    for prompt, answer in ((case.prompt, case.target),
                           (case.rephrase[0] if case.rephrase else case.prompt, case.target),
                           ((case.locality[0].prompt, str(case.locality[0].answer)) if case.locality else ("", ""))):
        if not prompt:
            return rows, False
        prompt_ids, answer_ids = encode_prompt_answer(tokenizer, prompt, answer)
        rows.append((prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids))
    return rows, True


class MendTrainer(EditorTrainer):
    """MEND's meta-training on a frozen model (module docstring); use as a context manager (it replays the lower blocks)."""

    editor = "mend"

    def __init__(self, model, tokenizer, profile, records: list[Any], validation: list[Any], config: MendTrainConfig) -> None:
        self.model, self.profile, self.config = model, profile, config
        self.layers = sorted(set(config.layers)) if config.layers else last_layers(profile.num_layers)
        self.modules = {layer: model.get_submodule(profile.mlp_out_module(layer)) for layer in self.layers}
        torch.manual_seed(config.seed)
        self.net = MendNet(profile.mlp_size, profile.hidden_size, len(self.layers), config.rank, config.edit_lr).to(device_of(model))
        usable = [(c, rows) for c in records + validation for rows, ok in [_record_rows(tokenizer, c)] if ok]
        train_ids = {id(c) for c in records}
        self.skipped = len(records) + len(validation) - len(usable)
        self.train = [i for i, (c, _) in enumerate(usable) if id(c) in train_ids]
        self.valid = [i for i, (c, _) in enumerate(usable) if id(c) not in train_ids]
        if not self.train:
            raise ValueError("mend: no training record has a rephrasing and an unrelated prompt. "
                             "Fix: train on ZsRE or CounterFact records (they have both).")
        rows = [row for _, three in usable for row in three]   # record i: rows 3i (edit), 3i+1 (rephrasing), 3i+2 (unrelated)
        # stored shortest first, so that the lower blocks read each chunk of rows at nearly its own length
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
        self.place = torch.empty(len(rows), dtype=torch.long)
        self.place[order] = torch.arange(len(rows))
        self.ids, self.mask = right_padded([rows[i][0] for i in order], tokenizer.pad_token_id, device_of(model))
        self.labels, _ = right_padded([rows[i][1] for i in order], -100, device_of(model))
        self.head = model.get_output_embeddings()
        self._stack: Any = None

    @property
    def num_records(self) -> int:
        return len(self.train)

    def __enter__(self) -> "MendTrainer":
        import contextlib

        self._stack = contextlib.ExitStack()
        self._stack.enter_context(trainable_only(self.model, []))
        self.run = self._stack.enter_context(upper_passes(self.model, self.profile.layers, self.layers[0], self.ids, self.mask))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    def parameters(self) -> list[Any]:
        others = [p for name, p in self.net.named_parameters() if name != "log_lr"]
        return [{"params": others}, {"params": [self.net.log_lr], "lr": self.config.edit_lr_lr}]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def build(self) -> dict[str, Any]:
        """How to build the network again, and where it edits: the archive's ``build``."""
        return {**self.net.build(), "edited_layers": list(self.layers)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state)

    def _rows(self, records: list[int], kind: int) -> list[int]:
        """Where the rows of one kind (0 edit, 1 rephrasing, 2 unrelated) of these records are stored."""
        return [int(self.place[3 * r + kind]) for r in records]

    def _pieces(self, records: list[int], *, observe: bool):
        edit_rows = self._rows(records, 0)
        grab, store = _grab_pieces(self.modules)
        with torch.enable_grad(), hooks(forward=grab):
            hidden = self.run(edit_rows)
            labels = self.labels[edit_rows, :hidden.shape[1]]
            loss = per_edit_nll(self.head, hidden, labels) * len(edit_rows)
        return _transformed(self.net, self.layers, store, loss, self.mask[edit_rows, :hidden.shape[1]], observe=observe)

    def _edited(self, records: list[int], pieces) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Last hidden states of the records' three rows each, every row under its own record's edit."""
        count = len(records)
        rows = [row for k in range(3) for row in self._rows(records, k)]   # all edit rows, then rephrasings, then unrelated
        episodes = torch.arange(count, device=self.ids.device).repeat(3)
        with hooks(forward=_edit_hooks(self.net, self.layers, self.modules, pieces, episodes)):
            hidden = self.run(rows)
        return hidden, self.labels[rows, :hidden.shape[1]], rows

    def _unrelated_logprobs(self, hidden: torch.Tensor, rows: list[int]) -> torch.Tensor:
        """Next-token log-probabilities at the positions that predict the unrelated prompt's answer (what locality reads)."""
        where = (self.labels[rows, 1:hidden.shape[1] + 1] != -100).nonzero(as_tuple=True)
        return torch.log_softmax(self.head(hidden[where]).float(), dim=-1)

    def loss(self, records: list[int]) -> dict[str, torch.Tensor]:
        records = [self.train[i] for i in records]
        count = len(records)
        unrelated = self._rows(records, 2)
        with torch.no_grad():
            base = self._unrelated_logprobs(self.run(unrelated), unrelated)
        pieces = self._pieces(records, observe=True)
        hidden, labels, rows = self._edited(records, pieces)
        edit = per_edit_nll(self.head, hidden[:2 * count], labels[:2 * count])
        edited = self._unrelated_logprobs(hidden[2 * count:], rows[2 * count:])
        kl = (base.exp() * (base - edited)).sum(-1).mean()
        loss = self.config.edit_weight * edit + self.config.locality_weight * kl
        return {"loss": loss, "edit_nll": edit.detach(), "locality_kl": kl.detach(),
                "step_size": self.net.log_lr.detach().exp().mean()}

    def validate(self, chunk: int = 16) -> dict[str, float]:
        hits = {"edit_success": [], "rephrase_success": [], "locality": []}
        for start in range(0, len(self.valid), chunk):
            records = self.valid[start:start + chunk]
            count = len(records)
            unrelated = self._rows(records, 2)
            with torch.no_grad():
                base_hidden = self.run(unrelated)
            pieces = self._pieces(records, observe=False)
            with torch.no_grad():
                hidden, labels, _ = self._edited(records, pieces)
                for k, name in enumerate(("edit_success", "rephrase_success")):
                    hits[name] += _all_right(self.head, hidden[k * count:(k + 1) * count], labels[k * count:(k + 1) * count])
                before = _predictions(self.head, base_hidden, self.labels[unrelated, :base_hidden.shape[1]])
                after = _predictions(self.head, hidden[2 * count:], labels[2 * count:])
                hits["locality"] += [float((b == a).float().mean()) for b, a in zip(before, after)]
        return {name: sum(v) / max(1, len(v)) for name, v in hits.items()}


def _predictions(head, hidden: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    """Each row's most probable token at the positions that predict its labelled tokens."""
    out = []
    for row in range(hidden.shape[0]):
        where = (labels[row, 1:] != -100).nonzero(as_tuple=True)[0]
        out.append(head(hidden[row, where]).argmax(-1))
    return out


def _all_right(head, hidden: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """1.0 for each row whose every labelled token is the most probable one (teacher-forced), else 0.0."""
    predicted = _predictions(head, hidden, labels)
    return [float(bool((p == labels[row, 1:][labels[row, 1:] != -100]).all())) for row, p in enumerate(predicted)]


# -- editing with a trained archive -------------------------------------------------------------------------------


@dataclass
class MendConfig(MethodConfig):
    archive: str | None = field(default=None, metadata={"help": "The MEND archive to edit with: the path of a file `keditlab train` wrote, or the name of a training (its spec's `name:`, such as `train-mend`) whose newest archive in the cache for this model is taken. Empty: the newest in the cache trained for this model (`keditlab train specs/train/mend.yaml` makes one for the embedded model)."})
    edit_scale: float = field(default=1.0, metadata={"exclusive_minimum": 0, "help": "Multiplies the learned step sizes α: above 1 writes edits more strongly than training did."})


class Mend(EditMethod, name="mend", family="meta-learning", paper="Mitchell et al., ICLR 2022, arXiv:2110.11309",
           config_class=MendConfig, capabilities=Capabilities(batch=True, sequential=True), model_needs=("dense_mlp",)):
    """MEND (Mitchell et al., 2022): a network trained beforehand turns the fine-tuning gradient of the last MLPs into their edit.

    Needs a trained archive for the model (``keditlab train specs/train/mend.yaml``); see the module docstring.
    """

    trainer_class = MendTrainer
    train_config_class = MendTrainConfig
    refuses_moe = ("MEND transforms the gradient of one dense MLP output projection, token by token; a mixture-of-experts "
                   "layer's gradient is split among its experts by the router. Use ROME, MEMIT or a fine-tuning method instead.")

    def _apply(self, model, tokenizer, profile, cases, config: MendConfig, context: EditContext) -> EditHandle:
        path = find_archive(model, self.name, config.archive)
        archive, net = loaded_editor(model, path, self.name, lambda build: MendNet(
            build["in_width"], build["out_width"], len(build["edited_layers"]), build["rank"], 1.0))
        layers = list(archive["build"]["edited_layers"])
        modules = {layer: model.get_submodule(profile.mlp_out_module(layer)) for layer in layers}
        names = [f"{profile.mlp_out_module(layer)}.weight" for layer in layers]
        handle = EditHandle(self.name, model, self.snapshot(model, names))
        ids, mask, labels = masked_batch(tokenizer, cases, device_of(model))
        grab, store = _grab_pieces(modules)
        with trainable_only(model, []), torch.enable_grad(), hooks(forward=grab):
            hidden = model.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            loss = per_edit_nll(model.get_output_embeddings(), hidden, labels) * len(cases)
        with torch.no_grad():
            pieces = _transformed(net, layers, store, loss, mask, observe=False)
            for index, layer in enumerate(layers):
                u_t, d_t = pieces[layer]
                update = torch.einsum("bto,bti->oi", d_t.double(), u_t.double())   # Σ over edits and tokens of δ̃ ũᵀ
                rate = float(net.log_lr[index].exp()) * config.edit_scale
                profile.add_to_mlp_out(model, layer, -rate * update)
        handle.details = {"archive": str(path), "layers": layers, "trained_on": archive["training"].get("records"),
                          "update_norms": {name: round(n, 4) for name, n in handle.delta_norms().items()}}
        return handle

    @classmethod
    def plan(cls, profile, config, model=None) -> MethodPlan:
        layers = last_layers(profile.num_layers)
        return MethodPlan.mlp_out(profile, layers, backward_from=layers[0],
                                  notes=("edits with a network trained beforehand (`keditlab train`); the archive's layers "
                                         "are the last three unless its training named others",))
