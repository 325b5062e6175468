"""Plain data classes that describe a run: what to edit, how, and what to measure.

These classes hold data only (no torch, no I/O), so every layer can read them.
The vocabulary the layers share, :class:`EditCase`, :class:`Probe` and the
metric and protocol names, is declared in :mod:`keditlab.vocabulary` and
re-exported here, where a spec's readers have always found it.

A :class:`Spec` is what a validated YAML file becomes once every default is
filled in.  ``Spec.to_spec_data()`` writes it back in the spec language,
defaults included: that is what a run records as "the resolved spec", and it
validates and resolves to the same ``Spec`` again.
``Spec.to_dict()`` is the plain dataclass view (``case_id``, probes with
``kind``, methods with ``params``), for Python code that mirrors these classes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# The shared vocabulary, declared in the ground module; re-exported so ``keditlab.spec.types.EditCase`` keeps working.
from keditlab.vocabulary import DEFAULT_METRICS, METRIC_NAMES, PROBE_KINDS, PROTOCOLS, TRACE_KINDS, EditCase, Probe  # noqa: F401
from keditlab.vocabulary import GENERAL_TASKS  # noqa: F401  (the offline general-ability tasks, for the spec checks)

#: What the generation protocol puts around a question (``evaluate.context``).
GENERATION_CONTEXTS = ("bare", "qa", "chat")
#: What may end a generated answer before ``evaluate.answer_tokens`` (``evaluate.stop``; EOS always ends it):
#: a sentence end (``.``, ``!`` or ``?`` followed by white space) and a line break.
ANSWER_STOPS = ("sentence", "newline")
#: ``model.chat_template``: whether prompts go through the tokenizer's chat template.
CHAT_TEMPLATE = ("auto", "on", "off")

#: How edits are scheduled (``run.mode``); docs/runs.md describes each.
RUN_MODES = ("single", "batch", "sequential")
#: When a sequential run measures (``run.evaluate_at``), besides ``{every: k}``.
EVALUATE_AT = ("after_each", "after_all")

#: The method a spec gets when it names none.
DEFAULT_METHOD = "rome"


@dataclass(frozen=True)
class MethodSpec:
    """A method to apply, by registered name, with the settings the user gave.

    ``params`` holds only validated keys; the method turns them into its own
    config dataclass (with defaults) when it runs.  ``label`` names the method
    in tables; it defaults to ``name`` and must be unique within a spec.
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name)


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load: ``smollm2-135m`` or ``gemma3-270m`` (embedded), a Hugging Face id or a local path.

    ``profile`` optionally describes an architecture keditlab does not know
    (module paths of the layers, MLP output projection, final norm, LM head).
    """

    name: str = "smollm2-135m"
    dtype: str = "auto"
    profile: dict[str, Any] | None = None
    #: ``on``: every prompt, for editing and for evaluation alike, goes through the
    #: tokenizer's chat template as a user turn; ``off``: prompts are read bare;
    #: ``auto``: on exactly when ``evaluate.context`` is ``chat``.
    chat_template: str = "auto"


@dataclass(frozen=True)
class StatsSpec:
    """Where the key covariance ``C = E[k kᵀ]`` used by ROME comes from.

    ``corpus`` is ``model-samples`` (text sampled from the model itself, works
    offline), a local text file or folder, or a Hugging Face dataset written
    ``hf:<dataset id>[:<config>]``.  ``samples`` is a number of *tokens*, not
    of texts: text is read until at least that many tokens are collected, in
    pieces of at most ``max_length`` tokens.  ``"auto"`` means ten times the
    key width (the MLP's hidden size: 15,360 tokens for the embedded model),
    which measured as enough for ROME's edits (``docs/methods.md``).
    ``unrelated`` names benchmark records read for their locality probes only:
    the unrelated facts the ``preserve`` of UltraEdit, LocFT-BF, FT-M and FT-L holds.
    """

    corpus: str = "model-samples"
    samples: int | str = "auto"
    max_length: int = 64
    #: Benchmark records whose locality probes (unrelated questions and their
    #: answers) the methods with a preservation term hold unchanged, instead of
    #: text sampled from the model (``stats.unrelated``; None: model samples).
    unrelated: "EditsFile | None" = None

    def to_spec_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"corpus": self.corpus, "samples": self.samples, "max_length": self.max_length}
        if self.unrelated is not None:
            data["unrelated"] = self.unrelated.to_spec_data()
        return data


@dataclass(frozen=True)
class JudgeSpec:
    """Who decides whether a generated answer states the expected answer (``evaluate.judge``).

    ``model`` None: the rules (exact match, and answer contained, against the
    answer and its aliases).  ``model`` alone: a local judge model, a name or
    path loaded as the edited model is.  ``model`` with ``url``: the model an
    OpenAI-compatible endpoint serves (``url`` is its base, ending in ``/v1``),
    sent the key held by the environment variable ``api_key_env`` (None: no
    key), each request given ``timeout`` seconds.  :mod:`keditlab.evaluate.judge`
    does the judging; docs/protocols.md describes it.
    """

    model: str | None = None
    url: str | None = None
    api_key_env: str | None = None
    timeout: float = 30.0

    @property
    def kind(self) -> str:
        """``rule``, ``model`` (a local judge model) or ``endpoint`` (an OpenAI-compatible server)."""
        return "rule" if self.model is None else "endpoint" if self.url else "model"

    def to_spec_data(self) -> str | dict[str, Any]:
        """``rule``, or the judge's mapping (``timeout`` only for an endpoint, ``api_key_env`` only when given)."""
        if self.model is None:
            return "rule"
        data: dict[str, Any] = {"model": self.model}
        if self.url:
            data["url"] = self.url
            if self.api_key_env:
                data["api_key_env"] = self.api_key_env
            data["timeout"] = self.timeout
        return data


@dataclass(frozen=True)
class GeneralSpec:
    """General ability (``evaluate.general``): lm-evaluation-harness tasks run on the whole model, before and after the edits.

    ``tasks`` are keditlab's offline tasks (:data:`GENERAL_TASKS`: ``knowns``)
    or names of the harness's own tasks (``hellaswag``: its data is downloaded
    on first use).  ``limit`` is the most examples read per task (None: all,
    ``all`` in the spec language).  ``knowns_file`` is the file the ``knowns``
    task reads, ROME's ``known_1000.json`` format (resolved: a local path, the
    cached published file, or where it will be downloaded; None when the task
    is not asked for).  Which model each score is taken on: docs/protocols.md,
    General ability.
    """

    tasks: tuple[str, ...] = ("knowns",)
    limit: int | None = 100
    knowns_file: str | None = None

    def to_spec_data(self) -> dict[str, Any]:
        """The ``general:`` mapping (``limit: all`` for every example; ``knowns_file`` when the knowns task reads one)."""
        data: dict[str, Any] = {"tasks": list(self.tasks), "limit": "all" if self.limit is None else self.limit}
        if self.knowns_file is not None:
            data["knowns_file"] = self.knowns_file
        return data


@dataclass(frozen=True)
class EvalSpec:
    """What to measure, under which protocols, and with which generation settings.

    ``protocols`` picks the protocols (default: all; each applies where the
    case has what it needs: ``probability`` a ground truth).  ``context``
    frames a prompt for the generation protocol: ``bare`` (as written), ``qa``
    (``Question: ...\nAnswer:``) or ``chat`` (the chat template).
    ``answer_tokens`` bounds a generated answer, and ``stop`` names what ends
    it earlier (:data:`ANSWER_STOPS`: a sentence end, a line break; ``()``:
    only the length and EOS); ``judge`` decides whether an answer states the
    expected one (:class:`JudgeSpec`); ``max_new_tokens`` is the length of the
    fluency generations.  ``general`` asks for the general ability of the
    whole model, before and after the edits (:class:`GeneralSpec`; None: not measured).
    """

    metrics: tuple[str, ...] = DEFAULT_METRICS
    max_new_tokens: int = 24
    batch_size: int = 16
    protocols: tuple[str, ...] = PROTOCOLS
    context: str = "bare"
    answer_tokens: int = 50
    stop: tuple[str, ...] = ANSWER_STOPS
    judge: JudgeSpec = field(default_factory=JudgeSpec)
    #: General ability (:class:`GeneralSpec`), measured only when the spec asks for it.
    general: GeneralSpec | None = None


@dataclass(frozen=True)
class RunSettings:
    """How to run: seed, device, where results go, and the schedule of edits.

    ``mode`` says what each measurement is taken on (docs/runs.md):

    * ``single``: each edit alone on the unedited model, measured, restored;
    * ``batch``: ``batch_size`` edits in one method call on the unedited model,
      measured, restored before the next batch;
    * ``sequential``: batches of ``batch_size`` applied one after another on the
      already edited model, restored only when the method is finished.

    ``evaluate_at`` belongs to sequential runs only: ``"after_each"`` (each batch
    measured right after it is applied; the default there), ``"after_all"``
    (every edit measured once all are applied) or ``{"every": k}`` (all edits so
    far measured after every ``k`` edits, and at the end: a retention curve).
    In the other modes it is ``None``.  ``save_edits`` keeps each method call's
    edits under the run folder (:mod:`keditlab.methods.saved`).  Which combinations are allowed is checked
    by the spec validator and, for Python callers, by the runner
    (:func:`keditlab.spec.rules.run_settings_problems` serves both).
    """

    seed: int = 0
    device: str = "auto"
    out: str | None = None
    mode: str = "single"
    batch_size: int = 1
    evaluate_at: str | dict[str, int] | None = None
    save_edits: bool = False

    def __post_init__(self) -> None:
        # evaluate_at's default depends on the mode: after_each for a sequential run, none elsewhere.
        if self.mode == "sequential" and self.evaluate_at is None:
            object.__setattr__(self, "evaluate_at", "after_each")

    def to_spec_data(self) -> dict[str, Any]:
        """These settings in the spec language (``evaluate_at`` only where it applies: sequential runs; ``save_edits`` when on)."""
        data = asdict(self)
        if data["evaluate_at"] is None:
            del data["evaluate_at"]
        if not data["save_edits"]:
            del data["save_edits"]
        return data


@dataclass(frozen=True)
class EditsFile:
    """Where a spec's edits were read from: ``edits: {dataset: NAME, path: FILE, ...}``.

    ``path`` is the benchmark file as resolved (absolute: a relative path in a
    spec is read from the spec file's folder; a downloaded file is in the
    cache); ``format`` names the dataset (``keditlab.data.DATASETS``); the
    edits are the file's records ``offset .. offset + limit`` (``limit`` None:
    to the end of the file), or ``sample`` (``{n, seed}``) of that window drawn
    at random.  ``on_bad_record``: ``stop`` (a malformed record is an error) or
    ``skip`` (it is left out; ``skipped`` names each one).  The older spelling
    ``{records: FILE, format: NAME}`` reads the same way.
    """

    path: str
    format: str
    limit: int | None = None
    offset: int = 0
    sample: dict[str, int] | None = None
    on_bad_record: str = "stop"
    skipped: tuple[str, ...] = ()
    part: str | None = None

    def to_spec_data(self) -> dict[str, Any]:
        """The ``edits:`` mapping in the spec language (``limit``, ``sample`` only when given: they have no null form)."""
        data: dict[str, Any] = {"dataset": self.format, "path": self.path}
        if self.limit is not None:
            data["limit"] = self.limit
        data["offset"] = self.offset
        if self.sample is not None:
            data["sample"] = dict(self.sample)
        data["on_bad_record"] = self.on_bad_record
        if self.part is not None:
            data["part"] = self.part
        return data

    def describe(self, count: int) -> str:
        """The window read, for a results title: ``records 200-299 of zsre_mend_train-1k.json, read as zsre``."""
        name = self.path.replace("\\", "/").rsplit("/", 1)[-1]
        if self.sample is not None:
            window = f"{count} records sampled (seed {self.sample.get('seed', 0)}) from record {self.offset} on"
        else:
            window = f"record {self.offset}" if count == 1 else f"records {self.offset}-{self.offset + count - 1}"
        skipped = f", {len(self.skipped)} malformed skipped" if self.skipped else ""
        return f"{window} of {name}, read as {self.format}{skipped}"


@dataclass(frozen=True)
class TracePrompt:
    """One fact to trace on its own, drawn as a full (token x layer) heatmap per kind."""

    prompt: str
    subject: str
    answer: str | None = None


@dataclass(frozen=True)
class TraceSpec:
    """The ``trace:`` section: causal tracing (Meng et al., 2022), run by ``keditlab trace SPEC``.

    ``prompts`` are traced one by one (heatmaps); ``records`` names a file in
    ROME's ``known_1000.json`` format whose facts (``offset`` on, at most
    ``limit`` traced; with ``known_only`` only those the model predicts) are
    averaged per layer at the subject's last token and the last token.
    ``noise`` is a standard deviation or ``"auto"`` (three times that of the
    subjects' token embeddings).  docs/tracing.md explains every setting.
    """

    prompts: tuple[TracePrompt, ...] = ()
    records: str | None = None
    limit: int | None = 100
    offset: int = 0
    known_only: bool = True
    kinds: tuple[str, ...] = TRACE_KINDS
    samples: int = 10
    noise: float | str = "auto"
    window: int = 10

    def to_spec_data(self) -> dict[str, Any]:
        data = asdict(self)
        data["prompts"] = [{k: v for k, v in p.items() if v is not None} for p in data["prompts"]]
        data["kinds"] = list(self.kinds)
        for key in ("records", "limit"):
            if data[key] is None:
                del data[key]
        return data


@dataclass(frozen=True)
class TrainSpec:
    """The ``train:`` section: train an editor that must be trained before it edits (MEND), run by ``keditlab train SPEC``.

    ``editor`` is a registered method that has a training (``keditlab
    methods`` marks them); ``records`` are the training records and
    ``validation`` the records its progress is measured on (read like
    ``edits:``, resolved to their cases); ``params`` are the editor's training
    settings as the spec gave them (its training config fills in the rest);
    ``archive`` is where the trained archive is written besides the cache
    (None: the cache only).  ``exclude_from`` names records the editor must
    never see (those it will be evaluated on, ``exclude_count`` records):
    every training or validation record about one of their subjects, or with
    one of their prompts, was left out: ``excluded`` counts them (training,
    validation).  docs/training.md explains every setting.
    """

    editor: str
    records: tuple[EditCase, ...]
    records_from: "EditsFile"
    validation: tuple[EditCase, ...] = ()
    validation_from: "EditsFile | None" = None
    params: dict[str, Any] = field(default_factory=dict)
    archive: str | None = None
    exclude_from: "EditsFile | None" = None
    exclude_count: int = 0
    excluded: tuple[int, int] = (0, 0)

    def to_spec_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"editor": self.editor, "records": self.records_from.to_spec_data(), **_plain(self.params)}
        if self.validation_from is not None:
            data["validation"] = self.validation_from.to_spec_data()
        if self.exclude_from is not None:
            data["exclude"] = self.exclude_from.to_spec_data()
        if self.archive is not None:
            data["archive"] = self.archive
        return data


@dataclass(frozen=True)
class Spec:
    """A whole, validated, resolved spec.

    ``edits`` are always the edit cases themselves.  ``edits_from`` says where
    they were read from when the spec named a benchmark file instead of
    listing them (None for inline edits); a copy of a spec with other
    ``edits`` should set it to None (``dataclasses.replace(spec, edits=...,
    edits_from=None)``), or its records will name the file.
    """

    name: str
    model: ModelSpec
    methods: tuple[MethodSpec, ...]
    edits: tuple[EditCase, ...]
    evaluate: EvalSpec = field(default_factory=EvalSpec)
    stats: StatsSpec = field(default_factory=StatsSpec)
    run: RunSettings = field(default_factory=RunSettings)
    version: int = 1
    source: str | None = None
    edits_from: EditsFile | None = None
    trace: TraceSpec | None = None
    train: TrainSpec | None = None

    def to_dict(self) -> dict[str, Any]:
        """The dataclasses as plain JSON-ready data (field names, not spec keys; see :meth:`to_spec_data`)."""
        data = asdict(self)
        data["keditlab"] = data.pop("version")
        return data

    def to_spec_data(self) -> dict[str, Any]:
        """This spec in the spec language, every default written out; JSON- and YAML-ready.

        Saved as YAML it is a valid spec that resolves to this same ``Spec``
        (except ``source``, which is where a spec was read from, not part of it).
        Sections are always written in their mapping form: ``model: {name,
        dtype}``, ``method: [{name, label, ...settings}]``, ``evaluate:
        {metrics, ...}``; edits carry their ``id`` and probes are ``{prompt,
        answer}``, or, when they were read from a benchmark file, ``edits`` is
        that file's mapping (``records`` as an absolute path).  Method settings are the ones the spec gave: each method
        fills in its own defaults when it runs (a run's manifest records those
        under ``methods``).
        """
        model: dict[str, Any] = {"name": self.model.name, "dtype": self.model.dtype, "chat_template": self.model.chat_template}
        if self.model.profile is not None:
            model["profile"] = dict(self.model.profile)
        data = {
            "keditlab": self.version,
            "name": self.name,
            "model": model,
            "method": [{"name": m.name, "label": m.label, **_plain(m.params)} for m in self.methods],
            "edits": self.edits_from.to_spec_data() if self.edits_from else [_edit_data(edit) for edit in self.edits],
            "evaluate": {
                "metrics": list(self.evaluate.metrics),
                "max_new_tokens": self.evaluate.max_new_tokens,
                "batch_size": self.evaluate.batch_size,
                "protocols": list(self.evaluate.protocols),
                "context": self.evaluate.context,
                "answer_tokens": self.evaluate.answer_tokens,
                **_answer_judging(self.evaluate),
                **({"general": self.evaluate.general.to_spec_data()} if self.evaluate.general is not None else {}),
            },
            "stats": self.stats.to_spec_data(),
            "run": self.run.to_spec_data(),
        }
        if self.trace is not None:
            data["trace"] = self.trace.to_spec_data()
        if self.train is not None:
            data["train"] = self.train.to_spec_data()
        if (self.trace is not None or self.train is not None) and not self.edits and self.edits_from is None:
            del data["edits"]  # a spec that only traces or trains
        return data

    def edits_origin(self) -> dict[str, Any]:
        """Where the edits came from and how many there are, for run records.

        ``{"from": "spec", "count": n}`` for edits written in the spec, else
        ``{"from": "records", "records": path, "format": ..., "limit": ...,
        "offset": ..., "count": n}``.
        """
        if self.edits_from is None:
            return {"from": "spec", "count": len(self.edits)}
        source = self.edits_from
        return {"from": "records", "records": source.path, "format": source.format, "limit": source.limit,
                "offset": source.offset, "sample": source.sample, "on_bad_record": source.on_bad_record,
                "skipped": list(source.skipped), "count": len(self.edits),
                **({"part": source.part} if source.part else {})}


def _answer_judging(evaluate: EvalSpec) -> dict[str, Any]:
    """``evaluate.stop`` and ``evaluate.judge`` in the spec language, each only when it is not the default
    (as ``run.save_edits``: a spec written before they existed reads back unchanged)."""
    data: dict[str, Any] = {}
    if tuple(evaluate.stop) != ANSWER_STOPS:
        data["stop"] = list(evaluate.stop)
    if evaluate.judge.kind != "rule":
        data["judge"] = evaluate.judge.to_spec_data()
    return data


def _plain(value: Any) -> Any:
    """A copy with tuples as lists, as YAML and JSON write them."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _edit_data(edit: EditCase) -> dict[str, Any]:
    """One edit in the spec language (``ground_truth`` only when there is one: it has no null form)."""
    data: dict[str, Any] = {"id": edit.case_id, "prompt": edit.prompt, "subject": edit.subject, "target": edit.target}
    if edit.ground_truth is not None:
        data["ground_truth"] = edit.ground_truth
    data["rephrase"] = list(edit.rephrase)
    data["locality"] = [{"prompt": p.prompt, "answer": p.answer} for p in edit.locality]
    data["portability"] = [{"prompt": p.prompt, "answer": p.answer} for p in edit.portability]
    return data
