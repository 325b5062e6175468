"""GRACE: a discrete key-value codebook beside one layer, for lifelong editing.

Hartvigsen, Sankaranarayanan, Palangi, Kim and Ghassemi, "Aging with GRACE:
Lifelong Model Editing with Discrete Key-Value Adaptors", NeurIPS 2023
(arXiv:2211.11031).

The weights are never touched.  GRACE hangs a *codebook* on one module (here
the MLP output projection of one layer) and lets it answer for inputs it has
seen edits for:

* **Keys.**  The module's input (the MLP activation) at the positions that
  predict the answer: the edit prompt's last token, and each answer token
  but the last (see below).
* **Values.**  For each key, a vector that *replaces* the module's output there.
  It is found by gradient descent, with the model frozen: starting from the
  module's own output, it is moved until the model, reading the prompt and the
  target (teacher forcing), predicts every target token.
* **Deferral radius ε.**  Each entry covers a ball around its key.  At inference
  every token's input is compared with the keys; a token whose input lies
  within the radius of its nearest key gets that key's value, any other token
  passes through untouched.  That is what keeps unrelated inputs unchanged.

The codebook grows edit by edit, as in the paper: a new key farther than
``ε_nearest + ε_new`` from every key opens a new entry; a key that falls near an
entry *with the same answer* widens that entry to cover it (and its value is
trained on the new prompt too); near an entry with a *different* answer, a new
entry is opened and both radii shrink to half their distance, so the two balls
no longer overlap.  (Editing the very same prompt again with a new answer
overwrites that entry.)

Which tokens the value replaces (a choice the paper leaves to its code).
Every token is looked up by its *own* key, and a token whose key falls in a
ball gets that entry's value; nowhere else is anything replaced.  An edit
writes one entry at *every position that predicts a target token*: the
prompt's last token (which predicts the first target token) and each target
token but the last, each labelled with the token it must predict.  Their
values are trained together, with teacher forcing, so the model reads prompt
+ target and predicts every target token.  The keys at the edited layer do not
depend on the adaptor (it acts on the layer's output, after the key is read),
so a teacher-forced check, generation with a KV cache and generation without
one all meet the same keys and see the same edited model.  (With a single
entry at the prompt's last token, the target's later tokens only see the edit
through attention, and reliability on 20 ZsRE edits was 0.75; the reference
toolkit takes the key at the *sequence's* last token, so a teacher-forced
check looks up the last target token, misses, and reliability falls.)

Defaults are derived from the model's shape and measured on the embedded model
with real ZsRE records (``docs/methods.md``): the layer at 80% of the depth,
and ε as a fraction of the key's own norm.

How far a new ball reaches (keditlab's, not the paper's).  A share of the
key's norm alone did not transfer from SmolLM2 to Gemma 3: at Gemma's layer
14 the keys of prompts that state *other* facts in the same words lie closer,
relative to the norm (CounterFact's neighbourhood prompts: 28% of them fell
inside a ball of half the key's norm on Gemma, 13% on SmolLM2).  So a new
entry's radius also stays under ``reference_share`` of the distance from its
key to the nearest key of 96 reference prompts about other facts (the facts
shipped for IKE, read at the same layer once per run).  Measured on
records no setting was chosen on, that rule leaves the ZsRE rephrasings a ball
covers as they were on both models and halves the neighbourhood prompts inside
on Gemma (``docs/models.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from keditlab.methods.adaptors import Adaptor, AdaptorMethod, AdaptorSite, adaptor_layer_setting, find_or_install, own_output, upper_passes
from keditlab.methods.base import EditContext, EditHandle, MethodConfig, MethodPlan
from keditlab.methods.common import shipped_fact_prompts, trainable_only
from keditlab.models.sampling import device_of
from keditlab.methods.keyvalue import read_at_subjects
from keditlab.methods.progress import progress_cases
from keditlab.models.hooks import hooks
from keditlab.models.tokens import encode_answer, encode_prompt


@dataclass
class GraceConfig(MethodConfig, AdaptorSite):
    layer: int | None = adaptor_layer_setting("codebook")
    radius: float = field(
        default=0.5,
        metadata={"exclusive_minimum": 0, "help": "Deferral radius ε of a new entry, as a fraction of its key's norm: a token whose MLP activation "
                  "lies within ε of the key gets the entry's value. Larger: rephrasings are covered more often, unrelated text is hit more often."},
    )
    reference_share: float = field(
        default=0.6,
        metadata={"minimum": 0, "maximum": 1,
                  "help": "keditlab's: a new entry's radius also stays under this share of the distance from its key to the nearest key of 96 "
                          "reference prompts about other facts (the facts shipped for IKE), so that a ball stops short of prompts that state "
                          "other facts in the same words. 0: radius × the key's norm alone."},
    )
    steps: int = field(default=50, metadata={"minimum": 1, "help": "Most Adam steps for an entry's value."})
    lr: float = field(default=1.0, metadata={"exclusive_minimum": 0, "help": "Adam learning rate for the values of an edit's entries."})
    early_stop_loss: float = field(default=0.05, metadata={"minimum": 0, "help": "A value's optimisation stops once every target token is the most probable one and the target's mean negative log-likelihood is below this."})



class GraceCodebook(Adaptor):
    """The codebook: keys ``(n, in)``, values ``(n, out)``, radii ``(n,)`` and the answer each entry was trained for."""

    def __init__(self, layer: int, in_width: int, out_width: int, device: torch.device) -> None:
        super().__init__(layer)
        self.register_buffer("keys", torch.zeros(0, in_width, device=device), persistent=False)
        self.register_buffer("values", torch.zeros(0, out_width, device=device), persistent=False)
        self.register_buffer("radii", torch.zeros(0, device=device), persistent=False)
        self.labels: list[str] = []
        self.training_values: tuple[torch.Tensor, torch.Tensor] | None = None   # (entries, their values being optimised)

    def __len__(self) -> int:
        return len(self.labels)

    def extra_repr(self) -> str:
        return f"layer={self.layer}, entries={len(self)}"

    def build_args(self) -> dict[str, Any]:
        return {"in_width": self.keys.shape[1], "out_width": self.values.shape[1]}

    def saved_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {"keys": self.keys, "values": self.values, "radii": self.radii}, {"labels": list(self.labels)}

    def load_state(self, tensors: dict[str, torch.Tensor], facts: dict[str, Any]) -> None:
        device = self.keys.device
        self.keys, self.values, self.radii = (tensors[k].to(device) for k in ("keys", "values", "radii"))
        self.labels = list(facts["labels"])

    def lookup(self, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For keys ``(..., in)``: the nearest entry, the distance to it, and whether it is inside that entry's radius."""
        flat = key.reshape(-1, key.shape[-1]).float()
        distance, nearest = torch.cdist(flat, self.keys).min(dim=1)
        return nearest, distance, distance <= self.radii[nearest]

    def adapt(self, key: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        if len(self) == 0:
            return output
        nearest, _, inside = self.lookup(key)
        if not bool(inside.any()):
            return output
        values = self.values
        if self.training_values is not None:
            entries, trained = self.training_values
            values = values.index_put((entries,), trained)   # out of place: gradients reach the trained values
        flat = output.reshape(-1, output.shape[-1])
        return torch.where(inside[:, None], values[nearest].to(output.dtype), flat).reshape(output.shape)

    def add(self, key: torch.Tensor, value: torch.Tensor, radius: float, label: str) -> int:
        self.keys = torch.cat([self.keys, key[None].to(self.keys)])
        self.values = torch.cat([self.values, value[None].to(self.values)])
        self.radii = torch.cat([self.radii, torch.tensor([radius], device=self.radii.device)])
        self.labels.append(label)
        return len(self) - 1


class Grace(AdaptorMethod, name="grace", paper="Hartvigsen et al., NeurIPS 2023, arXiv:2211.11031",
            config_class=GraceConfig, adaptor_class=GraceCodebook, adaptor_noun="codebook"):
    """A key-value codebook with deferral radii beside one layer (Hartvigsen et al., 2023)

    The module docstring explains the codebook's rules (:mod:`keditlab.methods.grace`).
    """

    @classmethod
    def plan(cls, profile, config: GraceConfig, model=None) -> MethodPlan:
        """No weight; per target token at most one codebook entry (key, value, radius), its value trained from the layer up."""
        layer = config.resolved_layer(profile.num_layers)
        entry = profile.mlp_size + profile.hidden_size + 1
        return MethodPlan(layers=(layer,), changed=((f"codebook entry per target token at {profile.mlp_out_module(layer)}", entry),),
                          changes_weights=False, copied=0, trained=profile.hidden_size, backward_from=layer)

    def _edit_at(self, model, tokenizer, profile, layer, module_name, cases, config: GraceConfig, context: EditContext,
                 handle: EditHandle) -> dict[str, Any]:
        device = device_of(model)
        codebook, _ = find_or_install(model, module_name, self.name, layer,
                                      lambda: GraceCodebook(layer, profile.mlp_out_input_size, profile.hidden_size, device), GraceCodebook)
        # Undo record: entries appended after `count` are dropped, radii and the entries changed in place put back.
        count, radii = len(codebook), codebook.radii.clone()
        changed: dict[int, tuple[torch.Tensor, str]] = {}

        def undo() -> None:
            for entry, (value, label) in changed.items():
                codebook.values[entry] = value
                codebook.labels[entry] = label
            codebook.keys, codebook.values = codebook.keys[:count], codebook.values[:count]
            codebook.radii, codebook.labels = radii, codebook.labels[:count]

        codebook.push(handle, undo)
        module = model.get_submodule(module_name)
        reference = _reference_keys(model, tokenizer, module, module_name, context) if config.reference_share > 0 else None
        details: list[dict[str, Any]] = []
        for case in progress_cases(context, cases, f"{self.name}: edits"):
            prompt, target = encode_prompt(tokenizer, case.prompt), encode_answer(tokenizer, case.target)
            keys, outputs = _read(model, module, prompt, target, device)
            placed = [self._place(codebook, key, output, tokenizer.decode([token]), self._new_radius(key, reference, config), changed)
                      for key, output, token in zip(keys, outputs, target)]
            entries = sorted({entry for entry, _, _ in placed})
            info = _train_values(model, profile, codebook, entries, prompt, target, config)
            details.append({"case_id": case.case_id, "entries": [entry for entry, _, _ in placed],
                            "actions": [action for _, action, _ in placed],
                            "distances": [None if d is None else round(d, 3) for _, _, d in placed],
                            "radii": [round(float(codebook.radii[entry]), 3) for entry, _, _ in placed],
                            "key_norms": [round(float(k), 3) for k in keys.norm(dim=1)], **info})
        return {"entries": len(codebook), "cases": details}

    @staticmethod
    def _new_radius(key: torch.Tensor, reference: torch.Tensor | None, config: GraceConfig) -> float:
        """ε of a new entry at ``key``: ``radius`` × its norm, kept under ``reference_share`` of the way to the nearest ``reference`` key."""
        radius = config.radius * float(key.norm())
        if config.reference_share > 0 and reference is not None:
            distances = (reference - key).norm(dim=1)
            distances = distances[distances > 1e-3 * float(key.norm())]   # a reference prompt that is the edit's own prompt
            if len(distances):
                radius = min(radius, config.reference_share * float(distances.min()))
        return radius

    @staticmethod
    def _place(codebook: GraceCodebook, key: torch.Tensor, output: torch.Tensor, label: str, radius: float,
               changed: dict[int, tuple[torch.Tensor, str]]) -> tuple[int, str, float | None]:
        """Put the new key, with ``radius`` if it opens an entry, in the codebook (the paper's rules); return the entry to train."""
        if len(codebook) == 0:
            return codebook.add(key, output, radius, label), "added", None
        nearest, distance, _ = codebook.lookup(key)
        nearest, distance = int(nearest[0]), float(distance[0])
        if distance > float(codebook.radii[nearest]) + radius:          # far from every ball: a new entry
            return codebook.add(key, output, radius, label), "added", distance
        changed.setdefault(nearest, (codebook.values[nearest].clone(), codebook.labels[nearest]))
        if codebook.labels[nearest] == label:                          # same answer: widen the ball to cover the key
            if distance > float(codebook.radii[nearest]):
                codebook.radii[nearest] = distance
                return nearest, "expanded", distance
            return nearest, "covered", distance
        if distance <= 1e-3 * float(key.norm()):                        # the same prompt with a new answer: overwrite
            codebook.labels[nearest] = label
            return nearest, "overwritten", distance
        codebook.radii[nearest] = distance / 2                          # a conflict: a new entry, both balls split
        return codebook.add(key, output, distance / 2, label), "split", distance


def _reference_keys(model, tokenizer, module, module_name: str, context: EditContext) -> torch.Tensor:
    """The keys of the shipped facts' prompts at ``module``, each at its last token: float32 ``(96, in)``.

    Read once per run and module (``context.memory``, one-off set-up): GRACE changes no weight, so the keys
    at its layer stay what they were for every edit of the run (a few seconds on the embedded model and a CPU).
    """
    cache = context.memory.setdefault("grace-reference", {})
    if module_name not in cache:
        with context.setup():
            texts = list(shipped_fact_prompts())
            cache[module_name] = read_at_subjects(model, tokenizer, texts, [len(encode_prompt(tokenizer, t)) - 1 for t in texts], module)[0]
    return cache[module_name]


def _read(model, module, prompt: list[int], target: list[int], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and the module's own outputs at the positions that predict the target's tokens.

    The model reads prompt + target (all but its last token); the positions are
    the prompt's last token and each target token but the last.  Returns float32
    ``(len(target), in)`` keys and ``(len(target), out)`` outputs.
    """
    seen: dict[str, torch.Tensor] = {}
    columns = slice(len(prompt) - 1, len(prompt) - 1 + len(target))

    def grab(_module, inputs, _output):
        seen["key"] = inputs[0][0, columns].detach()

    with hooks(forward=[(module, grab)]), torch.no_grad():
        model(input_ids=torch.tensor([prompt + target[:-1]], device=device), use_cache=False)
        output = own_output(module, seen["key"])   # the module alone, without the adaptor's hook
    return seen["key"].float(), output.float()


def _train_values(model, profile, codebook: GraceCodebook, entries: list[int], prompt: list[int], target: list[int],
                  config: GraceConfig) -> dict[str, Any]:
    """Optimise the values of ``entries`` together so the model, reading prompt + target, predicts every target token."""
    device = device_of(model)
    ids = torch.tensor([prompt + target[:-1]], device=device)
    mask = torch.ones_like(ids)
    columns = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(target), device=device)
    answer = torch.tensor(target, device=device)
    index = torch.tensor(entries, device=device)
    trained = codebook.values[index].clone().requires_grad_(True)
    optimiser = torch.optim.Adam([trained], lr=config.lr)
    lm_head = model.get_output_embeddings()
    losses: list[float] = []
    codebook.training_values = (index, trained)
    try:
        with trainable_only(model), upper_passes(model, profile.layers, codebook.layer, ids, mask) as run:
            for _step in range(config.steps):
                logits = lm_head(run()[0, columns]).float()
                loss = torch.nn.functional.cross_entropy(logits, answer)
                losses.append(float(loss.detach()))
                if losses[-1] < config.early_stop_loss and bool((logits.argmax(-1) == answer).all()):
                    break
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    finally:
        codebook.training_values = None
    with torch.no_grad():
        codebook.values[index] = trained.detach()
    return {"steps": len(losses), "loss_first": round(losses[0], 4), "loss_last": round(losses[-1], 4)}
