"""The one interface every editing method implements, and the handle an edit returns.

A method is a class with a ``name``, a ``config_class`` (a dataclass of its
hyperparameters, each field documented with ``metadata={"help": ...}``) and an
``apply`` method.  ``apply`` changes the model's weights *in place*, because the
model a user holds after an edit should be the edited one, and returns an
:class:`EditHandle` that remembers the original weights so that ``restore()``
puts back every changed parameter bit for bit.

Nothing is rolled back behind the user's back: the runner calls ``restore()``
explicitly between cases, and a user in a notebook decides when to call it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from keditlab.methods.transaction import Transaction, register_handle
from keditlab.models.precision import float32_compute, needs_float32_compute

if TYPE_CHECKING:
    from keditlab.models.profile import ModelProfile
    from keditlab.vocabulary import EditCase


def choice_setting(default: str, choices: list[str] | tuple[str, ...], help: str) -> Any:
    """A setting that takes one of ``choices`` (the schema lists them; a value outside them is a clear error)."""
    return field(default=default, metadata={"help": help, "choices": list(choices)})


class MethodConfigError(ValueError):
    """A method setting is not valid for this method or this model."""


@dataclass
class MethodConfig:
    """Base class of method configs; subclasses add documented fields."""

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "MethodConfig":
        """Build a config from a spec's ``params`` dict, naming any unknown key."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise MethodConfigError(
                f"unknown setting(s) {unknown} for {cls.__name__}; known settings: {sorted(known)}"
            )
        return cls(**params)

    def __post_init__(self) -> None:
        """Declared choices and ranges (``metadata``: ``choices``, ``minimum``, ``maximum``, ``exclusive_minimum``,
        ``exclusive_maximum``) hold; the schema carries the same, this checks them for Python callers too."""
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise MethodConfigError(
                    f"{f.name}: {value!r} is not one of {', '.join(map(str, choices))}. "
                    f"Fix: choose one of them, or leave {f.name} out for {f.default!r}."
                )
            if isinstance(value, float) and not math.isfinite(value):
                raise MethodConfigError(
                    f"{f.name}: {value!r} is not a finite number. "
                    f"Fix: give {f.name} a number, or leave it out for the default."
                )
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                low, high = f.metadata.get("minimum"), f.metadata.get("maximum")
                low_x, high_x = f.metadata.get("exclusive_minimum"), f.metadata.get("exclusive_maximum")
                outside = ((low is not None and value < low) or (high is not None and value > high)
                           or (low_x is not None and value <= low_x) or (high_x is not None and value >= high_x))
                if outside:
                    lower = f">= {low}" if low is not None else f"> {low_x}" if low_x is not None else ""
                    upper = f"<= {high}" if high is not None else f"< {high_x}" if high_x is not None else ""
                    valid = " and ".join(x for x in (lower, upper) if x)
                    raise MethodConfigError(
                        f"{f.name}: {value!r} is out of range; it must be {valid}. "
                        f"Fix: choose a value {valid}, or leave {f.name} out for the default."
                    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check_layers(self, num_layers: int) -> None:
        """Raise if a layer setting (a field marked ``layer_index``) is outside ``0..num_layers-1``."""
        for f in dataclasses.fields(self):
            if not f.metadata.get("layer_index"):
                continue
            value = getattr(self, f.name)
            if value == "auto" and f.metadata.get("auto_layer"):
                raise MethodConfigError(
                    f"{f.name}: 'auto' must be resolved to a traced layer before the method runs. Fix: run the spec "
                    "with keditlab.run / `keditlab run` (it resolves it), or in Python call "
                    "keditlab.runner.run.resolve_auto_layers(params, model, tokenizer, profile) first."
                )
            for layer in [] if value is None else value if isinstance(value, list) else [value]:
                if not 0 <= layer < num_layers:
                    raise MethodConfigError(
                        f"{f.name}: layer {layer} is outside this model's layers 0..{num_layers - 1}. "
                        f"Fix: choose {f.name} between 0 and {num_layers - 1}, or leave it out for the default."
                    )


@dataclass
class EditContext:
    """What a method may need besides the model: statistics, device, seed.

    ``covariance(layer)`` returns the key covariance ``E[k kᵀ]`` of the MLP
    output projection at ``layer`` (see :mod:`keditlab.stats`); methods that do
    not need it never call it, so it costs nothing for them.

    Some work is done once and then reused by every later edit: statistics,
    context prefixes sampled from the model.  Its time is *set-up*, not the
    price of an edit, so it is counted apart (:meth:`setup`), and
    :class:`EditHandle` reports ``seconds`` (the edit) and ``setup_seconds``
    (one-off work that this edit happened to trigger) separately.
    """

    seed: int = 0
    covariance: Any = None  # Callable[[int], torch.Tensor] | None
    progress: bool = True
    #: State a method carries from one edit to the next in sequential editing
    #: (AlphaEdit's sum of earlier keys), keyed by the method.  A handle that
    #: adds to it takes its share back out when it is restored.
    memory: dict[str, Any] = field(default_factory=dict)
    #: Unrelated questions and their answers, ``(prompt, answer)``, that methods
    #: with a preservation term (UltraEdit, LocFT-BF, FT-M, FT-L) hold unchanged instead of
    #: text sampled from the model: the locality probes of benchmark records kept
    #: apart from the run (a spec's ``stats.unrelated``).  Empty: model samples.
    unrelated: tuple[tuple[str, str], ...] = ()
    setup_seconds: float = 0.0  # one-off work timed with setup(), besides the covariance provider's own

    @contextlib.contextmanager
    def setup(self) -> Iterator[None]:
        """Time the block as one-off set-up: ``with context.setup(): prefixes = ...``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.setup_seconds += time.perf_counter() - start

    def one_off_seconds(self) -> float:
        """All set-up time so far: blocks timed with :meth:`setup` plus statistics the provider computed or loaded."""
        return self.setup_seconds + float(getattr(self.covariance, "seconds", 0.0))


@dataclass
class EditHandle:
    """The result of applying an edit: what changed, how, and how to undo it.

    ``originals`` maps parameter names to copies of their values before the
    edit.  ``restore()`` writes them back, making the model bit-identical to
    before; it is idempotent.  A handle is also a context manager::

        with rome.apply(model, tok, profile, cases, config) as edit:
            ...  # the model is edited here
        # and restored here
    """

    method: str
    model: torch.nn.Module
    originals: dict[str, torch.Tensor]
    config: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0          # time to edit, one-off set-up excluded
    setup_seconds: float = 0.0    # one-off work (statistics, prefixes) first needed by this edit
    restored: bool = False
    #: Called by ``restore()`` after the weights are back: undo anything else the
    #: edit changed (a method's memory of earlier edits).
    on_restore: list[Any] = field(default_factory=list, repr=False)
    #: For an edit made by what the model reads rather than by its weights (IKE):
    #: ``context(prompt)`` is the text placed before ``prompt`` while the edit is
    #: on (``measure(..., context=handle.context)``).  ``None`` for weight edits.
    context: Any = field(default=None, repr=False)  # Callable[[str], str] | None

    @property
    def changed_parameters(self) -> list[str]:
        return sorted(self.originals)

    def delta_norms(self) -> dict[str, float]:
        """Frobenius norm of (edited − original) for each changed parameter."""
        params = dict(self.model.named_parameters())
        return {
            name: float((params[name].detach() - orig.to(params[name].device)).float().norm())
            for name, orig in self.originals.items()
        }

    def restore(self) -> None:
        """Put back the original value of every parameter this edit changed."""
        if self.restored:
            return
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, orig in self.originals.items():
                params[name].copy_(orig.to(params[name].device))
        for undo in reversed(self.on_restore):
            undo()
        self.restored = True

    def __post_init__(self) -> None:
        register_handle(self)   # the open transaction restores it if the method call does not complete

    def __enter__(self) -> "EditHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def __repr__(self) -> str:
        state = "restored" if self.restored else "applied"
        return f"EditHandle(method={self.method!r}, {state}, changed={self.changed_parameters})"


@dataclass(frozen=True)
class Capabilities:
    """What a method can do, declared once per method and checked before any work.

    ``keditlab methods`` prints these; a spec whose ``run.mode`` a method cannot
    do is rejected when it is validated (the schema carries them).
    """

    batch: bool = False
    """Several edits in one ``apply`` call (``run.mode: batch``, and ``batch_size`` > 1): solved together
    (MEMIT, UltraEdit, fine-tuning) or written one after another within the call (GRACE, WISE)."""
    sequential: bool = True
    """Edits applied on top of earlier ones, without restoring between them (``run.mode: sequential``)."""
    needs_statistics: bool = False
    """Asks for key covariance statistics (computed once per layer and cached)."""
    changes_weights: bool = True
    """Writes into the model's existing weights (rather than adding a module or a prompt)."""
    restorable: bool = True
    """``EditHandle.restore()`` puts the model back bit for bit."""
    saveable: bool = True
    """Its edits are a state of the model (weights, an adaptor) that ``run.save_edits`` can save
    (:mod:`keditlab.methods.saved`); IKE's are a prompt."""

    def to_dict(self) -> dict[str, bool]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MethodPlan:
    """What a method will do to a model, known from its profile and settings alone: no weights, no tracing.

    ``keditlab plan`` (:mod:`keditlab.runner.plan`) asks each method for one
    (:meth:`EditMethod.plan`) and turns it into parameter counts, one-off
    statistics and a peak-memory estimate.  Counts are numbers of values
    (multiply by the bytes of a value for memory); everything is per method
    call of ``edits`` edits unless a field says otherwise.
    """

    #: Layers the method edits, or hangs its memory on (empty: none, e.g. IKE).
    layers: tuple[int, ...] = ()
    #: ``(what, values)`` the edit changes: weight matrices by parameter name, or a memory beside the model.
    changed: tuple[tuple[str, int], ...] = ()
    #: True when ``changed`` are the model's weights; False for a memory beside them (GRACE, WISE) or none (IKE).
    changes_weights: bool = True
    #: Values copied so that ``restore()`` can put them back (default: the changed weights).
    copied: int | None = None
    #: Values that take gradients and Adam's two moments while the edit is found.
    trained: int = 0
    #: The lowest layer a backward pass runs through (its activations from there up are kept); None: no backward.
    backward_from: int | None = None
    #: Sequences the model reads at once per edit while the edit is optimised (contexts, integrated-gradient steps).
    rows_per_edit: int = 1
    #: Layers whose key covariance ``E[k kᵀ]`` (mlp_size²) the method asks for (:mod:`keditlab.stats`).
    statistics: tuple[int, ...] = ()
    #: Of those, how many are held at once as float64 systems on the device while solving (ROME 1, MEMIT all).
    solved_at_once: int = 0
    #: AlphaEdit's null-space projectors (one mlp_size² float64 per statistics layer) are computed too.
    null_space: bool = False
    #: float32 values kept beside the model while editing (a side memory, running statistics, anchors).
    held: int = 0
    #: Tokens placed before every prompt the model reads (IKE's demonstrations), which lengthen evaluation too.
    extra_tokens: int = 0
    notes: tuple[str, ...] = ()

    @property
    def changed_values(self) -> int:
        return sum(count for _, count in self.changed)

    @property
    def copied_values(self) -> int:
        return self.changed_values if self.copied is None else self.copied

    @classmethod
    def mlp_out(cls, profile: "ModelProfile", layers: Any, **fields: Any) -> "MethodPlan":
        """The plan of a method that rewrites the MLP output projections of ``layers`` (the usual case)."""
        layers = tuple(layers)
        size = profile.hidden_size * profile.mlp_size
        return cls(layers=layers, changed=tuple((f"{profile.mlp_out_module(layer)}.weight", size) for layer in layers), **fields)


class EditMethod:
    """Base class of editing methods: a subclass gives its card in its class statement and implements ``_apply``.

    The card is the method's registry entry: ``name`` (what a spec writes),
    ``family`` (the surveys' table), ``paper`` (where it comes from),
    ``config_class`` (its settings) and ``capabilities``.  The class
    docstring opens with a one-paragraph summary (what the method does, who
    proposed it); it becomes ``summary``, the line ``keditlab methods`` and
    the README's method table show::

        class Rome(EditMethod, name="rome", family="locate-then-edit", paper="Meng et al., NeurIPS 2022, arXiv:2202.05262",
                   config_class=RomeConfig, capabilities=Capabilities(needs_statistics=True)):
            '''Rank-One Model Editing (Meng et al., 2022)'''

            def _apply(self, model, tokenizer, profile, cases, config, context) -> EditHandle:
                ...

    A subclass inherits what its card leaves out (r-ROME is ROME with another
    name, paper and config).  Setting the same names as class attributes works too.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[MethodConfig]]
    #: One line: the first paragraph of the class docstring, unless the class sets it.
    summary: ClassVar[str] = ""
    #: The method's family in the surveys' table (``locate-then-edit``, ``fine-tuning``, ``memory``, ``in-context``, ``neurons``).
    family: ClassVar[str] = ""
    #: Where the method comes from: authors, venue, arXiv id.
    paper: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: What the method needs of a model's structure, by name (:data:`keditlab.spec.model_needs.NEEDS`): a spec naming
    #: a model whose config shows a need unmet is refused at validation, before any weight loads.
    model_needs: ClassVar[tuple[str, ...]] = ()
    #: Why the method cannot edit a sparse mixture-of-experts model, and what to use instead; empty when it can.
    #: Such a method also declares the ``dense_mlp`` need, so a spec is refused at validation when the model's
    #: config declares experts; this text is the error when a model reaches ``apply`` unvalidated.
    refuses_moe: ClassVar[str] = ""
    #: For an editor that must be trained before it edits (MEND): its training (an
    #: :class:`~keditlab.methods.training.EditorTrainer`) and that training's settings (a
    #: :class:`~keditlab.methods.training.TrainConfig`); ``keditlab train`` runs them.  None for the others.
    trainer_class: ClassVar[type | None] = None
    train_config_class: ClassVar[type | None] = None

    def __init_subclass__(cls, *, name: str | None = None, family: str | None = None, paper: str | None = None,
                          config_class: type[MethodConfig] | None = None, capabilities: Capabilities | None = None,
                          model_needs: tuple[str, ...] | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        card = {"name": name, "family": family, "paper": paper, "config_class": config_class, "capabilities": capabilities,
                "model_needs": model_needs}
        for key, value in card.items():
            if value is not None:
                setattr(cls, key, value)
        doc = cls.__dict__.get("__doc__")
        if doc and "summary" not in cls.__dict__:
            cls.summary = " ".join(doc.strip().split("\n\n")[0].split())

    def apply(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        profile: "ModelProfile",
        cases: list["EditCase"],
        config: MethodConfig | dict[str, Any] | None = None,
        context: EditContext | None = None,
    ) -> EditHandle:
        """Edit ``model`` in place so it holds every fact in ``cases``; return the undo handle."""
        if config is None or isinstance(config, dict):
            config = self.config_class.from_params(config or {})
        config.check_layers(profile.num_layers)
        if getattr(profile, "is_moe", False) and self.refuses_moe:
            raise MethodConfigError(f"{self.name} cannot edit a mixture-of-experts model: {self.refuses_moe}")
        if not cases:
            raise MethodConfigError(f"{self.name}: no edits to apply. Fix: pass a list with at least one EditCase.")
        context = context or EditContext()
        start, setup_before = time.perf_counter(), context.one_off_seconds()
        # A half-precision model on a CPU without arithmetic for it is edited in float32 (models/precision.py).
        # Transactional: if the call does not complete, every change it made is rolled back (methods/transaction.py).
        with float32_compute(model, needs_float32_compute(model)) as cast, \
                Transaction(model, self.name, list(cases), passthrough=(MethodConfigError,)) as transaction:
            handle = self._apply(model, tokenizer, profile, list(cases), config, context)
            transaction.check(handle)
        for name, dtype in cast.items():   # the snapshots in the model's own dtype: restore() is bit for bit
            if name in handle.originals:
                handle.originals[name] = handle.originals[name].to(dtype)
        handle.setup_seconds = context.one_off_seconds() - setup_before
        handle.seconds = time.perf_counter() - start - handle.setup_seconds
        handle.config = config.to_dict()
        return handle

    def _apply(self, model, tokenizer, profile, cases, config, context) -> EditHandle:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def auto_layer_settings(cls, traced_layer: int, num_layers: int) -> dict[str, Any]:
        """What ``layer: auto`` / ``layers: auto`` means for this method: the settings that replace ``auto``.

        ``traced_layer`` is the layer causal tracing finds for the model
        (:func:`keditlab.trace.auto_layer.traced_layer`); the runner calls this
        through ``keditlab.runner.run.resolve_auto_layers``.  ROME answers
        ``{"layer": traced_layer}``; MEMIT a window of its default length
        ending there (``{"layers": [...]}``).  A method whose config marks a
        layer setting ``auto_layer`` must override this; the base class has no ``auto``.
        """
        raise MethodConfigError(
            f"{cls.name}: its layers cannot be 'auto'. Fix: name the layers as a list of layer numbers, "
            "or leave them out for the method's default."
        )

    @classmethod
    def plan(cls, profile: "ModelProfile", config: MethodConfig, model: Any = None) -> MethodPlan:
        """What this method will change and need on a model of this ``profile`` with these settings (``keditlab plan``).

        ``config`` is checked already (its layers fit the model; an ``auto``
        layer was replaced by the default the plan is made for).  ``model``,
        when given, is the model built on the meta device (no weights), for a
        method that needs module shapes the profile does not hold (LoRA's
        ``target_modules``).  Every registered method answers; the base class
        says it cannot.
        """
        raise MethodConfigError(f"{cls.name}: keditlab plan does not know what this method needs.")

    @staticmethod
    def snapshot(model: torch.nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
        """Copies of the named parameters, taken before they are changed."""
        params = dict(model.named_parameters())
        return {name: params[name].detach().clone() for name in names}
