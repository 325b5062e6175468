"""SERAC: edits kept in a memory beside an unchanged model, a trained scope classifier, a counterfactual model.

Mitchell, Lin, Bosselut, Manning and Finn, "Memory-Based Model Editing at
Scale", ICML 2022 (arXiv:2206.06520).

**The idea.**  Weight editors (ROME, MEND) write each edit into the model and
hope the change reaches the edit's paraphrases and spares everything else.
SERAC writes nothing into the model.  It keeps the edits, as text, in an
explicit memory, and answers every input in one of two ways:

1. a **scope classifier** ``g(e, x)`` gives, for the input ``x`` and each stored
   edit ``e``, the probability that ``x`` is *about* ``e`` (in its scope);
2. if the most probable edit is above a threshold, a **counterfactual model**
   answers ``x`` *given that edit*; otherwise the **base model** answers ``x``
   as if nothing had been edited: exactly as before, which is what locality
   asks for.

Both parts are trained beforehand, on many edits with their paraphrases and
unrelated inputs, and then reused for any later edit, any number of them:
adding an edit is appending a string to the memory, and undoing it is
removing the string.

**The paper's parts and keditlab's.**  In the paper the classifier is a
separate model (a DistilBERT cross-encoder reading edit and input together,
or, cheaper, a dense variant comparing their two embeddings), and the
counterfactual model is a separate sequence model (T5, BlenderBot) fine-tuned
to answer an input with the edit prepended.  Here, offline and on a CPU, with
no extra download:

* the classifier is the *dense* variant, on top of the **base model's own
  hidden states**: a text's embedding is the mean of its tokens' hidden states
  at the middle layer (:func:`~keditlab.methods.common.mean_hidden_states`,
  what IKE ranks its facts by), and a small trained head projects the edit's
  embedding and the input's each with its own linear map to ``dim`` values;
  their cosine similarity, times a learned scale plus a learned bias, plus a
  learned weight times whether the input names the edit's subject
  (:func:`names_subject`), is the logit of "in scope".  Mean hidden states
  alone cannot tell an edit's prompt from the same relation about another
  subject (CounterFact's neighbours), which the paper's cross-encoder learns
  by reading both texts together.  The base model is frozen, so the embeddings of every
  training text are computed once before training and each step is a few
  small matrix products (:class:`SeracTrainer`);
* the counterfactual model is **the base model itself, reading the edit
  first**: for an input in scope, :attr:`EditHandle.context` returns the
  retrieved edit written as ``template`` (by default the edit five times,
  ``"{prompt} {target}\\n"`` each), and the model continues after it
  (in-context, as IKE does, with one fact and no demonstrations).  Out of
  scope it returns ``""``: the model reads the input as it is, and answers bit
  for bit as before.  The template was chosen on training records
  (docs/methods.md, SERAC): a small model copies a fact it has read five
  times far more often than one read once, the more so where the fact
  contradicts what it knows (CounterFact).  The paper trains its
  counterfactual model instead.

**Training** (``keditlab train specs/train/serac.yaml``).  Binary
cross-entropy on pairs built from the training records.  For the edit
``prompt + target`` of a record, the positives are its own prompt and its
rephrasings; the negatives are its unrelated (locality) prompts, the prompts
and rephrasings of the other records of the batch, and *hard* negatives: the
prompts and rephrasings of the records whose edits the base model's
embedding finds nearest (mostly the same relation about another subject,
which is what CounterFact's neighbourhood prompts are).  Positives and
negatives are weighted equally (each class's mean loss), since negatives
outnumber positives many times.

**Several edits** (batch and sequential runs) are several entries in the
memory (``EditContext.memory["serac"]``); an input is given the one edit the
classifier finds most probable, if any is above the threshold, and
``restore()`` takes that call's edits out of the memory again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from keditlab.methods.archives import find_archive, loaded_editor
from keditlab.methods.base import Capabilities, EditContext, EditHandle, EditMethod, MethodConfig, MethodConfigError, MethodPlan
from keditlab.methods.common import mean_hidden_states
from keditlab.methods.training import EditorTrainer, TrainConfig
from keditlab.vocabulary import plain_text

#: How the retrieved edit is written before an input in its scope: five times (chosen on ZsRE's and CounterFact's
#: training records, docs/methods.md, SERAC).
TEMPLATE = "{prompt} {target}\n" * 5


class ScopeClassifier(torch.nn.Module):
    """``g(e, x)``: the logit that input ``x`` is in the scope of edit ``e``, from their two embeddings and one fact.

    The fact is whether ``x`` names ``e``'s subject (:func:`names_subject`: +1
    it does, -1 it does not, 0 the edit has no subject), weighted by a learned
    ``mention`` weight.  Mean hidden states hardly tell "The mother tongue of
    Danielle Darrieux is" from "Michel Rocard is a native speaker of": on
    CounterFact's neighbours the embeddings alone put 95% of them in scope
    (docs/methods.md).  The paper's cross-encoder, reading both texts together,
    learns the subject's identity; here it is given, and training sets its
    weight.  Archives trained before the fact existed build without it.
    """

    def __init__(self, width: int, dim: int, layer: int, mention: bool = True) -> None:
        super().__init__()
        self.width, self.dim, self.layer = width, dim, layer
        self.edit = torch.nn.Linear(width, dim)
        self.query = torch.nn.Linear(width, dim)
        with torch.no_grad():   # both sides start as the same random projection: cosines start near the embeddings' own
            self.query.weight.copy_(self.edit.weight)
            self.query.bias.copy_(self.edit.bias)
        self.log_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))
        self.bias = torch.nn.Parameter(torch.tensor(-5.0))
        self.mention = torch.nn.Parameter(torch.tensor(0.0)) if mention else None

    def keys(self, edits: torch.Tensor) -> torch.Tensor:
        """Projected, unit-length edit embeddings ``(edits, dim)``: what the memory compares inputs with."""
        return torch.nn.functional.normalize(self.edit(edits), dim=-1)

    def logits(self, keys: torch.Tensor, queries: torch.Tensor, named: torch.Tensor | None = None) -> torch.Tensor:
        """``(edits, inputs)`` logits of "in scope", from projected edit ``keys``, raw input embeddings and
        ``named`` (``(edits, inputs)`` of +1 / -1 / 0, :func:`names_subject`; None: all 0)."""
        projected = torch.nn.functional.normalize(self.query(queries), dim=-1)
        logits = self.log_scale.exp() * keys @ projected.T + self.bias
        if self.mention is not None and named is not None:
            logits = logits + self.mention * named
        return logits

    def forward(self, edits: torch.Tensor, queries: torch.Tensor, named: torch.Tensor | None = None) -> torch.Tensor:
        return self.logits(self.keys(edits), queries, named)

    def build(self) -> dict[str, Any]:
        return {"width": self.width, "dim": self.dim, "layer": self.layer, "mention": self.mention is not None}

    @classmethod
    def from_build(cls, build: dict[str, Any]) -> "ScopeClassifier":
        return cls(build["width"], build["dim"], build["layer"], mention=bool(build.get("mention", False)))


def names_subject(subjects: list[str], texts: list[str]) -> torch.Tensor:
    """``(subjects, texts)``: +1 where the text names the subject (case and spacing aside), -1 where not, 0 for no subject."""
    plain = [plain_text(t) for t in texts]
    return torch.tensor([[0.0 if not plain_text(s) else 1.0 if plain_text(s) in t else -1.0 for t in plain]
                         for s in subjects])


def edit_text(case: Any) -> str:
    """What the classifier reads of an edit: its prompt followed by its new target."""
    return f"{case.prompt} {case.target}"


# -- training ------------------------------------------------------------------------------------------------------


@dataclass
class SeracTrainConfig(TrainConfig):
    """SERAC's training settings (``train:`` with ``editor: serac``); defaults measured on the embedded model, docs/methods.md."""

    steps: int = field(default=500, metadata={"minimum": 1, "help": "Most optimiser steps (training also stops when `minutes` is spent). Validation peaked at 250-500 steps on ZsRE and on CounterFact, then the projections overfit."})
    batch_size: int = field(default=32, metadata={"minimum": 1, "help": "Training records per step: each record's edit is compared with every input of the batch."})
    lr: float = field(default=1e-3, metadata={"exclusive_minimum": 0, "help": "Adam's learning rate for the scope classifier's head."})
    validate_every: int = field(default=250, metadata={"minimum": 1, "help": "Steps between two measurements on the validation records."})
    dim: int = field(default=256, metadata={"minimum": 1, "help": "Width of the space the classifier projects edits and inputs into before comparing them."})
    layer: int | None = field(default=None, metadata={"help": "Layer whose hidden states (mean over a text's tokens) embed texts. Empty: the middle layer.", "layer_index": True})
    hard_negatives: int = field(default=4, metadata={"minimum": 0, "help": "Per record, the training records with the nearest edits (by the base model's embedding) whose prompts and rephrasings are added as negatives."})
    threshold: float = field(default=0.5, metadata={"exclusive_minimum": 0, "exclusive_maximum": 1, "help": "Probability above which the validation figures count an input as in scope (the method's own `threshold` decides when editing)."})


class SeracTrainer(EditorTrainer):
    """Trains the scope classifier's head on embeddings computed once from the frozen model (module docstring)."""

    editor = "serac"

    def __init__(self, model, tokenizer, profile, records: list[Any], validation: list[Any], config: SeracTrainConfig) -> None:
        self.config = config
        self.layer = profile.num_layers // 2 if config.layer is None else config.layer
        usable = [c for c in records + validation if c.prompt and c.target]
        train_ids = {id(c) for c in records}
        self.skipped = len(records) + len(validation) - len(usable)
        self.train = [i for i, c in enumerate(usable) if id(c) in train_ids]
        self.valid = [i for i, c in enumerate(usable) if id(c) not in train_ids]
        if not self.train:
            raise ValueError("serac: no training record has a prompt and a target. Fix: train on ZsRE or CounterFact records.")
        texts: dict[str, int] = {}

        def index(text: str) -> int:
            return texts.setdefault(text, len(texts))
        self.edits = [index(edit_text(c)) for c in usable]
        #: per record: the inputs in its scope (prompt, rephrasings) and its own unrelated inputs
        self.inside = [sorted({index(c.prompt), *(index(r) for r in c.rephrase if r)}) for c in usable]
        self.unrelated = [sorted({index(p.prompt) for p in c.locality if p.prompt} - set(self.inside[i]))
                          for i, c in enumerate(usable)]
        torch.manual_seed(config.seed)
        self._texts = texts
        self._text_of = list(texts)
        self.subjects = [c.subject or "" for c in usable]
        self.embeddings = mean_hidden_states(model, tokenizer, self.layer, list(texts), blocks=profile.layers).clone()   # out of inference mode
        self.net = ScopeClassifier(self.embeddings.shape[1], config.dim, self.layer)
        self.nearest = self._nearest_records(config.hard_negatives)

    def _nearest_records(self, k: int) -> dict[int, list[int]]:
        """For each record, the ``k`` other records of its own split whose edits the base embedding finds nearest."""
        nearest: dict[int, list[int]] = {}
        for split in (self.train, self.valid):
            if k == 0 or len(split) < 2:
                nearest.update({r: [] for r in split})
                continue
            keys = self.embeddings[[self.edits[r] for r in split]]
            scores = keys @ keys.T
            scores.fill_diagonal_(-math.inf)
            chosen = scores.topk(min(k, len(split) - 1), dim=1).indices
            nearest.update({r: [split[j] for j in row] for r, row in zip(split, chosen.tolist())})
        return nearest

    @property
    def num_records(self) -> int:
        return len(self.train)

    def __enter__(self) -> "SeracTrainer":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.net.parameters())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state)

    def build(self) -> dict[str, Any]:
        """How to build the classifier again: its sizes and the layer its embeddings are read at."""
        return self.net.build()

    def _pairs(self, records: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch's edits, every input the batch brings (each record's own, its nearest records'), and their labels."""
        neighbours = [n for r in records for n in self.nearest[r]]
        queries = sorted({t for r in records + neighbours for t in self.inside[r] + self.unrelated[r]})
        column = {t: j for j, t in enumerate(queries)}
        labels = torch.zeros(len(records), len(queries))
        for i, r in enumerate(records):
            labels[i, [column[t] for t in self.inside[r]]] = 1.0
        return torch.tensor([self.edits[r] for r in records]), torch.tensor(queries), labels

    def _named(self, records: list[int], queries: list[int]) -> torch.Tensor:
        return names_subject([self.subjects[r] for r in records], [self._text_of[q] for q in queries])

    def _logits(self, records: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        edits, queries, labels = self._pairs(records)
        named = self._named(records, queries.tolist())
        return self.net(self.embeddings[edits], self.embeddings[queries], named), labels

    def loss(self, records: list[int]) -> dict[str, torch.Tensor]:
        logits, labels = self._logits([self.train[i] for i in records])
        each = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        positive, negative = each[labels == 1].mean(), each[labels == 0].mean()
        figures = {"loss": positive + negative, "positive_bce": positive.detach(), "negative_bce": negative.detach(),
                   "scale": self.net.log_scale.detach().exp()}
        if self.net.mention is not None:
            figures["mention"] = self.net.mention.detach()
        return figures

    def validate(self) -> dict[str, float]:
        """With all validation edits stored at once: how often each kind of input gets the right answer from the memory.

        ``in_scope``: a prompt or rephrasing is given its own edit (the most probable, above the threshold);
        ``unrelated_out``: an unrelated prompt is given no edit at all.
        """
        if not self.valid:
            return {}
        threshold = math.log(self.config.threshold / (1 - self.config.threshold))
        with torch.no_grad():
            keys = self.net.keys(self.embeddings[[self.edits[r] for r in self.valid]])
            hits, rejected = [], []
            for row, r in enumerate(self.valid):
                inside = self.net.logits(keys, self.embeddings[self.inside[r]], self._named(self.valid, self.inside[r]))
                best = inside.max(0)
                hits += [float(i == row and v > threshold) for i, v in zip(best.indices.tolist(), best.values.tolist())]
                if self.unrelated[r]:
                    outside = self.net.logits(keys, self.embeddings[self.unrelated[r]],
                                              self._named(self.valid, self.unrelated[r])).max(0).values
                    rejected += (outside <= threshold).float().tolist()
        return {"in_scope": sum(hits) / max(1, len(hits)), "unrelated_out": sum(rejected) / max(1, len(rejected))}


# -- editing with a trained archive -------------------------------------------------------------------------------


@dataclass
class SeracConfig(MethodConfig):
    archive: str | None = field(default=None, metadata={"help": "The SERAC archive to edit with: the path of a file `keditlab train` wrote, or the name of a training (its spec's `name:`, such as `train-serac`) whose newest archive in the cache for this model is taken. Empty: the newest in the cache trained for this model (`keditlab train specs/train/serac.yaml` makes one for the embedded model)."})
    threshold: float = field(default=0.5, metadata={"exclusive_minimum": 0, "exclusive_maximum": 1, "help": "Scope probability above which an input is answered with the stored edit before it; below, the model reads it unchanged."})
    template: str = field(default=TEMPLATE, metadata={"help": "How the retrieved edit is written before an input in its scope, with {prompt} and {target}. The default writes `{prompt} {target}` five times, each on its own line: a small model copies a fact read five times far more often than one read once (docs/methods.md, SERAC)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            self.template.format(prompt="", target="")
        except (KeyError, IndexError, ValueError) as err:
            raise MethodConfigError(
                f"template: {self.template!r} is not a template of {{prompt}} and {{target}} ({type(err).__name__}: {err}). "
                f"Fix: write the edit with those two fields only, e.g. {TEMPLATE!r}.") from None


@dataclass(eq=False)   # compared by identity: two stored edits of the same text are still two
class _Edit:
    prompt: str
    target: str
    key: torch.Tensor    # the classifier's projection of the edit's embedding
    subject: str = ""


class Serac(EditMethod, name="serac", family="memory", paper="Mitchell et al., ICML 2022, arXiv:2206.06520",
            config_class=SeracConfig,
            capabilities=Capabilities(batch=True, sequential=True, changes_weights=False, saveable=False), model_needs=()):
    """SERAC (Mitchell et al., 2022): edits in a memory; a trained scope classifier puts the right one before inputs about it.

    Needs a trained archive for the model (``keditlab train specs/train/serac.yaml``); see the module docstring.
    """

    trainer_class = SeracTrainer
    train_config_class = SeracTrainConfig

    #: Tokens one stored edit adds before an input in its scope, about (the default template writes it five times).
    TOKENS_PER_EDIT = 100

    @classmethod
    def plan(cls, profile, config: SeracConfig, model=None) -> MethodPlan:
        """No weight; an input in an edit's scope grows by that edit, and the memory holds one projected key per edit."""
        return MethodPlan(changes_weights=False, extra_tokens=cls.TOKENS_PER_EDIT,
                          notes=("edits with a scope classifier trained beforehand (`keditlab train`); the model reads the "
                                 "retrieved edit before an input in its scope, and every other input unchanged",))

    def _apply(self, model, tokenizer, profile, cases, config: SeracConfig, context: EditContext) -> EditHandle:
        path = find_archive(model, self.name, config.archive)
        archive, net = loaded_editor(model, path, self.name,
                                     ScopeClassifier.from_build)
        layer = int(archive["build"]["layer"])
        if layer >= profile.num_layers:
            raise MethodConfigError(f"serac: {path} reads layer {layer}, and this model has {profile.num_layers} layers. "
                                    "Fix: train a SERAC archive for this model (keditlab train specs/train/serac.yaml).")
        cache: dict[str, torch.Tensor] = context.memory.setdefault("serac-embeddings", {}).setdefault(layer, {})

        def embed(texts: list[str]) -> torch.Tensor:
            missing = [t for t in dict.fromkeys(texts) if t not in cache]
            if missing:
                cache.update(zip(missing, mean_hidden_states(model, tokenizer, layer, missing, blocks=profile.layers)))
            return torch.stack([cache[t] for t in texts])

        memory: list[_Edit] = context.memory.setdefault(self.name, [])
        with torch.no_grad():
            keys = net.keys(embed([edit_text(c) for c in cases]))
        new = [_Edit(c.prompt, c.target, key, c.subject or "") for c, key in zip(cases, keys)]
        memory.extend(new)

        def forget() -> None:
            for edit in new:
                memory.remove(edit)

        cut = math.log(config.threshold / (1 - config.threshold))

        def scope(prompt: str) -> tuple[_Edit | None, float]:
            """The stored edit most probably about ``prompt``, and that probability (None: the memory is empty)."""
            if not memory:
                return None, 0.0
            with torch.no_grad():
                logits = net.logits(torch.stack([e.key for e in memory]), embed([prompt]),
                                    names_subject([e.subject for e in memory], [prompt]))[:, 0]
            best = int(logits.argmax())
            return memory[best], float(logits[best])

        def context_for(prompt: str) -> str:
            edit, logit = scope(prompt)
            if edit is None or logit <= cut:
                return ""
            return config.template.format(prompt=edit.prompt.strip(), target=edit.target.strip())

        handle = EditHandle(self.name, model, originals={}, on_restore=[forget], context=context_for)
        handle.details = {"archive": str(path), "edits_stored": len(memory), "layer": layer,
                          "trained_on": archive["training"].get("records")}
        return handle
