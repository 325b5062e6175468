"""MEMIT: Mass-Editing Memory in a Transformer.

Meng, Sharma, Andonian, Belinkov and Bau, "Mass-Editing Memory in a
Transformer", ICLR 2023 (arXiv:2210.07229).

ROME writes one fact into one layer.  MEMIT writes many facts at once, and
spreads each over several consecutive MLP layers so that no single layer has
to change much.  Its steps, for a batch of edits (the key–value machinery is
shared with ROME, :mod:`keditlab.methods.keyvalue`):

1. **Target.**  For every edit, a vector ``δᵢ`` added to the residual stream at
   the subject's last token after the *last* edited layer ``L`` is optimised so
   the model says the target (the same loss as ROME's).  All edits of a batch
   are optimised together, one padded forward and backward per step
   (:func:`~keditlab.methods.keyvalue.optimise_values`).  The target hidden
   state is ``zᵢ = hᵢᴸ + δᵢ``.
2. **Spread.**  The edited layers are visited from the first to the last.  At
   layer ``l`` the keys ``K`` (MLP activations at the subject) and the hidden
   state at ``L`` are read from the model *as edited so far*; the part of the
   remaining gap ``z − hᴸ`` this layer should close, ``R``, is the gap divided
   by the number of layers left (the paper), or, where a block normalises its
   MLP output before adding it to the residual stream, the gap's share in
   proportion to what this layer's MLP adds there (``spread``, below).
3. **Solve.**  The weight change of layer ``l`` is the least-squares answer
   that writes ``R`` at the new keys while keeping the outputs at the keys
   the layer already serves (summarised by their covariance ``C = E[k kᵀ]``),
   weighted by ``covariance_weight`` ``λ``::

       ΔW = R Kᵀ (λ C + K Kᵀ)⁻¹

   This step is the only thing EMMET and AlphaEdit change
   (:mod:`keditlab.methods.emmet`, :mod:`keditlab.methods.alphaedit` override
   :meth:`Memit.solve`).

On a mixture-of-experts model each layer's keys are the gate-weighted keys
of the experts the subjects are routed to, and each layer's solve is
narrowed to those experts, with per-expert statistics
(:class:`~keditlab.models.experts.ExpertSite`; MoEEdit, arXiv:2602.10965;
the tensor-structured MoE MEMIT, arXiv:2605.16686).

keditlab's differences from the paper, measured (``docs/methods.md``): by
default every context's key is a column of ``K`` with its own gap
(``keys: contexts``), as ROME's update in keditlab is solved at every
context's key; the paper averages the keys over the contexts first
(``keys: mean``).  And the gap is not always split evenly (``spread``): a
block that normalises its MLP output (Gemma 3's post-feedforward RMS norm)
can move the residual stream by at most about twice what its MLP adds
there, whatever the weights, and on Gemma 3 270M the early layers add a
third of what the last layer of the window adds (183 and 142 against 546 at
a subject).  An even split asks those layers to all but reverse their
output: for a batch of 100 CounterFact edits, a change 3.3 times the norm of
layer 1's matrix, and 36 of the 100 edits unsaid in garbled text.
``spread: auto`` splits such a gap in proportion to each layer's
contribution instead (change 1.4 times the matrix, 6 unsaid).
"""

from __future__ import annotations

from dataclasses import dataclass, field
import torch

from keditlab.methods.base import (
    Capabilities, EditContext, EditHandle, EditMethod, MethodConfig, MethodConfigError, MethodPlan, choice_setting,
)
from keditlab.methods.common import context_prefixes, trainable_only
from keditlab.methods.keyvalue import (
    STOP_WHEN, ValueRequest, ValueSettings, context_texts, contribution_sizes, optimise_values, read_at_subjects, ridged,
    value_change_for,
)
from keditlab.models.residual import mlp_output_map
from keditlab.models.sampling import device_of
from keditlab.methods.layers import check_value_layer, chosen_layers, memit_window, window_ending_at

#: How the keys of one edit's contexts enter the solve (the ``keys`` setting).
KEY_FORMS = ("contexts", "mean", "prompt_and_mean")

#: How the gap is shared among the edited layers (the ``spread`` setting).
SPREADS = ("auto", "even", "by_output")

@dataclass
class SpreadConfig(MethodConfig):
    """Settings every method of the MEMIT family shares (targets, keys, layers)."""

    layers: list[int] | None = field(
        default=None,
        metadata={"help": "Consecutive layers whose MLP output projections are edited; the target is set after the last. "
                          "Empty: a sixth of the depth, ending at 17% of it (layers 1-5 of 30 on the embedded model). "
                          "`auto`: as many layers, ending at the layer causal tracing finds (see rome's `layer`).",
                  "layer_index": True, "auto_layer": True},
    )
    keys: str = choice_setting(
        "contexts", KEY_FORMS,
        "'contexts': every context's key is its own column with its own gap; 'mean': one key per edit, averaged over its contexts (the paper); "
        "'prompt_and_mean': two per edit, the bare prompt's key and the mean.")
    spread: str = choice_setting(
        "auto", SPREADS,
        "How the gap is shared among the layers: 'even', each closes an equal share of what is left (the paper); "
        "'by_output', in proportion to the size of what each layer's MLP adds to the residual stream at the subject; "
        "'auto': by_output where a block normalises its MLP output before adding it (a post-feedforward norm), else even.")
    v_steps: int = field(default=25, metadata={"minimum": 1, "help": "Most optimisation steps for the target vectors δ."})
    v_lr: float = field(default=1.0, metadata={"exclusive_minimum": 0, "help": "Adam learning rate for the target vectors δ."})
    v_weight_decay: float = field(default=0.05, metadata={"minimum": 0, "help": "Weight of the (‖δ‖ / ‖v‖)² penalty that keeps each target change small."})
    kl_factor: float = field(default=0.0625, metadata={"minimum": 0, "help": "Weight of the KL term that keeps '<subject> is a' predictions unchanged."})
    clamp_norm_factor: float = field(default=4.0, metadata={"exclusive_minimum": 0, "help": "Each δ is clamped to this multiple of the norm of the last layer's MLP output at the subject."})
    early_stop_loss: float = field(default=0.05, metadata={"minimum": 0, "help": "An edit's optimisation stops once its target's mean negative log-likelihood is below this."})
    stop_when: str = field(
        default="loss",
        metadata={"help": "'loss': stop at early_stop_loss; 'most_probable': also stop as soon as every target token is the most probable one in every context (ENCORE).",
                  "choices": list(STOP_WHEN)},
    )
    context_templates: int = field(default=5, metadata={"minimum": 0, "help": "Number of generated context prefixes the keys and targets are taken over (plus the bare prompt)."})
    value_norm_anchor: bool = field(
        default=False,
        metadata={"help": "Rescale each target hidden state z = h + δ to the norm of the unedited h (a norm anchor against the norm growth of long sequential runs)."},
    )
    covariance_ridge: float = field(default=1e-4, metadata={"minimum": 0, "help": "Added to the diagonal of C (relative to its mean diagonal) so that it is well conditioned."})

    def value_settings(self) -> ValueSettings:
        return ValueSettings(self.v_steps, self.v_lr, self.v_weight_decay, self.kl_factor, self.clamp_norm_factor,
                             self.early_stop_loss, self.stop_when)

    def resolved_layers(self, num_layers: int) -> list[int]:
        return chosen_layers(self.layers, memit_window(num_layers))

    def check_layers(self, num_layers: int) -> None:
        super().check_layers(num_layers)
        check_value_layer("layers", self.resolved_layers(num_layers)[-1], num_layers)


@dataclass
class MemitConfig(SpreadConfig):
    covariance_weight: float | None = field(
        default=None,
        metadata={"exclusive_minimum": 0, "help": "λ: how much the keys a layer already serves (their covariance C) weigh against the new keys. "
                          "Larger keeps more of what the model knew and writes edits more weakly. Empty: the key width (1536 on the embedded model)."},
    )


class Memit(EditMethod, name="memit", family="locate-then-edit", paper="Meng et al., ICLR 2023, arXiv:2210.07229",
            config_class=MemitConfig, capabilities=Capabilities(batch=True, sequential=True, needs_statistics=True)):
    """Mass-Editing Memory in a Transformer (Meng et al., 2023)"""

    @classmethod
    def auto_layer_settings(cls, traced_layer: int, num_layers: int) -> dict[str, list[int]]:
        """``layers: auto``: as many layers as the default window, ending at the traced layer (the default ends at ROME's layer)."""
        return {"layers": window_ending_at(traced_layer, len(memit_window(num_layers)))}

    @classmethod
    def plan(cls, profile, config: SpreadConfig, model=None) -> MethodPlan:
        """Its layers' MLP output matrices; δ per edit optimised from the last layer up; every layer's covariance held, ridged, in float64."""
        layers = config.resolved_layers(profile.num_layers)
        return MethodPlan.mlp_out(profile, layers, trained=profile.hidden_size, backward_from=layers[-1],
                                  rows_per_edit=config.context_templates + 2, statistics=tuple(layers), solved_at_once=len(layers))

    # -- the one step the successors change -------------------------------------------------
    def solve(self, layer: int, keys: torch.Tensor, gaps: torch.Tensor, covariance: torch.Tensor,
              config: SpreadConfig, context: EditContext, handle: EditHandle, site=None) -> torch.Tensor:
        """The weight change ``(hidden, site.width)`` that writes ``gaps`` (rows) at ``keys`` (rows), all float64.

        ``site`` (:class:`~keditlab.models.experts.ExpertSite`) is where it is written: a dense projection,
        or the experts of an MoE layer the keys reach (``keys`` and ``covariance`` are already narrowed to them).
        """
        weight = config.covariance_weight if config.covariance_weight is not None else float(keys.shape[1])
        system = weight * covariance + keys.T @ keys
        return torch.linalg.solve(system, keys.T @ gaps).T

    # -- the shared loop --------------------------------------------------------------------
    def _apply(self, model, tokenizer, profile, cases, config: SpreadConfig, context: EditContext) -> EditHandle:
        if context.covariance is None:
            raise MethodConfigError(f"{self.name} needs key statistics: pass EditContext(covariance=...)")
        layers = config.resolved_layers(profile.num_layers)
        last = layers[-1]
        sites = {layer: profile.key_site(model, layer) for layer in layers}   # dense projections or MoE experts (models/experts.py)
        handle = EditHandle(self.name, model, self.snapshot(model, [sites[layer].parameter for layer in layers]))
        device = device_of(model)
        statistics = {layer: matrix.to(device) for layer, matrix in covariances_of(context, layers).items()}
        with context.setup():
            prefixes = context_prefixes(model, tokenizer, config.context_templates, seed=context.seed)
        texts, positions, owner = [], [], []
        requests = []
        for index, case in enumerate(cases):
            case_texts, case_positions = context_texts(tokenizer, case.prompt, case.subject, prefixes)
            requests.append(ValueRequest(case.subject, case.target, case_texts, case_positions))
            texts += case_texts
            positions += case_positions
            owner += [index] * len(case_texts)
        owner_t = torch.tensor(owner)

        # 1. Target: δᵢ at the last edited layer, all edits optimised together.
        with trainable_only(model):
            deltas, infos = optimise_values(model, tokenizer, sites[last].value_module, profile.hidden_size, requests, config.value_settings(),
                                            progress=context)
        last_block = model.get_submodule(profile.layer_module(last))
        deltas = deltas.double()[owner_t.to(deltas.device)]   # one row per context
        # What each block does to its MLP output before the residual stream gets it (a post-feedforward norm, or nothing).
        output_maps = {layer: mlp_output_map(model, profile, layer) for layer in layers}

        # 2-3. Spread the gap over the layers, first to last, re-reading the model as edited so far.
        spread = config.spread if config.spread != "auto" else (
            "by_output" if any(output_maps[layer] is not None for layer in layers) else "even")
        if spread == "by_output":   # per context, the size of what each layer's MLP adds to the residual stream, unedited
            sizes = {layer: contribution_sizes(output_maps[layer], read_at_subjects(
                model, tokenizer, texts, positions, sites[layer], sites[layer].value_module)[1]) for layer in layers}
        layer_details = []
        for step, layer in enumerate(layers):
            keys, hidden = read_at_subjects(model, tokenizer, texts, positions, sites[layer], last_block)
            if step == 0:  # the model is still unedited: the target is the residual stream δ leads to
                if output_maps[last] is None:   # δ is added to the residual stream as it is
                    targets = hidden.double() + deltas.to(hidden.device)
                else:
                    _, reached_by_delta = read_at_subjects(model, tokenizer, texts, positions, sites[layer], last_block,
                                                           shift=(sites[last].value_module, deltas))
                    targets = reached_by_delta.double()
                if config.value_norm_anchor:
                    targets = targets * (hidden.double().norm(dim=1, keepdim=True) / targets.norm(dim=1, keepdim=True))
                first_gap = (targets - hidden.double()).norm(dim=1)
            if spread == "even":
                share = torch.full((len(texts), 1), 1.0 / (len(layers) - step), dtype=torch.float64)
            else:
                share = (sizes[layer] / sum(sizes[later] for later in layers[step:]))[:, None]
            gaps = (targets - hidden.double()) * share.to(hidden.device)
            if output_maps[layer] is not None:   # the residual stream's gap, as a change of the MLP output
                _, values = read_at_subjects(model, tokenizer, texts, positions, sites[layer], sites[layer].value_module)
                gaps = value_change_for(output_maps[layer], values, gaps)
            part = sites[layer].touched_by(keys)   # an MoE layer: only the experts the subjects are routed to
            keys = part.select(keys).double()
            if config.keys != "contexts":
                keys, gaps = _per_edit_keys(keys, owner_t, len(cases), config.keys), _per_edit_keys(gaps, owner_t, len(cases), config.keys)
            covariance = ridged(part.gather(statistics[layer]), config.covariance_ridge)
            update = self.solve(layer, keys, gaps, covariance, config, context, handle, part)
            part.add(model, update)
            written = keys @ update.T  # what this layer now writes at the keys
            layer_details.append({
                "layer": layer,
                "update_norm": float(update.norm()),
                "gap_norm": float(gaps.norm(dim=1).mean()),
                "gap_share": round(float(share.mean()), 4),   # of what was left of the gap at this layer
                "written_share": float((written * gaps).sum() / (gaps * gaps).sum().clamp(min=1e-12)),
                **part.describe(),
            })
        _, hidden = read_at_subjects(model, tokenizer, texts, positions, sites[layers[0]], last_block)
        reached = 1 - (targets - hidden.double()).norm(dim=1) / first_gap.clamp(min=1e-12)
        handle.details = {
            "layers": layers,
            "modules": [profile.mlp_out_module(layer) for layer in layers],
            "spread": spread,
            "context_prefixes": prefixes,
            "per_layer": layer_details,
            "cases": [
                {"case_id": case.case_id, **info,
                 # 1 − ‖z − h‖/‖z − h₀‖ at the last layer after all updates, per context (bare prompt first): 1.0 is exact
                 "target_reached": [round(float(x), 3) for x in reached[owner_t == i]]}
                for i, (case, info) in enumerate(zip(cases, infos))
            ],
        }
        return handle


def covariances_of(context: EditContext, layers: list[int]) -> dict[int, torch.Tensor]:
    """The key statistics of every layer, asked for together so a provider can read them in one corpus pass.

    :class:`~keditlab.stats.covariance.CovarianceProvider` offers
    ``for_layers``; any other callable ``covariance(layer)`` is asked layer by layer.
    """
    together = getattr(context.covariance, "for_layers", None)
    if together is not None:
        return together(layers)
    return {layer: context.covariance(layer) for layer in layers}


def _per_edit_keys(rows: torch.Tensor, owner: torch.Tensor, count: int, form: str) -> torch.Tensor:
    """One row per edit, the mean over its contexts (``mean``), or two: its bare prompt's and the mean (``prompt_and_mean``)."""
    sums = torch.zeros(count, rows.shape[1], dtype=rows.dtype, device=rows.device).index_add_(0, owner.to(rows.device), rows)
    means = sums / torch.bincount(owner, minlength=count).to(rows)[:, None]
    if form == "mean":
        return means
    first = torch.ones_like(owner, dtype=torch.bool)   # each edit's first context is its bare prompt
    first[1:] = owner[1:] != owner[:-1]
    return torch.cat([rows[first.to(rows.device)], means])

