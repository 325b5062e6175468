"""T-Patcher: trainable neurons added to the last feed-forward layer, one per mistake.

Huang, Shen, Zhang, Zhou, Rong and Xiong, "Transformer-Patcher: One Mistake
Worth One Neuron", ICLR 2023 (arXiv:2301.09785).

**The idea.**  A feed-forward layer reads its input ``q`` (one token's hidden
state) and writes ``Σᵢ act(q·kᵢ + bᵢ) vᵢ``: a sum over its neurons, each a key
``kᵢ`` that decides how strongly the neuron fires and a value ``vᵢ`` that says
what it writes when it does (Geva et al.'s key-value memories).  T-Patcher
fixes a mistake by giving the layer one more neuron, a *patch*: a key ``k``, a
bias ``b`` and a value ``v``, so that the layer writes

    FFN(q) + act(a(q)) · v,      a(q) = q·k + b   (the neuron's activation)

and leaves every weight of the model as it is.  A stream of edits adds neuron
after neuron, each trained once and then frozen (the paper's *sequential model
editing*); restoring an edit takes its neurons out again.

**One mistake, one neuron.**  For a model that writes its answer token by
token, the paper's code counts a mistake per target token: an edit adds one
neuron for each target token the model (with the neurons already added) does
not predict, at most ``max_neurons`` (5, as the paper's code), and none if the
model already says the whole target.  Neuron ``i`` belongs to the position
that predicts its token (the prompt's last token for the first, the token
before it for a later one), and its key starts as that position's query ``qᵢ``
divided by ``‖qᵢ‖²``, so that it fires with activation 1 there.

**Training** (the paper's three losses; the model and the earlier neurons stay
frozen, only the new neurons' keys, biases and values move):

* the *edit loss*: the target's negative log-likelihood, teacher-forced (the
  model reads prompt + target and is scored on every target token);
* the *activation loss* ``l_a = mean over the new neurons of exp(−a(qᵢ))``:
  each fires at its own position;
* the *memory loss* ``l_m = mean over the memory and the new neurons of
  exp(a(qₘ) − β) + exp(a(qₘ) − a(qᵢ) + γ)``: on the memory (queries of unrelated
  text, and of every earlier edit of the stream) a neuron's activation stays
  below the threshold ``β`` (``−memory_margin``) and at least ``γ``
  (``edit_margin``) below its own position's;

and the new neurons minimise ``edit loss + activation_weight · l_a + memory_weight · l_m``.
Activations are in the neuron's own unit (1 at its position at the start), so
``β`` and ``γ`` mean the same on every model.

**Why the last layer, and which positions.**  A neuron in the last layer
changes the logits only at the positions where it fires: no later layer
carries its value anywhere else.  So what an edit changes is exactly where its
neurons fire: the positions that predict its target's tokens, which a
teacher-forced check, generation with a KV cache and generation without one
all read alike (GRACE writes at the same positions, :mod:`keditlab.methods.grace`).
The queries a neuron must stay silent on are read at every token of the
unrelated texts, and at every position of an earlier edit that predicts one of
its target's tokens (whether or not it got a neuron there).

**What is keditlab's, and why** (measured on the embedded model with ZsRE and
CounterFact records 0-49, ``docs/methods-log.md``):

* *The key reads the feed-forward block's input*, the paper's query: the
  adaptor hangs on the whole MLP module (:func:`~keditlab.methods.adaptors.ffn_module`:
  the parent of the MLP output projection, or the MoE block) and adds the
  neurons' output to the block's.  OPT keeps its feed-forward layers in the
  decoder layer itself, with no MLP module; there the neurons sit on the output
  projection and their keys read the FFN's inner activation, a function of the
  same input.
* *ReLU as the neurons' activation*: a neuron whose activation is below zero
  adds exactly nothing, so wherever the memory loss holds, the model's output
  is its own.  (The paper uses the layer's own activation, GELU for BART, only
  nearly zero below zero; a gated Llama MLP has no single activation.)
* *The memory is sampled, not a training set*: the paper keeps queries of its
  task's training data; keditlab reads ``unrelated`` short texts sampled from the
  model before the stream's first edit (as GRACE and WISE do), or the
  questions of the spec's ``stats.unrelated`` when given, plus (with
  ``reference_facts``) the 96 prompts of other facts shipped for IKE: prompts
  shaped like edits, which is where a neuron fires wrongly most easily (on
  CounterFact's neighbourhood prompts).  Each edit adds its queries, as the
  paper adds its fixed mistakes.
* *The keys first, then together*: the activation and memory losses depend
  only on the keys, biases and queries read once, so they are first minimised
  alone (``key_steps``, no forward pass), until every new neuron fires at its
  position at least as strongly as at the start and no memory query
  activates it; then all three losses together (``steps``, each running the
  patched layer and those above it).  The joint training stops once every
  target token is the most probable one, every new neuron still fires at its
  position, and (if the keys reached it) no memory query activates one.  An
  earlier edit of the *same question* with another answer (ZsRE has such
  records) may leave no key that separates the two; then the joint training
  runs its ``steps``, and a neuron the memory loss silenced at its own
  position gets its bias raised until it fires there with activation 1: the
  edit comes first, and the neuron then also fires on what it could not be
  told apart from.
* *Step sizes set from the layer*: Adam moves every entry by about its rate,
  so the rates are shares of each part's own size: a key's starting norm, the
  block's median output norm (on the unrelated text) for a value.

Several edits in one call are written one after another, exactly as the same
edits in a stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from keditlab.methods.adaptors import (Adaptor, AdaptorMethod, answer_positions, ffn_module, find_or_install,
                                       host_input_width, read_inputs, unrelated_positions, upper_passes)
from keditlab.methods.base import EditContext, EditHandle, MethodConfig, MethodPlan
from keditlab.methods.common import shipped_fact_prompts, trainable_only
from keditlab.methods.layers import last_layer
from keditlab.methods.progress import progress_cases
from keditlab.models.sampling import device_of
from keditlab.models.tokens import encode_answer, encode_prompt

#: Tokens of one unrelated text or shipped prompt, about: for the plan's estimate of the memory.
TOKENS_PER_TEXT = 14


@dataclass
class TPatcherConfig(MethodConfig):
    layer: int | None = field(
        default=None,
        metadata={"help": "Layer whose feed-forward block gets the neurons. Empty: the last layer, as in the paper (a neuron there "
                          "changes the logits only where it fires).", "layer_index": True},
    )
    max_neurons: int = field(default=5, metadata={"minimum": 1, "help": "Most neurons one edit adds: one per target token the model gets wrong, "
                                                                        "the first ones if there are more (5, as the paper's code)."})
    key_steps: int = field(default=300, metadata={"minimum": 0, "help": "Most Adam steps for the keys and biases alone (activation and memory losses, "
                                                                        "no forward pass) before the joint training."})
    steps: int = field(default=50, metadata={"minimum": 1, "help": "Most Adam steps of the joint training (the edit loss too: each step runs the "
                                                                   "patched layer and those above it)."})
    key_lr: float = field(default=1.0, metadata={"exclusive_minimum": 0, "help": "Adam's step for a key as a share of its starting norm "
                                                                                 "(per entry: divided by the square root of its width), and for a bias in activation units."})
    lr: float = field(default=0.1, metadata={"exclusive_minimum": 0, "help": "Adam's step for a value as a share of the block's median output norm "
                                                                             "(per entry: divided by the square root of its width)."})
    activation_weight: float = field(default=1.0, metadata={"minimum": 0, "help": "Weight of the activation loss, which makes each neuron fire at its position."})
    memory_weight: float = field(default=5.0, metadata={"minimum": 0, "help": "Weight of the memory loss, which keeps the neurons silent on unrelated input and on earlier edits."})
    memory_margin: float = field(default=3.0, metadata={"minimum": 0, "help": "On the memory a neuron's activation is pushed below minus this "
                                                                              "(the paper's threshold β = −3), in the neuron's unit: 1 is its activation at its "
                                                                              "position at the start, and below 0 it adds nothing."})
    edit_margin: float = field(default=3.0, metadata={"minimum": 0, "help": "On the memory a neuron's activation is also pushed at least this far below its "
                                                                            "activation at its position (the paper's γ = 3; same unit)."})
    unrelated: int = field(default=32, metadata={"minimum": 1, "help": "Short texts sampled from the model (or questions of stats.unrelated, when the "
                                                                        "spec gives them) whose queries the neurons must stay silent on."})
    reference_facts: bool = field(default=True, metadata={"help": "Also hold the neurons silent on the 96 prompts of other facts shipped for IKE "
                                                                  "(every token): prompts shaped like edits, where a neuron fires wrongly most easily."})

    def resolved_layer(self, num_layers: int) -> int:
        """The patched layer: ``layer``, or the last (:func:`~keditlab.methods.layers.last_layer`)."""
        return last_layer(num_layers) if self.layer is None else self.layer


class NeuronPatches(Adaptor):
    """The neurons added to one feed-forward block: keys ``(n, in)``, biases ``(n,)``, values ``(n, out)``, and the memory.

    The memory is what a new neuron must stay silent on: ``unrelated``
    queries read before the first edit, and ``edit_queries``, the queries at
    every edit's positions (those that predict its target's tokens).
    ``labels[i]`` is the target token neuron ``i`` was added for.
    ``value_scale`` is the median norm of what the block writes on the
    unrelated text: the size a value is trained against.
    """

    def __init__(self, layer: int, in_width: int, out_width: int, device: torch.device) -> None:
        super().__init__(layer)
        for name, shape in (("keys", (0, in_width)), ("biases", (0,)), ("values", (0, out_width)),
                            ("unrelated", (0, in_width)), ("edit_queries", (0, in_width))):
            self.register_buffer(name, torch.zeros(shape, device=device), persistent=False)
        self.labels: list[str] = []
        self.value_scale = 1.0
        self.training_neurons: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None   # (keys, biases, values) being trained

    def __len__(self) -> int:
        return len(self.labels)

    def extra_repr(self) -> str:
        return f"layer={self.layer}, neurons={len(self)}, memory={len(self.unrelated) + len(self.edit_queries)}"

    def memory(self) -> torch.Tensor:
        """Every query a new neuron must stay silent on: the unrelated ones and the earlier edits' (float32 ``(m, in)``)."""
        return torch.cat([self.unrelated, self.edit_queries])

    # -- saving (keditlab.methods.saved) ------------------------------------------------------
    def build_args(self) -> dict[str, Any]:
        return {"in_width": self.keys.shape[1], "out_width": self.values.shape[1]}

    def saved_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {name: getattr(self, name) for name in ("keys", "biases", "values", "unrelated", "edit_queries")}
        return tensors, {"labels": list(self.labels), "value_scale": self.value_scale}

    def load_state(self, tensors: dict[str, torch.Tensor], facts: dict[str, Any]) -> None:
        device = self.keys.device
        for name in ("keys", "biases", "values", "unrelated", "edit_queries"):
            setattr(self, name, tensors[name].to(device))
        self.labels, self.value_scale = list(facts["labels"]), facts["value_scale"]

    def size(self) -> tuple[int, int]:
        """``(neurons, edit queries)``: what :meth:`keep_first` takes back to."""
        return len(self), len(self.edit_queries)

    def keep_first(self, size: tuple[int, int]) -> None:
        """Drop every neuron and edit query after the first ``size`` (an edit's undo)."""
        neurons, queries = size
        self.keys, self.biases, self.values = self.keys[:neurons], self.biases[:neurons], self.values[:neurons]
        self.edit_queries = self.edit_queries[:queries]
        del self.labels[neurons:]

    def add(self, keys: torch.Tensor, biases: torch.Tensor, values: torch.Tensor, labels: list[str]) -> None:
        """Append trained neurons."""
        self.keys = torch.cat([self.keys, keys.to(self.keys)])
        self.biases = torch.cat([self.biases, biases.to(self.biases)])
        self.values = torch.cat([self.values, values.to(self.values)])
        self.labels.extend(labels)

    def remember(self, queries: torch.Tensor) -> None:
        """Add an edit's queries to the memory: later neurons stay silent on them."""
        self.edit_queries = torch.cat([self.edit_queries, queries.to(self.edit_queries)])

    # -- inference ----------------------------------------------------------------------------
    def _neurons(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.training_neurons is None:
            return self.keys, self.biases, self.values
        keys, biases, values = self.training_neurons     # joined out of place: gradients reach the neurons being trained
        return torch.cat([self.keys, keys]), torch.cat([self.biases, biases]), torch.cat([self.values, values])

    def adapt(self, key: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        keys, biases, values = self._neurons()
        if len(keys) == 0:
            return output
        fired = torch.relu(key.float() @ keys.T + biases)
        if self.training_neurons is None and not bool((fired > 0).any()):
            return output                            # no neuron fires: the block's own output, untouched
        return output + (fired @ values).to(output.dtype)


class TPatcher(AdaptorMethod, name="t-patcher", paper="Huang et al., ICLR 2023, arXiv:2301.09785",
               config_class=TPatcherConfig, adaptor_class=NeuronPatches, adaptor_noun="set of patches"):
    """Trainable neurons added to the last feed-forward layer, one per mistaken target token, each firing only on its edit's input (Huang et al., 2023)

    The module docstring explains the patches, their three losses and keditlab's choices (:mod:`keditlab.methods.tpatcher`).
    """

    @classmethod
    def host_module(cls, profile, layer: int) -> str:
        """The feed-forward block as a whole: a neuron's key reads the block's input, as in the paper."""
        return ffn_module(profile, layer)

    @classmethod
    def plan(cls, profile, config: TPatcherConfig, model=None) -> MethodPlan:
        """No weight; at most ``max_neurons`` neurons (key, bias, value) per edit, trained from the patched layer up,
        and the memory of queries held beside them."""
        layer = config.resolved_layer(profile.num_layers)
        host = cls.host_module(profile, layer)
        width = host_input_width(profile, layer, host)
        neuron = width + 1 + profile.hidden_size
        return MethodPlan(layers=(layer,), changed=((f"neuron per mistaken target token beside {host} (key, bias, value)", neuron),),
                          changes_weights=False, copied=0, trained=config.max_neurons * neuron, backward_from=layer,
                          held=(config.unrelated + (len(shipped_fact_prompts()) if config.reference_facts else 0)) * TOKENS_PER_TEXT * width,
                          notes=(f"the memory grows by one {width}-wide query per target token of each edit",))

    def _edit_at(self, model, tokenizer, profile, layer, module_name, cases, config: TPatcherConfig, context: EditContext,
                 handle: EditHandle) -> dict[str, Any]:
        device = device_of(model)
        host = model.get_submodule(module_name)
        unrelated = None
        if not isinstance(host._modules.get(self.name), NeuronPatches):   # a stream's first edit: read the memory first
            with context.setup():
                rows, selected = unrelated_positions(model, tokenizer, config.unrelated, context.seed, context.unrelated)
                if config.reference_facts:
                    facts = [encode_prompt(tokenizer, text) for text in shipped_fact_prompts()]
                    rows, selected = rows + facts, selected + [[1] * len(row) for row in facts]
                queries, norms = read_inputs(model, tokenizer, {layer: host}, rows, selected, output_norms=True)
                unrelated = (queries[layer].float(), float(norms[layer].median()))
        patches, _ = find_or_install(model, module_name, self.name, layer,
                                     lambda: NeuronPatches(layer, host_input_width(profile, layer, module_name), profile.hidden_size, device),
                                     NeuronPatches)
        if unrelated is not None:
            patches.unrelated, patches.value_scale = unrelated[0].to(device), unrelated[1]
        patches.push(handle, lambda size=patches.size(): patches.keep_first(size))
        details = []
        for case in progress_cases(context, cases, f"{self.name}: edits"):
            details.append({"case_id": case.case_id, **_patch(model, tokenizer, profile, patches, host, case, config)})
        return {"neurons": len(patches), "memory": len(patches.memory()), "value_scale": round(patches.value_scale, 4),
                "cases": details}


def _patch(model, tokenizer, profile, patches: NeuronPatches, host: torch.nn.Module, case, config: TPatcherConfig) -> dict[str, Any]:
    """Add and train the neurons for ``case`` (the three losses of the module docstring); its queries join the memory."""
    device = device_of(model)
    prompt, target = encode_prompt(tokenizer, case.prompt), encode_answer(tokenizer, case.target)
    layer = patches.layer
    queries = read_inputs(model, tokenizer, {layer: host}, *answer_positions(tokenizer, [(case.prompt, case.target)]))[layer].float()
    ids = torch.tensor([prompt + target[:-1]], device=device)
    columns = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(target), device=device)
    answer = torch.tensor(target, device=device)
    lm_head = model.get_output_embeddings()
    with torch.no_grad():        # the mistakes: the target tokens the model (earlier neurons included) does not predict
        wrong = (lm_head(model.base_model(input_ids=ids, use_cache=False).last_hidden_state[0, columns]).argmax(-1) != answer)
    positions = wrong.nonzero().flatten()[:config.max_neurons]
    memory = patches.memory()
    patches.remember(queries)
    if len(positions) == 0:
        return {"neurons": 0, "positions": []}
    own = queries[positions]                                  # (n, in): the query each new neuron must fire on
    keys = (own / own.pow(2).sum(1, keepdim=True)).requires_grad_(True)   # activation 1 there at the start
    biases = torch.zeros(len(own), device=device, requires_grad=True)
    values = torch.zeros(len(own), patches.values.shape[1], device=device, requires_grad=True)
    width = own.shape[1] ** 0.5
    # Adam moves each entry by about its rate: rates set so that a step moves a key by about `key_lr` of its starting
    # norm and a value by about `lr` of the block's typical output, on every model
    optimiser = torch.optim.Adam([{"params": [keys], "lr": config.key_lr * float(keys.detach().norm(dim=1).mean()) / width},
                                  {"params": [biases], "lr": config.key_lr},
                                  {"params": [values], "lr": config.lr * patches.value_scale / values.shape[1] ** 0.5}])

    def gate_losses() -> tuple[torch.Tensor, float, float]:
        """``activation_weight · l_a + memory_weight · l_m``, the lowest activation of a neuron at its position, the highest on the memory."""
        at_own = ((own * keys).sum(1) + biases).double()     # (n,); float64: the exponentials of an outlier stay finite
        on_memory = (memory @ keys.T + biases).double()      # (m, n)
        loss = config.activation_weight * torch.exp(-at_own).mean()
        if len(memory):
            loss = loss + config.memory_weight * (torch.exp(on_memory + config.memory_margin).mean()
                                                  + torch.exp(on_memory - at_own + config.edit_margin).mean())
        return loss, float(at_own.detach().min()), float(on_memory.detach().max()) if len(memory) else float("-inf")

    def gated(fires: float, silent: float, at_least: float = 0.0) -> bool:
        """Every new neuron fires at its position (at least ``at_least``), and none on the memory (below 0 a ReLU neuron adds nothing)."""
        return fires > at_least and silent < 0

    key_steps = 0
    for key_steps in range(config.key_steps + 1):    # the keys alone first: no forward pass needed
        loss, fires, silent = gate_losses()
        if gated(fires, silent, at_least=1.0) or key_steps == config.key_steps:
            break
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    # what the keys reached alone, the joint training keeps: silence on the memory if they reached it (a few
    # memory queries may lie as close to the edit's as its own paraphrase would: an earlier edit of the same question)
    keep_silent = silent < 0
    with torch.no_grad():   # the edit comes first: a neuron the memory loss silenced at its own position is lifted back to
        at_own = (own * keys).sum(1) + biases   # activation 1 there (it then fires on what it could not be told apart from)
        biases += torch.where(at_own > 0, torch.zeros_like(at_own), 1 - at_own)
    nlls: list[float] = []
    try:
        with trainable_only(model), upper_passes(model, profile.layers, layer, ids, torch.ones_like(ids)) as run:
            for _step in range(config.steps):
                patches.training_neurons = (keys, biases, values)
                logits = lm_head(run()[0, columns]).float()
                nll = torch.nn.functional.cross_entropy(logits, answer)
                loss, fires, silent = gate_losses()
                nlls.append(float(nll.detach()))
                if bool((logits.argmax(-1) == answer).all()) and fires > 0 and (silent < 0 or not keep_silent):
                    break
                optimiser.zero_grad()
                (nll + loss).backward()
                optimiser.step()
    finally:
        patches.training_neurons = None
    patches.add(keys.detach(), biases.detach(), values.detach(), [tokenizer.decode([target[i]]) for i in positions.tolist()])
    return {"neurons": len(positions), "positions": positions.tolist(), "key_steps": key_steps, "steps": len(nlls),
            "nll_first": round(nlls[0], 4), "nll_last": round(nlls[-1], 4),
            "activation_at_positions_min": round(fires, 4), "activation_on_memory_max": round(silent, 4)}
