"""KN: knowledge neurons, found by integrated gradients and edited in place.

Dai, Dong, Hao, Sui, Chang and Wei, 2022, "Knowledge Neurons in Pretrained
Transformers" (ACL 2022, arXiv:2104.08696).

An MLP block reads the residual stream with its first matrices and writes back
``down_proj · a``, where ``a`` (width ``mlp_size``) holds one activation per
*neuron*; column ``i`` of ``down_proj`` is the vector neuron ``i`` adds.  The
paper asks which neurons a fact depends on:

1. **Attribution.**  For each prompt of the fact (the edit prompt and its
   rephrases) and each layer, the activation ``a`` at the prompt's last token
   is scaled from 0 to its value in ``steps`` steps, and the gradient of the
   log-probability of the *old* answer's first token is summed along the way:
   ``attribution_i = a_i · mean_k ∂ log p / ∂ a_i |_{(k/steps)·a}`` (a Riemann
   sum of integrated gradients).  The prompt's prefix runs once; the scaled
   copies run only its last token, on the prefix's key-value cache.
2. **Selection.**  In each prompt, the neurons above ``threshold`` × that
   prompt's largest attribution; kept if they appear in at least ``share`` of
   the prompts (the paper's refining step), at most ``max_neurons`` of them,
   largest mean attribution first.
3. **Edit.**  Each selected neuron's column is moved along the direction from
   the old answer's output embedding to the new one's (the paper's "updating
   facts": subtract the old word's embedding, add the new one's).

keditlab's additions, because the paper's fixed step barely moves the embedded
model (the reference toolkit's KN reaches reliability 0.05 on it):

* The step is measured in units of the neuron's own column norm
  (``strength`` = 1: a change as long as the column), and is doubled, up to
  ``max_doublings`` times, until the new answer's first token is the model's
  prediction after the edit prompt.  ``details`` records the strength used.
* When a case has no ground truth, the old answer is the model's own
  prediction.

What to expect: KN changes the *first* token of the answer; a multi-token
target is written only as far as that token carries it, and nothing trains
the rest.  The method is weak in the literature and here too (docs/methods.md
has the figures); it is kept as the survey's "knowledge neurons" baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from keditlab.methods.base import Capabilities, EditContext, EditHandle, EditMethod, MethodConfig, MethodPlan
from keditlab.methods.common import trainable_only
from keditlab.models.sampling import device_of
from keditlab.methods.layers import upper_half
from keditlab.models.hooks import hooks
from keditlab.models.kvcache import copied, forward_with_cache
from keditlab.models.tokens import encode_answer, encode_prompt


@dataclass
class KNConfig(MethodConfig):
    steps: int = field(default=20, metadata={"help": "Integrated-gradient steps from 0 to the activation (the paper's m = 20).", "minimum": 1})
    threshold: float = field(default=0.2, metadata={"help": "A neuron counts for a prompt when its attribution exceeds this share of the prompt's largest.", "exclusive_minimum": 0, "maximum": 1})
    share: float = field(default=0.5, metadata={"help": "Kept when it counts for at least this share of the fact's prompts.", "exclusive_minimum": 0, "maximum": 1})
    max_neurons: int = field(default=10, metadata={"help": "Most neurons edited per fact (largest mean attribution first).", "minimum": 1})
    layers: list[int] | None = field(default=None, metadata={"help": "Layers searched for neurons. Empty: the upper half of the layers, where the paper finds knowledge neurons.", "layer_index": True})
    strength: float = field(default=1.0, metadata={"help": "First step, in units of each neuron's column norm.", "exclusive_minimum": 0})
    max_doublings: int = field(default=4, metadata={"help": "Times the step may be doubled until the new answer is predicted.", "minimum": 0})

    def resolved_layers(self, num_layers: int) -> list[int]:
        """The searched layers: ``layers``, or the upper half when empty."""
        return list(self.layers) if self.layers is not None else upper_half(num_layers)


class KnowledgeNeurons(EditMethod, name="kn", family="neurons", paper="Dai et al., ACL 2022, arXiv:2104.08696",
                       config_class=KNConfig, capabilities=Capabilities(batch=True, sequential=True)):
    """Knowledge neurons found by integrated gradients; their MLP columns moved from the old answer to the new"""

    refuses_moe = ("its neurons are the columns of one dense MLP output projection, and an MoE layer's neurons belong to "
                   "experts that each see only the tokens routed to them (no attribution over them is implemented). "
                   "Use rome or memit (they edit the experts the subject is routed to) or ft-m.")
    model_needs = ("dense_mlp",)

    @classmethod
    def plan(cls, profile, config: KNConfig, model=None) -> MethodPlan:
        """At most ``max_neurons`` columns (hidden each) per edit, among the searched layers, whose matrices are all copied;
        integrated gradients run ``steps`` scaled copies of each prompt and rephrase through the layers from the searched one up."""
        layers = config.resolved_layers(profile.num_layers)
        return MethodPlan(layers=tuple(layers), changed=((f"up to {config.max_neurons} columns of {profile.mlp_out}", config.max_neurons * profile.hidden_size),),
                          copied=len(layers) * profile.hidden_size * profile.mlp_size, backward_from=layers[0], rows_per_edit=2 * config.steps)

    def _apply(self, model, tokenizer, profile, cases, config: KNConfig, context: EditContext) -> EditHandle:
        layers = config.resolved_layers(profile.num_layers)
        names = sorted({f"{profile.mlp_out_module(layer)}.weight" for layer in layers})
        handle = EditHandle(self.name, model, self.snapshot(model, names))
        head = model.get_output_embeddings().weight
        per_case = []
        for case in cases:
            prompts = [case.prompt, *case.rephrase]
            new = encode_answer(tokenizer, case.target)[0]
            old = encode_answer(tokenizer, case.ground_truth)[0] if case.ground_truth else _predicted(model, tokenizer, case.prompt)
            scores = _attributions(model, tokenizer, profile, prompts, old, layers, config.steps)
            neurons = _select(scores, config)
            direction = _answer_direction(model, tokenizer, profile, case.prompt, head, new, old)
            # each neuron's output column of its layer's (out, in) weight: a view, so writing to it edits the weight
            columns = [profile.mlp_out_weight(model, layer)[:, index] for layer, index in neurons]
            norms = [float(c.detach().float().norm()) for c in columns]
            total, strength = 0.0, config.strength
            with torch.no_grad():
                for doubling in range(config.max_doublings + 1):
                    for column, norm in zip(columns, norms):   # bring each change up to `strength` column norms
                        column += ((strength - total) * norm * direction).to(column.dtype)
                    total = strength
                    written = _predicted(model, tokenizer, case.prompt) == new
                    if written or doubling == config.max_doublings:
                        break
                    strength *= 2
            moved = [[layer, index] for layer, index in neurons]
            per_case.append({"case_id": case.case_id, "neurons": moved, "strength": total, "old_token": old, "new_token": new,
                             "writes_first_token": written})
        handle.details = {"cases": per_case}
        return handle


def _answer_direction(model, tokenizer, profile, prompt: str, head: torch.Tensor, new: int, old: int) -> torch.Tensor:
    """The unit direction, in the blocks' hidden space, that moves the new answer's logit above the old one's.

    The paper's: the new answer's output embedding minus the old one's.  When
    the output embeddings are narrower or wider than the blocks (OPT-350m
    projects the last hidden state from 1024 to 512 before its head), that
    difference is carried back to the blocks' space through whatever lies
    between the last block and the head: the gradient of ``logit_new −
    logit_old`` with respect to the last block's output at the prompt's last token.
    """
    difference = (head[new] - head[old]).detach().float()
    if difference.shape[0] == profile.hidden_size:
        return torch.nn.functional.normalize(difference, dim=0)
    ids = torch.tensor([encode_prompt(tokenizer, prompt)], device=device_of(model))
    shift = torch.zeros(profile.hidden_size, device=ids.device, requires_grad=True)

    def add(_module, _inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = torch.cat([hidden[:, :-1], hidden[:, -1:] + shift.to(hidden.dtype)], dim=1)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    last_block = model.get_submodule(profile.layer_module(profile.num_layers - 1))
    with hooks(forward=[(last_block, add)]), torch.enable_grad(), trainable_only(model, []):
        logits = model(input_ids=ids).logits[0, -1].float()
        (logits[new] - logits[old]).backward()
    return torch.nn.functional.normalize(shift.grad.detach().float(), dim=0)


def _predicted(model, tokenizer, prompt: str) -> int:
    ids = torch.tensor([encode_prompt(tokenizer, prompt)], device=device_of(model))
    with torch.no_grad():
        return int(model(input_ids=ids).logits[0, -1].argmax())


def _attributions(model, tokenizer, profile, prompts: list[str], answer: int, layers: list[int], steps: int) -> dict[int, torch.Tensor]:
    """Integrated-gradient attribution of every neuron of each layer to ``answer``: ``{layer: prompts × mlp_size}``.

    Only the prompt's last token sees the scaled activation, and attention is
    causal, so everything before that token is the same in all ``steps``
    copies.  Each prompt's prefix therefore runs once and is kept as the
    model's key-value cache; the scaled copies run the last token alone on a
    copy of that cache (``steps`` rows of one token instead of ``steps`` rows
    of the whole prompt; the same attributions, a prompt's length times less
    work).
    """
    device = device_of(model)
    alphas = torch.arange(1, steps + 1, device=device, dtype=torch.float32) / steps
    modules = {layer: model.get_submodule(profile.mlp_out_module(layer)) for layer in layers}
    per_layer: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for prompt in prompts:
        row = torch.tensor([encode_prompt(tokenizer, prompt)], device=device)
        prefix = _prefix_cache(model, row)
        captured: dict[int, torch.Tensor] = {}

        def capture(layer):
            def hook(_module, args):
                captured[layer] = args[0][0, -1].detach().float()
            return hook

        with hooks(pre=[(modules[layer], capture(layer)) for layer in layers]), torch.no_grad():
            _last_token(model, row, prefix, 1)
        for layer in layers:
            activation = captured[layer]                                          # mlp
            scaled = (alphas[:, None] * activation[None]).requires_grad_(True)    # steps × mlp

            def replace(_module, args):
                x = args[0].clone()
                x[:, -1] = scaled.to(x.dtype)
                return (x, *args[1:])

            with hooks(pre=[(modules[layer], replace)]), torch.enable_grad(), trainable_only(model, []):
                hidden = _last_token(model, row, prefix, steps).last_hidden_state[:, -1]
                model.get_output_embeddings()(hidden).float().log_softmax(-1)[:, answer].sum().backward()
            per_layer[layer].append(activation * scaled.grad.mean(0))
    return {layer: torch.stack(rows) for layer, rows in per_layer.items()}


def _prefix_cache(model, row: torch.Tensor):
    """The key-value cache of every token of ``row`` but the last (``None`` for a one-token prompt)."""
    if row.shape[1] < 2:
        return None
    with torch.no_grad():
        return forward_with_cache(model.base_model, row[:, :-1], keep=True)[1]


def _last_token(model, row: torch.Tensor, prefix, copies: int):
    """The base model's output for ``copies`` copies of the prompt, computing only its last token when the prefix is cached."""
    if prefix is None:
        return model.base_model(input_ids=row.repeat(copies, 1))
    return forward_with_cache(model.base_model, row[:, -1:].repeat(copies, 1), copied(prefix, copies))[0]


def _select(scores: dict[int, torch.Tensor], config: KNConfig) -> list[tuple[int, int]]:
    """The neurons kept for the fact: above ``threshold`` of each prompt's largest, in ``share`` of the prompts."""
    layers = sorted(scores)
    stacked = torch.stack([scores[layer] for layer in layers], dim=1)        # prompts × layers × mlp
    top = stacked.flatten(1).max(dim=1).values.clamp(min=1e-12)
    counts = (stacked > config.threshold * top[:, None, None]).float().mean(0)  # share of prompts, per neuron
    mean = stacked.mean(0)
    kept = torch.nonzero(counts >= config.share, as_tuple=False)
    if kept.numel() == 0:   # no neuron shared enough: the strongest on average
        kept = torch.nonzero(mean == mean.max(), as_tuple=False)[:1]
    order = mean[kept[:, 0], kept[:, 1]].argsort(descending=True)[: config.max_neurons]
    return [(layers[int(kept[i, 0])], int(kept[i, 1])) for i in order]
